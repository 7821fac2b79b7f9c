"""Rule cards_<sweep>: feature cards of the strongest features of each label, for each SAE of the sweep."""

from vitsae import runtime
from vitsae.analysis.cards import write_sweep_cards

runtime.run(snakemake, lambda: write_sweep_cards(
    list(snakemake.input.stats), snakemake.input.table, snakemake.input.manifest, snakemake.params.root,
    snakemake.input.store, snakemake.output[0], snakemake.params.per_label, snakemake.params.n_images,
))  # fmt: skip
