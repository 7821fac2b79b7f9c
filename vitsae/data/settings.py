"""Settings of the data stage as frozen dataclasses: a dataset, a model, the kept tokens, an extraction.

Import-light (no torch, no NumPy): :mod:`vitsae.config` builds them from the validated YAML when
Snakemake parses the workflow. They hold values only; the config schema has checked them, once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class DemoSpec:
    """A built-in synthetic dataset drawn from a seed (``datasets.<name>.generate``)."""

    kind: str  # imagenet-demo | inat-demo
    seed: int = 0
    train_per_class: int = 40
    val_per_class: int = 10
    image_size: int = 112


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the config: its on-disk layout and what the manifest keeps of it."""

    name: str
    format: str  # imagenet | inat2021 | imagefolder
    root: str
    splits: dict[str, str] = field(default_factory=lambda: {"train": "train", "val": "val"})
    max_per_class: int | None = None
    on_corrupt: str = "error"
    generate: DemoSpec | None = None
    # ImageNet only: per-image multi-labels of the eval split for the co-occurrence control ("real": timm's
    # ReaL labels of ImageNet-1K val; a path, relative to the root or absolute; None: no control)
    multilabels: str | None = None

    def manifest_settings(self) -> dict:
        """What a manifest depends on: layout, root, splits, subset, corrupt-image policy."""
        return {"format": self.format, "root": self.root, "splits": dict(self.splits),
                "max_per_class": self.max_per_class, "on_corrupt": self.on_corrupt}  # fmt: skip


@dataclass(frozen=True)
class ModelSpec:
    """Which network, and how it sees images. Random weights (``pretrained: false``) are drawn from
    ``init_seed``: same seed, same model."""

    name: str  # the config's name for it, e.g. "dinov2-b14"
    family: str  # "dinov2" | "timm" (any timm ViT) | "clip"
    arch: str  # timm / open_clip architecture name
    pretrained: bool | str = False
    image_size: int = 224
    init_seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TokenChoice:
    """Which tokens of each image a store keeps: ``all``, ``patches``, ``cls`` or ``subset`` (k patches
    per image, chosen from ``seed`` and the image's manifest row)."""

    kept: str = "all"
    k: int | None = None
    seed: int = 0

    @classmethod
    def from_config(cls, value: str | dict | TokenChoice, seed: int = 0) -> TokenChoice:
        """``"all" | "patches" | "cls" | {"subset": k}`` (optionally ``{"subset": k, "seed": s}``)."""
        if isinstance(value, TokenChoice):
            return value
        if isinstance(value, dict):
            return cls("subset", int(value["subset"]), int(value.get("seed", seed)))
        return cls(str(value), None, int(seed))

    def to_config(self) -> str | dict:
        """The config's form: a kind, or ``{subset: k, seed: s}``."""
        return {"subset": self.k, "seed": self.seed} if self.kept == "subset" else self.kept

    def layout(self, model_layout: dict) -> dict:
        """The store's ``token_layout``: the model's layout narrowed to the kept tokens."""
        h, w = model_layout["grid"]
        base = {"n_registers": 0, "grid": [h, w], "kept": self.kept, "model_tokens": dict(model_layout)}
        if self.kept == "all":
            return {**model_layout, "kept": "all", "model_tokens": dict(model_layout)}
        if self.kept == "patches":
            return {**base, "n_tokens": h * w, "n_prefix": 0, "cls_index": None}
        if self.kept == "cls":
            return {**base, "n_tokens": 1, "n_prefix": 1, "cls_index": 0}
        if not 1 <= int(self.k) <= h * w:
            raise ValueError(
                f"tokens: {{subset: {self.k}}} must keep 1..{h * w} patches (the grid is {h}x{w})"
            )
        return {**base, "n_tokens": int(self.k), "n_prefix": 0, "cls_index": None,
                "subset": {"k": int(self.k), "seed": int(self.seed)}}  # fmt: skip

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelConfig:
    """A model of the config: the network (:class:`ModelSpec`), the blocks whose outputs are stored,
    the extraction batch (= Zarr chunk) and its own token choice, if any."""

    spec: ModelSpec
    layers: tuple[int, ...]
    batch_size: int = 64
    tokens: TokenChoice | None = None


@dataclass(frozen=True)
class ExtractionSettings:
    """How stores are extracted (``extraction`` in the config)."""

    splits: tuple[str, ...] = ("train", "val")
    num_workers: int = 0
    parts: int = 1
    parts_by_dataset: dict[str, int] = field(default_factory=dict)
    tokens: TokenChoice = TokenChoice()
    decode: str = "auto"
    precision: str = "bf16"

    def parts_of(self, dataset: str) -> int:
        """Parallel extraction jobs per store of ``dataset``."""
        return int(self.parts_by_dataset.get(dataset, self.parts))
