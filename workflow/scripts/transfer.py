"""Rule transfer: the transfer table and figure from every evaluation result."""

from vitsae import runtime, transfer

runtime.run(snakemake, lambda: transfer.write_transfer(
    list(snakemake.input), snakemake.output.csv, snakemake.output.pdf, note=snakemake.params.note,
), "transfer")
