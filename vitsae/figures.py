"""The paper's figures by name, with their titles: one place for the plotting code, the lineage
pages and the report to take them from (kept import-light: the Snakefile reads it at parse time)."""

FIGURES: dict[str, str] = {
    "transfer": "SAE transfer: reconstruction across datasets",
}
