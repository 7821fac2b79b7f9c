"""Rule ro_crate: the run as a Workflow Run RO-Crate (vitsae.provenance.crate)."""

from pathlib import Path

import snakemake as _snakemake_pkg

from vitsae import runtime
from vitsae.provenance.crate import write_crate

runtime.run(snakemake, lambda: write_crate(
    snakemake.output[0], finals=list(snakemake.input.finals), artifacts=list(snakemake.input.artifacts),
    copies=[*snakemake.input.finals, *snakemake.input.pages], config=dict(snakemake.config),
    workflow_dir=Path(snakemake.scriptdir).resolve().parent.parent,  # scriptdir is workflow/scripts
    snakemake_version=_snakemake_pkg.__version__,
))  # fmt: skip
