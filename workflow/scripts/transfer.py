"""Rule transfer: the transfer table and figure from every evaluation result."""

from vitsae import runtime
from vitsae.analysis.transfer import write_transfer

runtime.run(snakemake, lambda: write_transfer(
    list(snakemake.input), snakemake.output.csv, snakemake.output.pdf, snakemake.params.title,
    note=snakemake.params.note,
))  # fmt: skip
