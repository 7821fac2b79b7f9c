"""Rule claims: one row per declared comparison (findings 1 and 2) and per transfer (finding 3), with its
verdict; the claims figure."""

from vitsae import runtime
from vitsae.analysis import claims
from vitsae.analysis.settings import claim_settings

p, i = snakemake.params, snakemake.input
runtime.run(snakemake, lambda: claims.write_claims(
    list(i.tables), list(i.nulls), list(i.evals), list(i.cfgs), list(i.clusters), i.spec,
    claim_settings({**dict(p.claims), "spec_grid": []}), snakemake.output.csv, snakemake.output.pdf, p.title,
    p.note, p.seed, list(i.quality),
    transfer={"table": i.transfer, "matched": i.transfer_matched, "downstream": i.transfer_downstream,
              **dict(p.transfer)},
    ratings=i.ratings,
))  # fmt: skip
