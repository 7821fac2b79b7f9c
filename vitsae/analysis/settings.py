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
    # a trait's firing region is one compact place: spread (maps.footprint) at most this. 0.5 admits one
    # disc of the largest area trait_max_localization allows (spread sqrt(3 * 0.25 / pi) = 0.49)
    trait_max_spread: float = 0.5
    # ... and the feature is silent on most of the image: support (share above 0) at most this. 0.5: twice
    # the largest part trait_max_localization allows; a texture's feature is active wherever it lies
    trait_max_support: float = 0.5
    # ... and stands out from its image: part_contrast (regions.part_contrast) at least this. 1: the region
    # differs from the rest of its image more than two places of the image differ on average
    trait_min_contrast: float = 1.0
    # ... and its look does not recur elsewhere in its image: part_uniqueness (regions.part_uniqueness) at
    # least this. 1: the region's nearest far look-alikes are as far from it as two random cells of the
    # image (a texture spot's look-alikes are nearer, a part's background about twice as far)
    trait_min_uniqueness: float = 1.0
    localization_pixels: int = (
        112  # the common grid of localization, cells per side (0: the model's token grid)
    )
    high_norm_multiple: float = 0.0  # a trait's peak tokens' median norm ratio at most this (0: no test)

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
    min_region_diversity_ratio: float = 0.75  # abstract, not visual-motif: firing regions this diverse
    cooccurrence_min_rate: float = 0.1  # co-occurrence, not abstract: two major classes this often together
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


# ---------------------------------------------------------------------------------------------
# How the claims are tested (vitsae.analysis.claims)

#: The statistic each claim is about, and the concept tables it reads.
CLAIM_STATISTICS = {1: "share_abstract", 2: "share_trait_among_animal"}
CLAIM_FORMATS = {1: ("imagenet",), 2: ("imagenet", "inat2021")}


@dataclass(frozen=True)
class Arm:
    """One side of a comparison: a model's SAEs of one sweep."""

    model: str
    sweep: str

    @property
    def name(self) -> str:
        return f"{self.model}@{self.sweep}"


@dataclass(frozen=True)
class ComparisonSpec:
    """One declared comparison (one row of the claims table): the claim says ``favoured`` is higher."""

    name: str
    claim: int
    role: str  # primary, secondary or control
    dataset: str
    layer: int
    favoured: Arm
    other: Arm

    @property
    def statistic(self) -> str:
        return CLAIM_STATISTICS[self.claim]


@dataclass(frozen=True)
class ClaimSettings:
    """The config's ``claims`` section, typed (the schema documents each key)."""

    comparisons: tuple[ComparisonSpec, ...] = ()
    primary_l0: float | str = "midpoint"
    n_boot: int = 1000
    spec_n_boot: int = 200
    n_perm: int = 10000
    curve_points: int = 12
    null_sweep: str | None = None
    decoder_cosine: float = 0.9
    top_image_jaccard: float = 0.5
    alpha: float = 0.05
    min_seeds: int = 2
    min_spec_agreement: float = 0.8
    spec_grid: tuple[
        tuple[str, tuple[tuple[str, tuple], ...]], ...
    ] = ()  # ((kind, ((key, values), ...)), ...)
    # Baseline models (random weights, supervised, MAE, ...): each primary and secondary row must beat the
    # largest Δ of a baseline in the favoured model's place (vitsae.analysis.claims, "Baseline models").
    baselines: tuple[str, ...] = ()

    @property
    def control_sweeps(self) -> frozenset[str]:
        """Sweeps that exist only for a control: the null sweep, and sweeps only control rows compare.
        The findings figures and the feature cards leave them out."""
        used = {a.sweep for c in self.comparisons if c.role != "control" for a in (c.favoured, c.other)}
        control = {a.sweep for c in self.comparisons if c.role == "control" for a in (c.favoured, c.other)}
        return frozenset((control - used) | ({self.null_sweep} if self.null_sweep else set()))

    @property
    def sweeps(self) -> tuple[str, ...]:
        """The sweeps the comparisons read, in order of first mention."""
        return tuple(dict.fromkeys(a.sweep for c in self.comparisons for a in (c.favoured, c.other)))

    def grid(self, kind: str) -> dict[str, list]:
        """The specification-curve grid of one table kind: threshold → values."""
        return {k: list(v) for k, v in dict(self.spec_grid).get(kind, ())}


# ---------------------------------------------------------------------------------------------
# Quality checks on every trained SAE (vitsae.analysis.quality)


@dataclass(frozen=True)
class QualitySettings:
    """The config's ``quality`` section, typed (the schema documents each key): the sample each SAE is
    checked on, how stability and convergence are measured, and the thresholds of the checks."""

    sample_tokens: int = 32768
    stability_cosine: float = 0.7
    tail: float = 0.25
    max_dead: float = 0.5
    max_dense: float = 0.1
    min_stability: float = 0.5
    max_final_drop: float = 0.05


@dataclass(frozen=True)
class TransferSettings:
    """The config's ``transfer`` section, typed (the schema documents each key): how finding 3 is judged.

    ``max_extrapolation``: how far (in log2 L0) outside the target's in-domain frontier a transferred SAE
    may be placed; ``gap_margin`` and ``min_accuracy_recovered``: finding 3's criterion; ``probe`` ...
    ``min_accuracy_span``: the downstream probe; ``label_map``: which label of one dataset's concept table is
    the same kind of concept on the other's (applied in both directions); ``floor_draws``: random directions
    per floor of the decoder matching; ``n_null``: draws of the label-survival null."""

    max_extrapolation: float = 1.0
    gap_margin: float = 0.02
    min_accuracy_recovered: float = 0.8
    probe: str = "ridge"
    ridge: float = 1.0
    probe_max_images: int = 20000
    min_accuracy_span: float = 0.05
    label_map: tuple[tuple[str, str], ...] = (
        ("single-class", "single-species"), ("taxonomic", "clade"), ("abstract", "cross-clade"),
    )  # fmt: skip
    floor_draws: int = 4096
    n_null: int = 1000
    baseline_tokens: int = 1000000


#: The label thresholds a specification curve may vary: those the saved concept tables can be relabelled
#: with (vitsae.analysis.relabel). The others (n_top, min_top_images, lca_coverage, null_samples, seed,
#: abstract_rank, ...) change the tables' own columns and would need the top images again.
SPEC_KEYS = {
    "imagenet": ("single_class_share", "alpha", "taxonomic_min_depth", "abstract_min_class_share",
                 "abstract_min_coverage", "abstract_min_branches", "min_diversity_ratio", "min_region_diversity_ratio", "cooccurrence_min_rate", "branch_depth",
                 "trait_min_classes", "trait_max_localization", "trait_max_spread", "trait_max_support", "trait_min_contrast", "trait_min_uniqueness", "high_norm_multiple"),
    "inat": ("single_species_share", "clade_purity", "trait_max_rank", "trait_min_species",
             "trait_max_localization", "trait_max_spread", "trait_max_support", "trait_min_contrast", "trait_min_uniqueness", "high_norm_multiple", "alpha", "abstract_min_coverage"),
}  # fmt: skip


def claim_settings(params: dict) -> ClaimSettings:
    """A :class:`ClaimSettings` back from its rule params (``vitsae.config.as_params`` of one)."""
    comparisons = tuple(
        ComparisonSpec(
            c["name"],
            int(c["claim"]),
            c["role"],
            c["dataset"],
            int(c["layer"]),
            Arm(**c["favoured"]),
            Arm(**c["other"]),
        )
        for c in params["comparisons"]
    )
    grid = tuple((kind, tuple((k, tuple(v)) for k, v in g)) for kind, g in params["spec_grid"])
    baselines = tuple(params.get("baselines", ()))
    return ClaimSettings(**{**params, "comparisons": comparisons, "spec_grid": grid, "baselines": baselines})


#: The rating categories a rater picks from (config ``rating.categories``), and which of them confirm each
#: concept label (``rating.correct``): a label's precision is the share of its ratings in these.
RATING_CATEGORIES = (
    "semantic abstraction", "co-occurring objects", "one kind of object or organism", "related kinds",
    "morphological part", "colour/texture", "text", "polysemantic", "uninterpretable",
)  # fmt: skip
RATING_CORRECT = (
    ("abstract", ("semantic abstraction",)), ("cross-clade", ("semantic abstraction",)),
    ("single-class", ("one kind of object or organism",)), ("single-species", ("one kind of object or organism",)),
    ("taxonomic", ("related kinds",)), ("clade", ("related kinds",)), ("trait", ("morphological part",)),
    ("visual-motif", ("colour/texture",)), ("co-occurrence", ("co-occurring objects",)),
)  # fmt: skip


@dataclass(frozen=True)
class BrowserSettings:
    """The config's ``browser`` section, typed: which SAEs the static feature browser shows and how large its
    thumbnails are. ``sweeps`` empty: every sweep with concept tables but the control sweeps."""

    sweeps: tuple[str, ...] = ()
    thumbnail_px: int = 96
    jpeg_quality: int = 80
    table_shard: int = 4096  # features per feature-table shard
    detail_shard: int = 256  # features per detail shard (top images and patch maps)

    @classmethod
    def from_params(cls, p: dict) -> BrowserSettings:
        return cls(**{**p, "sweeps": tuple(p["sweeps"])})


@dataclass(frozen=True)
class RatingSettings:
    """The config's ``rating`` section, typed (the schema documents each key): the blinded rating sample and
    how ratings are scored.

    ``dir``: folder (relative to the working directory) whose ``*.json`` files are the raters' exports;
    ``per_label``: features sampled per (dataset, model, label); ``catch_per_model``: null-sweep features per
    (dataset, model) mixed in as catch trials; ``labels``: the concept labels sampled (``trait`` means the
    table's ``trait`` column); ``categories``: what a rater picks from; ``correct``: label → the categories
    that confirm it; ``catch_category``: the category a null feature should get."""

    dir: str = "ratings"
    seed: int = 0
    per_label: int = 10
    catch_per_model: int = 5
    labels: tuple[str, ...] = ("abstract", "taxonomic", "single-class", "trait", "single-species", "clade",
                               "cross-clade")  # fmt: skip
    categories: tuple[str, ...] = RATING_CATEGORIES
    correct: tuple[tuple[str, tuple[str, ...]], ...] = RATING_CORRECT
    catch_category: str = "uninterpretable"
    n_boot: int = 1000

    @classmethod
    def from_params(cls, p: dict) -> RatingSettings:
        """From a rule's params (:func:`vitsae.config.as_params` of an instance: lists for tuples)."""
        return cls(**{**p, "labels": tuple(p["labels"]), "categories": tuple(p["categories"]),
                      "correct": tuple((k, tuple(v)) for k, v in p["correct"])})  # fmt: skip
