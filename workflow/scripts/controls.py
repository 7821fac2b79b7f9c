"""Rule controls: each concept label's share against its null, for the observed, shuffled-labels and
permuted-dims tables."""

from vitsae import runtime
from vitsae.analysis import claims

p, i = snakemake.params, snakemake.input
runtime.run(snakemake, lambda: claims.write_controls(
    list(i.tables), list(i.nulls), list(i.shuffled), list(i.shuffled_nulls), p.null_sweep, p.alpha,
    snakemake.output[0],
))  # fmt: skip
