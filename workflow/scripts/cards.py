"""Rule cards_<sweep>: feature cards of the strongest features of each label, for each SAE of the sweep."""

from pathlib import Path

from vitsae import features, runtime

w = snakemake.wildcards
runtime.run(snakemake, lambda: features.write_sweep_cards(
    list(snakemake.input.stats), [Path(p).name for p in snakemake.input.stats], snakemake.input.table,
    snakemake.input.manifest, snakemake.params.root, snakemake.input.store, snakemake.output[0],
    f"{w.model}/layer{w.layer}/{snakemake.params.sweep}", snakemake.params.per_label, snakemake.params.n_images,
), "cards")
