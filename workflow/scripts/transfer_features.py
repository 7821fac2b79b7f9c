"""Rule transfer_features: decoder directions matched across datasets, against seed ceiling and random floor."""

from vitsae import features, runtime

runtime.run(snakemake, lambda: features.write_transfer_features(
    list(snakemake.input.sae), list(snakemake.input.stats), snakemake.output.pdf, snakemake.output.csv,
    snakemake.params.note, snakemake.config["seed"],
), "transfer_features")
