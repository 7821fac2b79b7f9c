"""Rule ro_crate: the run as a Workflow Run and Provenance Run RO-Crate rooted at results/
(vitsae.provenance.crate)."""

from pathlib import Path

import snakemake as _snakemake_pkg

from vitsae import runtime
from vitsae.provenance.crate import write_crate

runtime.run(snakemake, lambda: write_crate(
    snakemake.output.copies, metadata=snakemake.output.metadata, finals=list(snakemake.input.finals),
    artifacts=[*snakemake.input.artifacts, *snakemake.input.pages], config=dict(snakemake.config),
    workflow_dir=Path(snakemake.scriptdir).resolve().parent.parent,  # scriptdir is workflow/scripts
    rule_sources=snakemake.params.rule_sources, snakemake_version=_snakemake_pkg.__version__,
))  # fmt: skip
