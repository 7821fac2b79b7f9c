"""Rule browser: the static feature browser and its blinded rating page (vitsae.analysis.browser)."""

from pathlib import Path

from vitsae import runtime
from vitsae.analysis import browser
from vitsae.analysis.settings import BrowserSettings

i, p = snakemake.input, snakemake.params
saes = [
    browser.ShownSAE(stats, table, ev, str(Path(cfg).parent), store, cards or None)
    for stats, table, ev, cfg, store, cards in zip(i.stats, i.tables, i.evals, i.cfgs, i.stores, p.cards)
]
datasets = [browser.Dataset(name, manifest, p.datasets[name]["root"], p.datasets[name]["format"])
            for name, manifest in zip(sorted(p.datasets), i.manifests)]  # fmt: skip
runtime.run(snakemake, lambda: browser.build_site(
    saes, datasets, i.sample, list(i.catch), p.categories, BrowserSettings.from_params(p.settings),
    snakemake.output[0], title=p.title, note=p.note,
))  # fmt: skip
