"""Rule clusters_<sweep>: feature clusters ("concepts") of every selected SAE of one sweep, from its decoder
rows and its top images (vitsae.analysis.clusters)."""

from pathlib import Path

from vitsae import runtime
from vitsae.analysis.clusters import sweep_clusters

p = snakemake.params
runtime.run(snakemake, lambda: sweep_clusters(
    [Path(x).parent for x in snakemake.input.sae], list(snakemake.input.stats), snakemake.output[0],
    cosine=p.decoder_cosine, jaccard=p.top_image_jaccard,
))  # fmt: skip
