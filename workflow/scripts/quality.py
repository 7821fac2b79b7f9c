"""Rule quality: every SAE of a sweep checked on a sample of its own training data (stability across seeds,
dead and dense features, training convergence)."""

from pathlib import Path

from vitsae import runtime
from vitsae.analysis.quality import write_quality
from vitsae.analysis.settings import QualitySettings

i, p = snakemake.input, snakemake.params
stores = {(d, m, int(layer)): path for (d, m, layer), path in zip(p.store_keys, i.stores, strict=True)}
runtime.run(snakemake, lambda: write_quality(
    [Path(path).parent for path in i.saes], stores, snakemake.output.csv, snakemake.output.pdf,
    QualitySettings(**p.settings), p.dense_threshold, p.title, note=p.note,
    device=runtime.device(snakemake.config["device"]),
))  # fmt: skip
