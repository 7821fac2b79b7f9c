"""Rule spec_curve: the difference between models over every cell of the labelling-threshold grid."""

from vitsae import runtime
from vitsae.analysis import claims
from vitsae.analysis.settings import claim_settings

p, i = snakemake.params, snakemake.input
runtime.run(snakemake, lambda: claims.write_spec_curve(
    list(i.tables), list(i.nulls), list(i.evals), list(i.cfgs), list(i.clusters), dict(p.formats),
    claim_settings(dict(p.claims)), dict(p.rules), snakemake.output.csv, snakemake.output.pdf, p.title, p.note,
    p.seed,
))  # fmt: skip
