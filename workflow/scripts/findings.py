"""Rule findings: findings 1 (abstraction) and 2 (traits), figures and tables, from every concept table."""

from vitsae import runtime
from vitsae.analysis import findings

p = snakemake.params
runtime.run(snakemake, lambda: findings.write_all(
    list(snakemake.input.tables), list(snakemake.input.nulls), list(snakemake.input.evals),
    list(snakemake.input.cfgs), list(p.formats), dict(snakemake.output.items()), dict(p.titles), p.note, p.n_boot,
    p.seed,
))  # fmt: skip
