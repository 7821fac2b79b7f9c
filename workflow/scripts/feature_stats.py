"""Rule feature_stats_<sweep>: statistics of every selected SAE of one sweep on its own dataset's split."""

from pathlib import Path

from vitsae import runtime
from vitsae.analysis.stats import sweep_feature_stats

runtime.run(snakemake, lambda: sweep_feature_stats(
    [Path(p).parent for p in snakemake.input.sae], snakemake.input.store, snakemake.params.split,
    snakemake.input.manifest, list(snakemake.output), k=snakemake.params.top_k,
    batch_tokens=snakemake.params.batch_tokens,
))  # fmt: skip
