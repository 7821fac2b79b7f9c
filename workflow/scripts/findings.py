"""Rule findings: findings 1 (abstraction) and 2 (traits), figures and tables, from every concept table."""

from vitsae import features, runtime

runtime.run(snakemake, lambda: features.write_findings(
    list(snakemake.input.tables), list(snakemake.input.nulls), list(snakemake.params.formats),
    dict(snakemake.output.items()), snakemake.params.note, snakemake.params.n_boot, snakemake.config["seed"],
), "findings")
