"""Rule transfer_features: decoder directions matched across datasets, against seed ceiling and random floor."""

from vitsae import runtime
from vitsae.analysis import decoders

p = snakemake.params
runtime.run(snakemake, lambda: decoders.write_all(
    list(snakemake.input.sae), list(snakemake.input.stats), snakemake.output.pdf, snakemake.output.csv,
    p.title, p.note, p.seed,
))  # fmt: skip
