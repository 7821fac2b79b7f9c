"""Rule transfer_labels: do SAE features fire on the other dataset and keep their label there? Table, figure."""

from vitsae import runtime
from vitsae.analysis import transfer_labels

p = snakemake.params
runtime.run(snakemake, lambda: transfer_labels.write_all(
    list(snakemake.input.source), list(snakemake.input.target), list(p.targets), dict(p.formats),
    [tuple(pair) for pair in p.label_map], snakemake.output.pdf, snakemake.output.csv, p.title, p.note,
    n_null=p.n_null, n_boot=p.n_boot, seed=p.seed,
))  # fmt: skip
