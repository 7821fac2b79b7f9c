"""Rule training_curves: every SAE of a sweep, its training log drawn against tokens."""

from vitsae import runtime, sweepfigs

runtime.run(snakemake, lambda: sweepfigs.write_training(
    list(snakemake.input), snakemake.output[0], snakemake.params.title, note=snakemake.params.note,
), "sweep_figures")
