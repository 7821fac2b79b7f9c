"""Settings of the analysis stage as frozen dataclasses: the label rules of the concept tables.

Import-light (no NumPy): :mod:`vitsae.config` builds them from the validated YAML (``concepts.imagenet``,
``concepts.inat``) when Snakemake parses the workflow; :mod:`vitsae.analysis.concepts` documents each rule.
They hold values only; the config schema has checked them, once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class LabelRules:
    """The thresholds both tables share: how many top images count, the null model, the abstract label's
    major classes, and how localized a trait is."""

    n_top: int | None = None  # use the first n_top of the stored top-k (None: all)
    min_top_images: int = 5
    alpha: float = 0.01
    null_samples: int = 1000
    seed: int = 0
    abstract_min_class_share: float = 0.15
    abstract_min_coverage: float = 0.75
    trait_max_localization: float = 0.25

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ImageNetRules(LabelRules):
    """The ImageNet table's own thresholds (WordNet)."""

    single_class_share: float = 0.7
    lca_coverage: float = 0.9
    taxonomic_min_depth: int = 7
    abstract_min_branches: int = 2
    min_diversity_ratio: float = 0.75
    branch_depth: int = 6  # WordNet depth of the nodes that define top-level branches
    trait_min_classes: int = 2


@dataclass(frozen=True)
class INatRules(LabelRules):
    """The iNat table's own thresholds (taxonomy ranks)."""

    single_species_share: float = 0.7
    clade_purity: float = 0.9
    trait_max_rank: str = "order"
    trait_min_species: int = 2
    abstract_rank: str = "order"
    abstract_min_clades: int = 2


#: The rules of each concept table kind, and which table a dataset format gets.
RULES = {"imagenet": ImageNetRules, "inat": INatRules}
TABLE_KIND = {"imagenet": "imagenet", "inat2021": "inat"}
