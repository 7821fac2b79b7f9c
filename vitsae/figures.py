"""The paper's figures by name, with their titles: one place for the plotting code, the lineage
pages and the report to take them from (kept import-light: the Snakefile reads it at parse time)."""

FIGURES: dict[str, str] = {
    "transfer": "SAE transfer: reconstruction across datasets",
    "semantic_abstraction": "Finding 1: abstract semantic features (share of live SAE features)",
    "traits": "Finding 2: morphological-trait features among animal features",
    "transfer_features": "SAE transfer at the feature level: decoder directions across datasets",
}
#: Figures drawn once per sweep: ``{kind}-{sweep}`` → title with the sweep's name.
PER_SWEEP: dict[str, str] = {
    "training": "SAE training curves: sweep {sweep}",
    "pareto": "Sparsity against reconstruction: sweep {sweep}",
}


def figure_titles(sweeps: list[str]) -> dict[str, str]:
    """Every figure of a run with these sweeps: name → title."""
    titles = dict(FIGURES)
    for sweep in sweeps:
        for kind, title in PER_SWEEP.items():
            titles[f"{kind}-{sweep}"] = title.format(sweep=sweep)
    return titles
