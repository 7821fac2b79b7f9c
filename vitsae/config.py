"""The run configuration, checked once and typed once.

:func:`validate` checks a config against ``workflow/schemas/config.schema.yaml`` and fills in its
defaults; :func:`check_models` asks timm and open_clip whether each model exists and has the configured
layers; :func:`build` turns the result into a frozen :class:`Run` of the stages' own settings
(:mod:`vitsae.data.settings`, :mod:`vitsae.sae.settings`, :mod:`vitsae.analysis.settings`). All of it
happens when Snakemake parses the workflow, so a typo, an unknown architecture or a missing layer fails
before any job (let alone any GPU hour) runs, naming the key. Nothing downstream checks the config again.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import importlib.metadata
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import jsonschema
import yaml

from vitsae.analysis.settings import (
    CLAIM_FORMATS,
    RULES,
    SPEC_KEYS,
    TABLE_KIND,
    Arm,
    BrowserSettings,
    ClaimSettings,
    ComparisonSpec,
    ImageNetRules,
    INatRules,
    QualitySettings,
    RatingSettings,
    TransferSettings,
)
from vitsae.atomic import atomic_write
from vitsae.data.settings import (
    DatasetSpec,
    DemoSpec,
    ExtractionSettings,
    ModelConfig,
    ModelSpec,
    TokenChoice,
)
from vitsae.layout import DEMO_DATASET
from vitsae.sae.settings import Sweep, select

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key and what to do."""


def load_schema() -> dict:
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _key_path(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _schema_at(schema: dict, path) -> dict:
    node = schema
    for part in path:
        if isinstance(part, int):
            node = node.get("items", {})
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return {}
    return node


def _describe(error: jsonschema.ValidationError, schema: dict, source: str) -> str:
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(_schema_at(schema, error.absolute_path).get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        parts = []
        for key in unknown:
            full = f"{where}.{key}" if error.absolute_path else key
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            parts.append(f"unknown config key '{full}'{hint}")
        return f"{source}: " + "; ".join(parts) + f" (allowed here: {', '.join(allowed)})"
    if error.validator == "required":
        return f"{source}: {where}: {error.message}"
    if error.validator == "propertyNames":
        return f"{source}: {where}: name {error.instance!r} must be lower-case letters, digits and '-'"
    if error.validator == "anyOf" and error.context:  # one value or a list: say what each form wants
        reasons = "; ".join(dict.fromkeys(e.message for e in error.context))
        return (
            f"{source}: config key '{where}': {error.instance!r} is neither of the allowed forms ({reasons})"
        )
    return f"{source}: config key '{where}': {error.message}"


def _coerce(value, schema: dict):
    """Turn strings into the numbers/booleans the schema asks for: ``snakemake --config`` passes
    nested values (``--config "sweeps={paper: {l1_coeff: 5}}"``) as strings."""
    if "anyOf" in schema:  # one value or a list of them (sweep grid keys): the first that takes it
        for alternative in schema["anyOf"]:
            coerced = _coerce(value, alternative)
            if coerced is not value:
                return coerced
        return value
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, str) and "array" in types and value.strip().startswith("["):
        parsed = yaml.safe_load(value)
        if isinstance(parsed, list):
            return _coerce(parsed, schema)
    if isinstance(value, str) and set(types) & {"number", "integer", "boolean"}:
        parsed = yaml.safe_load(value)
        ok = {"number": (int, float), "integer": (int,), "boolean": (bool,)}
        if any(isinstance(parsed, ok[t]) for t in types if t in ok):
            return parsed
        return value
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        return {
            k: _coerce(v, props.get(k, extra if isinstance(extra, dict) else {})) for k, v in value.items()
        }
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_coerce(v, schema["items"]) for v in value]
    return value


def validate(config: dict, source: str = "config") -> dict:
    """Return a validated copy of ``config`` with every default filled in; raise ConfigError."""
    schema = load_schema()
    config = _coerce(copy.deepcopy(dict(config)), schema)
    errors = sorted(_Validator(schema).iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("\n".join(_describe(e, schema, source) for e in errors))
    _check_consistency(config, source)
    return config


def _check_consistency(config: dict, source: str) -> None:
    for name, ds in config["datasets"].items():
        if "multilabels" in ds and ds["format"] != "imagenet":
            raise ConfigError(
                f"{source}: datasets.{name}.multilabels is set, but only ImageNet-format datasets have a "
                f"co-occurrence control (datasets.{name}.format is {ds['format']!r}); remove the key"
            )
        if "generate" in ds:
            expected = DEMO_DATASET.format(dataset=name)
            if os.path.normpath(ds["root"]) != expected:
                raise ConfigError(
                    f"{source}: datasets.{name}.root is {ds['root']!r}, but a generated demo dataset lives at "
                    f"{expected!r}; set datasets.{name}.root: {expected}"
                )
    for split in config["extraction"]["splits"]:
        for name, ds in config["datasets"].items():
            if split not in ds["splits"]:
                raise ConfigError(
                    f"{source}: extraction.splits asks for split {split!r}, but datasets.{name}.splits has only "
                    f"{sorted(ds['splits'])}"
                )
    unknown = sorted(set(config["extraction"]["parts_by_dataset"]) - set(config["datasets"]))
    if unknown:
        raise ConfigError(
            f"{source}: extraction.parts_by_dataset names {unknown}, which are not datasets; "
            f"the datasets are {sorted(config['datasets'])}"
        )
    for name, sw in config["sweeps"].items():
        unknown = sorted(set(sw.get("models", [])) - set(config["models"]))
        if unknown:
            raise ConfigError(
                f"{source}: sweeps.{name}.models names {unknown}, which are not models; "
                f"the models are {sorted(config['models'])}"
            )
    needed = {config["evaluation"]["split"]} | {s["train_split"] for s in config["sweeps"].values()}
    missing = needed - set(config["extraction"]["splits"])
    if missing:
        raise ConfigError(
            f"{source}: splits {sorted(missing)} are used for training or evaluation but are not in "
            f"extraction.splits {config['extraction']['splits']}"
        )


def check_dataset_roots(config: dict) -> None:
    """Every dataset that is not generated must exist on disk, with its split directories."""
    for name, ds in config["datasets"].items():
        if "generate" in ds:
            continue
        root = Path(ds["root"])
        if not root.is_dir():
            raise ConfigError(
                f"dataset '{name}': root {root.resolve()} does not exist; set datasets.{name}.root in the config"
            )
        for split, sub in ds["splits"].items():
            if not (root / sub).is_dir():
                raise ConfigError(
                    f"dataset '{name}': {root.resolve() / sub} (split '{split}') does not exist; "
                    f"fix datasets.{name}.splits.{split} or datasets.{name}.root"
                )


# ---------------------------------------------------------------------------------------------
# Models: names and depths, from the libraries themselves


def _versions() -> dict[str, str | None]:
    out = {}
    for dist in ("timm", "open_clip_torch", "torch"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def model_depths(models: dict[str, dict], cache: str | os.PathLike | None = None) -> dict[str, dict]:
    """Per model name: ``{"n_blocks": ...}`` or ``{"error": ...}`` (unknown architecture), from the model
    built on the meta device (:func:`vitsae.data.models.model_shape`). With ``cache`` (a JSON file), the
    answers are kept there under a key of (family, arch, image size) and the library versions, so that
    only the first parse of a config imports torch, timm and open_clip."""
    versions = _versions()

    def key(m: dict) -> str:
        blob = json.dumps([m["family"], m["arch"], int(m["image_size"]), versions], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    known: dict = {}
    path = Path(cache) if cache is not None else None
    if path is not None and path.is_file():
        try:
            known = json.loads(path.read_text())
        except ValueError:
            known = {}
    out, new = {}, False
    for name, m in models.items():
        k = key(m)
        if k not in known:
            from vitsae.data.models import NotAViTError, UnknownModelError, model_shape

            try:
                known[k] = {"n_blocks": model_shape(m["family"], m["arch"], int(m["image_size"])).n_blocks}
            except NotAViTError as e:  # the library knows it, but it is no ViT: no other name to suggest
                known[k] = {"error": str(e), "close": []}
            except UnknownModelError as e:
                known[k] = {"error": str(e), "close": _close_names(m["family"], m["arch"])}
            new = True
        out[name] = known[k]
    if path is not None and new:
        text = json.dumps(known, indent=1, sort_keys=True)
        atomic_write(path, lambda p: p.write_text(text))
    return out


def _close_names(family: str, arch: str) -> list[str]:
    if family == "dinov2":
        import timm

        names = timm.list_models("*dinov2*", pretrained=True) + timm.list_models("*dinov2*")
    elif family == "timm":
        import timm

        names = timm.list_models("*vit*", pretrained=True) + timm.list_models("*vit*")
    else:
        import open_clip

        names = open_clip.list_models()
    return difflib.get_close_matches(arch, sorted(set(names)), n=3, cutoff=0.6)


def check_models(config: dict, source: str = "config", cache: str | os.PathLike | None = None) -> None:
    """Every model's architecture exists in its library (timm for dinov2 and timm, open_clip for clip), a
    dinov2 model is a DINOv2, a timm or clip model is a ViT with a class token and a patch grid
    (:func:`vitsae.data.models.model_shape`), and every configured layer is one of its blocks; else
    :class:`ConfigError` naming the key. See :func:`model_depths` for ``cache``."""
    problems = []
    for name, m in sorted(config["models"].items()):
        if m["family"] == "dinov2" and "dinov2" not in m["arch"]:
            problems.append(f"{source}: models.{name}.arch: family dinov2 needs a timm DINOv2 architecture "
                            f"(e.g. vit_base_patch14_dinov2.lvd142m), got {m['arch']!r}")  # fmt: skip
    if problems:
        raise ConfigError("\n".join(problems))
    depths = model_depths(config["models"], cache)
    for name, m in sorted(config["models"].items()):
        found = depths[name]
        if "error" in found:
            close = (
                f"; did you mean {' or '.join(repr(c) for c in found['close'])}?"
                if found.get("close")
                else ""
            )
            problems.append(f"{source}: models.{name}.arch: {found['error']}{close}")
            continue
        bad = [layer for layer in m["layers"] if not 0 <= int(layer) < found["n_blocks"]]
        if bad:
            problems.append(f"{source}: models.{name}.layers: {bad} not among the blocks of {m['arch']}, "
                            f"0..{found['n_blocks'] - 1}")  # fmt: skip
    if problems:
        raise ConfigError("\n".join(problems))


# ---------------------------------------------------------------------------------------------
# The typed run


@dataclass(frozen=True)
class Evaluation:
    split: str = "val"
    dense_threshold: float = 0.1


@dataclass(frozen=True)
class Features:
    """The SAEs that get statistics and concept tables, ``(sweep, sae_id)`` in config order, and how."""

    saes: tuple[tuple[str, str], ...]
    split: str = "train"
    top_k: int = 16
    batch_tokens: int = 4096


@dataclass(frozen=True)
class Concepts:
    thumbnail_size: int
    imagenet: ImageNetRules
    inat: INatRules
    region_cells: int = 8  # cells per side of the region descriptors (vitsae.analysis.regions; 0: none)

    def rules(self, dataset_format: str) -> ImageNetRules | INatRules:
        """The label rules of the table a dataset of this format gets."""
        return getattr(self, TABLE_KIND[dataset_format])


@dataclass(frozen=True)
class Cards:
    per_label: int = 4
    n_images: int = 8


@dataclass(frozen=True)
class Run:
    """A validated config as the stages' typed settings. ``config`` is the validated dict itself (with
    every default), which provenance records and the RO-Crate hold."""

    run_name: str
    demo: bool
    seed: int
    device: str
    datasets: dict[str, DatasetSpec]
    models: dict[str, ModelConfig]
    extraction: ExtractionSettings
    sweeps: dict[str, Sweep]
    evaluation: Evaluation
    transfer_saes: tuple[tuple[str, str], ...]
    transfer: TransferSettings
    features: Features
    concepts: Concepts
    n_boot: int
    cards: Cards
    claims: ClaimSettings
    shuffled_labels: tuple[str, ...]
    quality: QualitySettings
    browser: BrowserSettings
    rating: RatingSettings
    config: dict

    def tokens(self, model: str) -> TokenChoice:
        """The tokens kept in ``model``'s stores: its own choice, else ``extraction.tokens``."""
        return self.models[model].tokens or self.extraction.tokens

    @property
    def note(self) -> str:
        """What every figure says about where its numbers come from."""
        return "demo: synthetic data, random weights" if self.demo else f"run: {self.run_name}"

    def digest(self) -> str:
        """sha256 (16 hex) of the validated config, for outputs that hold all of it."""
        return hashlib.sha256(json.dumps(self.config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _tokens(value: str | dict, seed: int) -> TokenChoice:
    """A config token choice; a subset's seed defaults to the run's seed."""
    if isinstance(value, dict):
        return TokenChoice("subset", int(value["subset"]), int(value.get("seed", seed)))
    return TokenChoice(str(value))


def _plain(d: dict) -> dict:
    """Floats stay floats and ints ints (``3`` and ``3.0`` must not differ as params)."""
    return {k: (float(v) if isinstance(v, float) else v) for k, v in d.items()}


def build(config: dict) -> Run:
    """The :class:`Run` of a validated config (:func:`validate`). Selectors that pick no SAE raise
    :class:`ConfigError` naming the key."""
    seed = int(config["seed"])
    datasets = {
        name: DatasetSpec(
            name,
            ds["format"],
            ds["root"],
            dict(ds["splits"]),
            ds["max_per_class"],
            ds["on_corrupt"],
            DemoSpec(**ds["generate"]) if "generate" in ds else None,
            ds.get("multilabels"),
        )
        for name, ds in sorted(config["datasets"].items())
    }
    models = {
        name: ModelConfig(
            ModelSpec(
                name, m["family"], m["arch"], m["pretrained"], int(m["image_size"]), int(m["init_seed"])
            ),
            tuple(int(x) for x in m["layers"]),
            int(m["batch_size"]),
            _tokens(m["tokens"], seed) if "tokens" in m else None,
        )
        for name, m in sorted(config["models"].items())
    }
    ex = config["extraction"]
    extraction = ExtractionSettings(tuple(ex["splits"]), int(ex["num_workers"]), int(ex["parts"]),
                                    dict(ex["parts_by_dataset"]), _tokens(ex["tokens"], seed), ex["decode"],
                                    ex["precision"])  # fmt: skip
    sweeps = {name: Sweep.from_config(name, sw) for name, sw in sorted(config["sweeps"].items())}
    try:
        transfer = tuple(select(config["sweeps"], config["transfer"]["saes"], "transfer.saes"))
        features = tuple(select(config["sweeps"], config["features"]["saes"], "features.saes"))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    ev, fe, co, ca = config["evaluation"], config["features"], config["concepts"], config["cards"]
    rules = {
        kind: cls(**_plain({**co[kind], "seed": co[kind].get("seed", seed)})) for kind, cls in RULES.items()
    }
    return Run(
        run_name=config["run_name"], demo=bool(config["demo"]), seed=seed, device=config["device"],
        datasets=datasets, models=models, extraction=extraction, sweeps=sweeps,
        evaluation=Evaluation(ev["split"], float(ev["dense_threshold"])), transfer_saes=transfer, transfer=_transfer(config["transfer"]),
        features=Features(features, fe["split"], int(fe["top_k"]), int(fe["batch_tokens"])),
        concepts=Concepts(int(co["thumbnail_size"]), rules["imagenet"], rules["inat"], int(co["region_cells"])),
        n_boot=int(config["findings"]["n_boot"]), cards=Cards(int(ca["per_label"]), int(ca["n_images"])),
        claims=_claims(config, features), shuffled_labels=tuple(config["controls"]["shuffled_labels"]),
        config=config, quality=_quality(config["quality"]), browser=_browser(config), rating=_rating(config["rating"]),
    )  # fmt: skip


def _transfer(t: dict) -> TransferSettings:
    """The ``transfer`` section typed, but for ``saes`` (:attr:`Run.transfer_saes`)."""
    return TransferSettings(
        max_extrapolation=float(t["max_extrapolation"]), gap_margin=float(t["gap_margin"]),
        min_accuracy_recovered=float(t["min_accuracy_recovered"]), probe=t["probe"], ridge=float(t["ridge"]),
        probe_max_images=int(t["probe_max_images"]), min_accuracy_span=float(t["min_accuracy_span"]),
        label_map=tuple(sorted(t["label_map"].items())), floor_draws=int(t["floor_draws"]), n_null=int(t["n_null"]),
        baseline_tokens=int(t["baseline_tokens"]),
    )  # fmt: skip


def _browser(config: dict) -> BrowserSettings:
    """The ``browser`` section typed; its sweeps must be sweeps with concept tables (``features.saes``)."""
    b = config["browser"]
    known = {s for s, _ in select(config["sweeps"], config["features"]["saes"], "features.saes")}
    for sweep in b["sweeps"]:
        if sweep not in known:
            raise ConfigError(f"browser.sweeps: {sweep!r} has no concept tables; pick from {sorted(known)} "
                              "(sweeps with SAEs in features.saes)")  # fmt: skip
    return BrowserSettings(
        sweeps=tuple(b["sweeps"]), thumbnail_px=int(b["thumbnail_px"]), jpeg_quality=int(b["jpeg_quality"]),
        table_shard=int(b["table_shard"]), detail_shard=int(b["detail_shard"]),
    )  # fmt: skip


def _rating(r: dict) -> RatingSettings:
    """The ``rating`` section typed; every category ``correct`` and ``catch_category`` name is a category."""
    categories = tuple(r["categories"])
    if len(set(categories)) != len(categories):
        raise ConfigError(f"rating.categories: a category is listed twice in {list(categories)}")
    for label, cats in r["correct"].items():
        for cat in cats:
            if cat not in categories:
                raise ConfigError(
                    f"rating.correct.{label}: {cat!r} is not one of rating.categories {list(categories)}"
                )
    if r["catch_category"] not in categories:
        raise ConfigError(f"rating.catch_category: {r['catch_category']!r} is not one of rating.categories")
    return RatingSettings(
        dir=r["dir"], seed=int(r["seed"]), per_label=int(r["per_label"]), catch_per_model=int(r["catch_per_model"]),
        labels=tuple(r["labels"]), categories=categories,
        correct=tuple((k, tuple(v)) for k, v in sorted(r["correct"].items())), catch_category=r["catch_category"],
        n_boot=int(r["n_boot"]),
    )  # fmt: skip


def _quality(q: dict) -> QualitySettings:
    """The ``quality`` section typed (the schema has checked each value's range)."""
    return QualitySettings(
        sample_tokens=int(q["sample_tokens"]), stability_cosine=float(q["stability_cosine"]), tail=float(q["tail"]),
        max_dead=float(q["max_dead"]), max_dense=float(q["max_dense"]), min_stability=float(q["min_stability"]),
        max_final_drop=float(q["max_final_drop"]),
    )  # fmt: skip


def _claims(config: dict, features: tuple[tuple[str, str], ...]) -> ClaimSettings:
    """The ``claims`` section typed, after checking that every comparison names a dataset, layer, model
    and sweep of the run whose SAEs all get concept tables (``features.saes``)."""
    cl = config["claims"]
    problems = []
    picked = set(features)
    comparisons = []
    for i, c in enumerate(cl["comparisons"]):
        where = f"claims.comparisons[{i}] ({c['name']})"
        ds = config["datasets"].get(c["dataset"])
        if ds is None:
            problems.append(
                f"{where}.dataset: no dataset {c['dataset']!r}; the config has {sorted(config['datasets'])}"
            )
        elif ds["format"] not in CLAIM_FORMATS[c["claim"]]:
            problems.append(f"{where}: claim {c['claim']} needs a dataset of format {' or '.join(CLAIM_FORMATS[c['claim']])}, "
                            f"{c['dataset']!r} is {ds['format']}")  # fmt: skip
        arms = []
        for side in ("favoured", "other"):
            arm = Arm(c[side], c.get(f"{side}_sweep", c["sweep"]))
            arms.append(arm)
            model, sweep = config["models"].get(arm.model), config["sweeps"].get(arm.sweep)
            if model is None:
                problems.append(
                    f"{where}.{side}: no model {arm.model!r}; the config has {sorted(config['models'])}"
                )
                continue
            if sweep is None:
                problems.append(f"{where}: no sweep {arm.sweep!r}; the config has {sorted(config['sweeps'])}")
                continue
            if sweep.get("models") and arm.model not in sweep["models"]:
                problems.append(
                    f"{where}.{side}: sweep {arm.sweep!r} does not train {arm.model!r} (its models: {sweep['models']})"
                )
            if int(c["layer"]) not in [int(x) for x in model["layers"]]:
                problems.append(
                    f"{where}.layer: {c['layer']} is not among models.{arm.model}.layers {model['layers']}"
                )
            missing = [
                sid for sid in Sweep.from_config(arm.sweep, sweep).ids if (arm.sweep, sid) not in picked
            ]
            if missing:
                problems.append(f"{where}: SAEs {missing} of sweep {arm.sweep!r} get no concept tables; "
                                "features.saes must pick every SAE of a compared sweep")  # fmt: skip
        if arms[0] == arms[1]:
            problems.append(f"{where}: favoured and other are the same SAEs ({arms[0].name})")
        comparisons.append(
            ComparisonSpec(c["name"], int(c["claim"]), c["role"], c["dataset"], int(c["layer"]), *arms)
        )
    names = [c.name for c in comparisons]
    problems += [
        f"claims.comparisons: name {n!r} is used twice"
        for n in sorted({n for n in names if names.count(n) > 1})
    ]
    for claim in (1, 2):
        primaries = [c.name for c in comparisons if c.claim == claim and c.role == "primary"]
        if len(primaries) > 1:
            problems.append(f"claims.comparisons: claim {claim} has {len(primaries)} primary comparisons {primaries}; "
                            "declare one, the others secondary")  # fmt: skip
    null = cl["null_sweep"]
    if null is not None and (null not in config["sweeps"] or not config["sweeps"][null].get("permute_dims")):
        problems.append(f"claims.null_sweep: {null!r} is not a sweep with permute_dims: true")
    for kind, grid in cl["spec_grid"].items():
        for key in grid:
            if key not in SPEC_KEYS[kind]:
                why = ("needs the top images again (it changes the saved table's own columns)"
                       if key in RULES[kind].__dataclass_fields__ else "is not a label threshold")  # fmt: skip
                problems.append(
                    f"claims.spec_grid.{kind}.{key}: {key!r} {why}; the curve can vary {', '.join(SPEC_KEYS[kind])}"
                )
    problems += _baseline_problems(config, comparisons)
    for sweep in config["controls"]["shuffled_labels"]:
        if sweep not in config["sweeps"]:
            problems.append(
                f"controls.shuffled_labels: no sweep {sweep!r}; the config has {sorted(config['sweeps'])}"
            )
    if problems:
        raise ConfigError("\n".join(problems))
    grid = tuple(
        (kind, tuple((k, tuple(v)) for k, v in g.items())) for kind, g in sorted(cl["spec_grid"].items())
    )
    pl0 = cl["primary_l0"]
    return ClaimSettings(
        comparisons=tuple(comparisons), primary_l0=pl0 if isinstance(pl0, str) else float(pl0),
        n_boot=int(cl["n_boot"]), spec_n_boot=int(cl["spec_n_boot"]), n_perm=int(cl["n_perm"]),
        curve_points=int(cl["curve_points"]), null_sweep=null, decoder_cosine=float(cl["clusters"]["decoder_cosine"]),
        top_image_jaccard=float(cl["clusters"]["top_image_jaccard"]), alpha=float(cl["verdict"]["alpha"]),
        min_seeds=int(cl["verdict"]["min_seeds"]), min_spec_agreement=float(cl["verdict"]["min_spec_agreement"]),
        spec_grid=grid, baselines=tuple(cl["baselines"]),
    )  # fmt: skip


def _baseline_problems(config: dict, comparisons: list[ComparisonSpec]) -> list[str]:
    """``claims.baselines``: models of the run that no primary or secondary comparison compares, each trained
    by at least one of those comparisons' sweeps, with the layer of every comparison whose sweep trains it
    (else its SAEs would be missing from that row without a word)."""
    problems = []
    judged = [c for c in comparisons if c.role != "control"]
    compared: dict[str, str] = {}  # model -> the first comparison that compares it
    for c in judged:
        for a in (c.favoured, c.other):
            compared.setdefault(a.model, c.name)
    for name in config["claims"]["baselines"]:
        model = config["models"].get(name)
        if model is None:
            problems.append(f"claims.baselines: no model {name!r}; the config has {sorted(config['models'])}")
            continue
        if name in compared:
            problems.append(f"claims.baselines: {name!r} is compared in claims.comparisons ({compared[name]}); a "
                            "baseline is a model no claim is about")  # fmt: skip
            continue
        trained = [c for c in judged if _trains(config["sweeps"][c.favoured.sweep], name)]
        if not trained:
            problems.append(f"claims.baselines: {name!r} is trained by none of the compared sweeps "
                            f"{sorted({c.favoured.sweep for c in judged})}; add it to a sweep's models")  # fmt: skip
        for c in trained:
            if c.layer not in [int(x) for x in model["layers"]]:
                problems.append(f"claims.baselines: comparison {c.name} is at layer {c.layer}, which is not among "
                                f"models.{name}.layers {model['layers']}")  # fmt: skip
    return problems


def _trains(sweep: dict | None, model: str) -> bool:
    return sweep is not None and (not sweep.get("models") or model in sweep["models"])


def load(config: dict, source: str = "config", models_cache: str | os.PathLike | None = None,
         models: bool = True) -> Run:  # fmt: skip
    """:func:`validate`, :func:`check_dataset_roots`, :func:`check_models` (unless ``models`` is False)
    and :func:`build`, in that order: the one way a config enters the workflow."""
    validated = validate(config, source)
    check_dataset_roots(validated)
    if models:
        check_models(validated, source, models_cache)
    return build(validated)


def as_params(obj: object) -> object:
    """A typed setting as plain values for a rule's params (what Snakemake compares between runs, and
    what the provenance record holds): dataclasses as dicts, tuples as lists."""
    if hasattr(obj, "__dataclass_fields__"):
        return as_params(asdict(obj))
    if isinstance(obj, dict):
        return {k: as_params(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [as_params(v) for v in obj]
    return float(obj) if isinstance(obj, float) else obj
