"""Rule transfer_features: decoder directions matched across datasets, against the seed ceiling and random
floors (isotropic, and shaped by the stores' activation covariance)."""

from vitsae import runtime
from vitsae.analysis import decoders

p = snakemake.params
runtime.run(snakemake, lambda: decoders.write_all(
    list(snakemake.input.sae), list(snakemake.input.stats), list(snakemake.input.stores), snakemake.output.pdf,
    snakemake.output.csv, p.title, p.note, p.seed, p.floor_draws,
))  # fmt: skip
