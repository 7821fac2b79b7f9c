"""Rule transfer: the transfer table and figure from every evaluation result."""

from vitsae import runtime, transfer

runtime.setup(snakemake.log[0])
runtime.log_exceptions(lambda: transfer.write_transfer(
    list(snakemake.input), snakemake.output.csv, snakemake.output.pdf, note=snakemake.params.note,
))
