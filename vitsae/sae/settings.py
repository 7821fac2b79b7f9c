"""SAE settings: one SAE (:class:`SAESpec`), the training pass a sweep shares (:class:`TrainSettings`),
and a config sweep → the SAEs it trains (every combination of its list-valued settings).

Import-light (no torch): the Snakefile expands sweeps at parse time to name every SAE directory.
The dataclasses hold values only; the config schema has checked them, once.

A sweep's *grid keys* (:data:`GRID_KEYS`) may each be one value or a list; the sweep is every
combination. Keys an architecture does not use are dropped from its combinations (a sweep over
``architecture: [relu_l1, topk]``, ``l1_coeff: [3, 6]``, ``k: [16, 32]`` gives two ReLU SAEs, one per
L1 coefficient, and two TopK SAEs, one per k: four, not sixteen). The other keys
(:data:`TRAINING_KEYS`) are shared by every SAE of the sweep: they describe the one pass over the data.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass
from typing import Any

ARCHITECTURES = ("relu_l1", "relu_l1_free", "topk", "batchtopk", "jumprelu")
GRID_KEYS = (
    "architecture",
    "expansion",
    "l1_coeff",
    "k",
    "lr",
    "seed",
    "aux_k",
    "aux_coeff",
    "jumprelu_bandwidth",
    "jumprelu_init_threshold",
    "enc_init_scale",
)
#: Grid keys each architecture uses beyond architecture, expansion, lr and seed.
USES = {
    "relu_l1": ("l1_coeff",),
    "relu_l1_free": ("l1_coeff",),
    "topk": ("k", "aux_k", "aux_coeff"),
    "batchtopk": ("k", "aux_k", "aux_coeff"),
    "jumprelu": ("l1_coeff", "jumprelu_bandwidth", "jumprelu_init_threshold"),
}
COMMON = ("architecture", "expansion", "lr", "seed", "enc_init_scale")
TRAINING_KEYS = (
    "batch_size",
    "train_tokens",
    "token_kind",
    "shuffle_chunks",
    "lr_warmup_steps",
    "lr_decay_steps",
    "l1_warmup_steps",
    "log_every",
    "checkpoint_every",
    "data_seed",
    "compile",
    "permute_dims",
    "input_norm",
    "precision",
)
#: ``precision`` values: ``fp32`` (full float32 matmuls), ``tf32`` (float32 storage, TF32 matmuls on CUDA),
#: ``bf16`` (bf16 autocast around the encoder and decoder matmuls); ``auto`` is bf16 on CUDA, fp32 elsewhere.
PRECISIONS = ("auto", "fp32", "tf32", "bf16")
#: Encoder initialisation per architecture: ``W_enc = scale · W_dec.T`` unless a sweep sets
#: ``enc_init_scale``. 0.1 for the ReLU SAEs, chosen on the planted benchmark (config/README.md, "SAE
#: settings"; measured for relu_l1, carried to relu_l1_free, whose encoder is the same); the k-sparse
#: SAEs keep the transpose (not benchmarked); JumpReLU too: started at 0.1 on the planted unit test
#: (tests/unit/test_train.py) its pre-activations stayed under the thresholds and 99% of features died.
ENC_INIT_SCALE = {"relu_l1": 0.1, "relu_l1_free": 0.1, "topk": 1.0, "batchtopk": 1.0, "jumprelu": 1.0}
#: A feature counts as dead (training log, AuxK) when it has not fired in this many consecutive steps.
DEAD_STEPS = 10


@dataclass(frozen=True)
class SAESpec:
    """One SAE of a sweep. ``l1_coeff`` is the L1 coefficient of ``relu_l1``/``relu_l1_free`` and the L0
    coefficient of ``jumprelu``; ``k`` the active features per token of ``topk``/``batchtopk``, whose AuxK
    uses ``aux_k`` (default ``2·k``) dead features and weight ``aux_coeff``. The encoder starts at
    ``encoder_scale`` times the decoder's transpose (:meth:`vitsae.sae.train.Stack.initialise`)."""

    architecture: str = "relu_l1"
    expansion: int = 8
    l1_coeff: float | None = None
    k: int | None = None
    lr: float = 4e-3
    seed: int = 0
    aux_k: int | None = None
    aux_coeff: float = 1 / 32
    jumprelu_bandwidth: float = 0.001
    jumprelu_init_threshold: float = 0.001
    enc_init_scale: float | None = None  # None: the architecture's (ENC_INIT_SCALE)

    @property
    def encoder_scale(self) -> float:
        """The encoder's initial scale: ``enc_init_scale``, or the architecture's default."""
        return (
            ENC_INIT_SCALE[self.architecture] if self.enc_init_scale is None else float(self.enc_init_scale)
        )

    @property
    def effective_aux_k(self) -> int:
        return 0 if self.k is None else int(2 * self.k if self.aux_k is None else self.aux_k)

    @property
    def id(self) -> str:
        """:func:`sae_id` of these settings (the SAE's directory name)."""
        return sae_id(self.to_dict())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainSettings:
    """Training settings shared by every SAE of a sweep (one data pass). ``data_seed`` orders the data;
    a feature is dead (log, AuxK) when it has not fired in ``dead_steps`` steps. ``permute_dims`` trains
    the structure-free null: each batch's dimensions are permuted independently across its tokens
    (:func:`vitsae.sae.train.permute_dims`). ``input_norm`` says how the input scale is fitted:
    ``centred`` (``E‖(x − mean)·scale‖² = d``) or ``raw`` (``E‖x·scale‖² = d``, uncentred: SAELens'
    ``expected_average_only_in``) (:func:`vitsae.sae.train.init_scale_and_mean`).

    ``compile`` (``auto``: on for CUDA, off elsewhere) and ``precision`` (:data:`PRECISIONS`; ``auto``: bf16 on
    CUDA, fp32 elsewhere) are fixed for a device by :meth:`resolved`; the trainer, its state digest, cfg.json
    and the provenance record see the resolved values. On a CPU the step stays fp32 and eager unless the
    settings say otherwise, so its determinism and exact resume stay bitwise."""

    batch_size: int = 1024
    train_tokens: int = 200_000
    token_kind: str = "patches"
    shuffle_chunks: int = 8
    data_seed: int = 0
    lr_warmup_steps: int = 10
    lr_decay_steps: int = 0
    l1_warmup_steps: int = 50
    dead_steps: int = DEAD_STEPS
    log_every: int = 20
    checkpoint_every: int = 500
    compile: bool | str = "auto"
    permute_dims: bool = False
    input_norm: str = "centred"
    precision: str = "auto"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def resolved(self, device: object) -> TrainSettings:
        """These settings with ``compile`` and ``precision`` fixed for ``device`` (``auto``: compiled bf16 on
        CUDA, eager fp32 elsewhere). ``tf32`` is refused off CUDA (it names a CUDA matmul mode)."""
        cuda = str(device).split(":")[0] == "cuda"  # a str or a torch.device (no torch import here)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.compile not in ("auto", True, False):
            raise ValueError(f"compile must be auto, true or false; got {self.compile!r}")
        precision = ("bf16" if cuda else "fp32") if self.precision == "auto" else self.precision
        if precision == "tf32" and not cuda:
            raise ValueError(f"precision tf32 is a CUDA matmul mode; on {device} use fp32 or bf16")
        compile_ = cuda if self.compile == "auto" else bool(self.compile)
        return dataclasses.replace(self, compile=compile_, precision=precision)


@dataclass(frozen=True)
class Sweep:
    """A config sweep: the split it trains on, its SAEs (specs and ids, in a stable order) and the pass
    they share."""

    name: str
    train_split: str
    specs: tuple[SAESpec, ...]
    ids: tuple[str, ...]
    training: TrainSettings
    models: tuple[str, ...] | None = None  # the models it trains on (None: every model)

    @classmethod
    def from_config(cls, name: str, sweep: dict) -> Sweep:
        """From a validated config sweep (defaults filled in)."""
        specs = sweep_specs(sweep)
        models = tuple(sweep["models"]) if sweep.get("models") else None
        return cls(name, sweep["train_split"], tuple(SAESpec(**s) for s in specs), tuple(sweep_ids(sweep)),
                   TrainSettings(**training_settings(sweep)), models)  # fmt: skip

    def trains(self, model: str) -> bool:
        """Whether this sweep trains SAEs on ``model``'s stores."""
        return self.models is None or model in self.models


def as_list(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def sweep_specs(sweep: dict) -> list[dict]:
    """The SAE settings of every SAE of ``sweep`` (a validated config sweep), in a stable order."""
    present = [k for k in GRID_KEYS if k in sweep]
    combos = itertools.product(*(as_list(sweep[k]) for k in present))
    specs: list[dict] = []
    for combo in combos:
        settings = dict(zip(present, combo))
        arch = settings["architecture"]
        spec = {k: v for k, v in settings.items() if k in COMMON or k in USES[arch]}
        if spec not in specs:
            specs.append(spec)
    return specs


def training_settings(sweep: dict) -> dict:
    """The settings every SAE of ``sweep`` shares (one data pass)."""
    return {k: sweep[k] for k in TRAINING_KEYS if k in sweep}


#: Defaults of the settings an id names only when they differ (they match :class:`SAESpec`'s).
ID_DEFAULTS = {"aux_coeff": 1 / 32, "jumprelu_bandwidth": 0.001, "jumprelu_init_threshold": 0.001}


def sae_id(spec: dict) -> str:
    """A readable id from an SAE's settings: ``relu_l1-x8-l1_3-lr_0.004-s0``, ``topk-x8-k32-lr_0.004-s1``;
    ``aux_k``, ``aux_coeff``, ``jumprelu_*`` and ``enc_init_scale`` (``enc_1``) appear only when set away
    from their (the architecture's) defaults."""
    arch = spec["architecture"]
    parts = [arch, f"x{int(spec['expansion'])}"]

    def differs(key: str) -> bool:
        return spec.get(key) is not None and float(spec[key]) != ID_DEFAULTS[key]

    if arch in ("topk", "batchtopk"):
        parts.append(f"k{int(spec['k'])}")
        if spec.get("aux_k") is not None:
            parts.append(f"auxk{int(spec['aux_k'])}")
        if differs("aux_coeff"):
            parts.append(f"aux_{float(spec['aux_coeff']):g}")
    else:
        parts.append(f"{'l0' if arch == 'jumprelu' else 'l1'}_{float(spec['l1_coeff']):g}")
    if arch == "jumprelu":
        if differs("jumprelu_bandwidth"):
            parts.append(f"bw_{float(spec['jumprelu_bandwidth']):g}")
        if differs("jumprelu_init_threshold"):
            parts.append(f"th_{float(spec['jumprelu_init_threshold']):g}")
    enc = spec.get("enc_init_scale")
    if enc is not None and float(enc) != ENC_INIT_SCALE[arch]:
        parts.append(f"enc_{float(enc):g}")
    parts += [f"lr_{float(spec['lr']):g}", f"s{int(spec['seed'])}"]
    return "-".join(parts)


def sweep_ids(sweep: dict) -> list[str]:
    """The ``sae_id`` of every SAE of ``sweep``; two SAEs with one id is a config error."""
    ids = [sae_id(s) for s in sweep_specs(sweep)]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"sweep gives several SAEs the same id {dupes}: list each value once")
    return ids


def select(sweeps: dict[str, dict], selector: dict | None, where: str = "saes") -> list[tuple[str, str]]:
    """``(sweep, sae_id)`` of every SAE of ``sweeps`` (the validated config's sweeps) that ``selector``
    picks, in config order: by sweep name (``sweeps``), by name (``ids``) and by settings (``where``: grid
    key → value or list of values; an SAE whose architecture does not use a key never matches it). Every
    condition given must hold; an empty selector picks every SAE. ``where`` names the config key in errors.

    Raises ValueError for an unknown sweep, id or key, and for a selector that picks nothing.
    """
    selector = selector or {}
    names = list(selector.get("sweeps") or sweeps)
    unknown = [s for s in names if s not in sweeps]
    if unknown:
        raise ValueError(f"{where}.sweeps: no sweep named {unknown}; the config has {sorted(sweeps)}")
    every = {s: dict(zip(sweep_ids(sweeps[s]), sweep_specs(sweeps[s]))) for s in names}
    ids = selector.get("ids")
    if ids is not None:
        known = {i for by_id in every.values() for i in by_id}
        missing = [i for i in ids if i not in known]
        if missing:
            raise ValueError(
                f"{where}.ids: no SAE named {missing} in sweeps {names}; they have {sorted(known)}"
            )
    conditions = dict(selector.get("where") or {})
    bad_keys = [k for k in conditions if k not in GRID_KEYS]
    if bad_keys:
        raise ValueError(f"{where}.where: {bad_keys} are not SAE settings; use one of {', '.join(GRID_KEYS)}")

    def matches(spec: dict) -> bool:
        for key, wanted in conditions.items():
            if key not in spec:
                return False
            values = as_list(wanted)
            value = spec[key]
            if isinstance(value, str):
                if value not in values:
                    return False
            elif not any(not isinstance(v, str) and float(v) == float(value) for v in values):
                return False
        return True

    picked = [
        (s, i)
        for s, by_id in every.items()
        for i, spec in by_id.items()
        if (ids is None or i in ids) and matches(spec)
    ]
    if not picked:
        raise ValueError(f"{where}: the selector {selector} picks no SAE of sweeps {names}")
    return picked


_SEED = re.compile(r"^(?P<setting>.+)-s(?P<seed>-?\d+)$")


def split_seed(sae_id: str) -> tuple[str, int | None]:
    """``relu_l1-x8-l1_3-lr_0.004-s1`` → (``relu_l1-x8-l1_3-lr_0.004``, 1): SAEs that differ only in
    their seed share a setting, and the figures show the spread over those seeds."""
    m = _SEED.match(sae_id)
    return (m["setting"], int(m["seed"])) if m else (sae_id, None)
