"""Rule concepts_<sweep>: the concept table (ImageNet: WordNet; iNat: taxonomy) of a sweep's selected SAEs,
and the same labelling of random image sets (the null table)."""

from pathlib import Path

from vitsae import features, runtime

w = snakemake.wildcards
kind = features.TABLE_KIND[snakemake.params.format]
rules = features.rules_from_config(kind, snakemake.params.rules, snakemake.config["seed"])
runtime.run(snakemake, lambda: features.sweep_concept_tables(
    list(snakemake.input.stats), [Path(p).name for p in snakemake.input.stats], snakemake.params.format,
    snakemake.input.manifest, snakemake.input.get("thumbnails"), rules, snakemake.output.table,
    snakemake.output.null, {"dataset": w.dataset, "model": w.model, "layer": int(w.layer),
                            "sweep": snakemake.params.sweep}, seed=snakemake.config["seed"],
), "concepts")
