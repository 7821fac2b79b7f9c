"""Rule concepts_<sweep>: the concept table (ImageNet: WordNet; iNat: taxonomy) of a sweep's selected SAEs,
and the same labelling of random image sets (the null table); rule concepts_shuffled_<sweep> runs it with
the manifest's labels permuted (the shuffled-labels control)."""

from vitsae import runtime
from vitsae.analysis.concept_tables import sweep_concept_tables
from vitsae.analysis.settings import RULES, TABLE_KIND

p = snakemake.params
rules = RULES[TABLE_KIND[p.format]](**p.rules)
runtime.run(snakemake, lambda: sweep_concept_tables(
    list(snakemake.input.stats), p.format, snakemake.input.manifest, snakemake.input.get("thumbnails"), rules,
    snakemake.output.table, snakemake.output.null, seed=p.seed, shuffle_seed=p.get("shuffle_seed"),
    multilabels=p.get("multilabels") or None,
))  # fmt: skip
