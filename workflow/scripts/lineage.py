"""Rule lineage: a figure's upstream graph as a self-contained HTML page and as JSON."""

from vitsae import provenance, runtime

runtime.run(snakemake, lambda: provenance.write_lineage(
    snakemake.input[0], snakemake.output.html, snakemake.output.json, title=snakemake.params.title,
), "lineage")
