"""Rule transfer: every evaluation placed on its target's in-domain frontier, the matched-L0 summary with
the baselines and downstream accuracies, and the transfer figure."""

from vitsae import runtime
from vitsae.analysis.transfer import write_transfer

p, i, o = snakemake.params, snakemake.input, snakemake.output
runtime.run(snakemake, lambda: write_transfer(
    list(i.evals), list(i.baselines), list(i.downstream), o.csv, o.matched, o.downstream, o.pdf, p.title,
    note=p.note, max_extrapolation=p.max_extrapolation, margin=p.margin,
))  # fmt: skip
