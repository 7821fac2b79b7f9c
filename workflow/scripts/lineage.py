"""Rule lineage: a figure's upstream graph as a self-contained HTML page and as JSON."""

from vitsae import runtime
from vitsae.provenance.page import write_lineage

runtime.run(snakemake, lambda: write_lineage(
    snakemake.input[0], snakemake.output.html, snakemake.output.json, title=snakemake.params.title,
))  # fmt: skip
