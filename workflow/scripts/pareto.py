"""Rule pareto: FVU against L0 of every SAE of a sweep on its own dataset's held-out split."""

from vitsae import runtime
from vitsae.analysis.sweep_figures import write_pareto

runtime.run(snakemake, lambda: write_pareto(
    list(snakemake.input), snakemake.output.csv, snakemake.output.pdf, snakemake.params.title,
    note=snakemake.params.note,
))  # fmt: skip
