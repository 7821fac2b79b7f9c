"""Rule thumbnails: a model-free visual descriptor (4x4 RGB thumbnail) of every image of one split."""

from vitsae import runtime
from vitsae.analysis.thumbnails import thumbnails

runtime.run(snakemake, lambda: thumbnails(
    snakemake.input.manifest, snakemake.params.root, snakemake.wildcards.split, snakemake.output[0],
    size=snakemake.params.size,
))  # fmt: skip
