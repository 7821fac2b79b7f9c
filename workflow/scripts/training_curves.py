"""Rule training_curves: every SAE of a sweep, its training log drawn against tokens."""

from vitsae import runtime
from vitsae.analysis.sweep_figures import write_training

runtime.run(snakemake, lambda: write_training(
    list(snakemake.input.logs), snakemake.output[0], snakemake.params.title, note=snakemake.params.note,
))  # fmt: skip
