"""Rule pareto: FVU against L0 of every SAE of a sweep on its own dataset's held-out split, and of its
transfer SAEs on the other datasets with their gap to the frontier."""

from vitsae import runtime
from vitsae.analysis.sweep_figures import write_pareto

runtime.run(snakemake, lambda: write_pareto(
    list(snakemake.input), snakemake.output.csv, snakemake.output.pdf, snakemake.params.title,
    note=snakemake.params.note, max_extrapolation=snakemake.params.max_extrapolation,
))  # fmt: skip
