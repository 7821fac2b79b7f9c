"""Rule pareto: FVU against L0 of every SAE of a sweep on its own dataset's held-out split."""

from vitsae import runtime, sweepfigs

runtime.run(snakemake, lambda: sweepfigs.write_pareto(
    list(snakemake.input), snakemake.output.csv, snakemake.output.pdf, snakemake.params.title,
    note=snakemake.params.note,
), "sweep_figures")
