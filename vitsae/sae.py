"""The paper's sparse autoencoder: ReLU + L1 with unit-norm decoder columns, in plain PyTorch.

Conventions (so that L1 coefficients can be compared with other tools)
----------------------------------------------------------------------
* **Scalar input normalisation.** Inputs are multiplied by one scalar ``scale`` chosen on a
  sample of training tokens so that ``E‖x·scale‖² = d_in`` (SAELens' ``expected_average_only_in``;
  Anthropic's April 2024 update). ``b_dec``, ``b_enc`` and all feature activations live in these
  normalised units; :meth:`ReluSAE.decode` returns reconstructions in the *original* units.
* **Architecture.** ``f = relu((x·scale − b_dec) W_enc + b_enc)``, ``x̂·scale = f W_dec + b_dec``.
  ``W_enc`` is ``[d_in, d_sae]`` and ``W_dec`` ``[d_sae, d_in]`` (SAELens' shapes and tensor names);
  the dictionary atoms ("decoder columns" in the literature) are the rows of ``W_dec`` and are kept
  at unit L2 norm: after backward the component of each row's gradient parallel to the row is
  removed, and after each optimiser step the rows are renormalised.
* **Loss.** ``mean_batch ‖x̂·scale − x·scale‖²`` (squared error *summed* over the d_in dimensions,
  normalised units) ``+ λ(t) · mean_batch Σ_f |f|``. Because decoder norms are 1, ``Σ_f |f|`` equals
  ``Σ_f |f|·‖W_dec,f‖`` (Anthropic's penalty), so ``l1_coeff`` is directly comparable to
  SAELens' ``l1_coefficient`` with ``mse_loss_normalization=None`` and scalar normalisation.
  λ(t) rises linearly from 0 to ``l1_coeff`` over ``l1_warmup_steps``; the Adam learning rate rises
  linearly to ``lr`` over ``lr_warmup_steps`` and then stays constant.
* **Init.** Decoder rows are seeded random unit vectors, ``W_enc = W_dec.T``, ``b_enc = 0`` and
  ``b_dec`` = the mean of the normalised init sample. ReLU+L1 fails to recover dictionaries on
  data with per-dimension offsets (as ViT activations have) without the latter (shared/FACTS.md).

Data are read by :class:`TokenLoader` in whole Zarr chunks (chunk order permuted per epoch by
the seed, tokens shuffled in an in-RAM buffer of ``shuffle_chunks`` chunks), the only read
pattern that keeps a store fast (shared/FACTS.md).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from vitsae.store import TOKEN_KINDS, iter_chunks, open_store, split_array, token_slice

logger = logging.getLogger("vitsae.sae")

ARCHITECTURE = "relu_l1_unit_decoder"
WEIGHTS_FILE = "sae.safetensors"
CFG_FILE = "cfg.json"
LOG_FILE = "train_log.csv"
LOG_FIELDS = ("step", "tokens", "loss", "mse", "l1", "l0", "fvu", "dead_fraction", "lr", "l1_coeff")
#: A feature counts as dead in the training log when it has not fired in this many consecutive
#: batches (fewer at the start of training: then "since step 0").
DEAD_WINDOW_BATCHES = 10
#: At most this many tokens of the loader's first buffer initialise ``scale`` and ``b_dec``.
INIT_SAMPLE_TOKENS = 65_536


@dataclass(frozen=True)
class SAEConfig:
    """Hyperparameters of one SAE. Defaults are tuned for the demo (random-weight ViTs, d=384/768,
    ~200K training tokens, i.e. ~200 steps of 1024) and work on longer runs; see the module docstring
    for the loss convention that ``l1_coeff`` refers to."""

    expansion: int = 8
    l1_coeff: float = 3.0
    lr: float = 4e-3
    lr_warmup_steps: int = 10
    l1_warmup_steps: int = 50
    batch_size: int = 1024
    train_tokens: int = 200_000
    seed: int = 0
    token_kind: str = "patches"
    shuffle_chunks: int = 8
    log_every: int = 20

    def __post_init__(self) -> None:
        if self.token_kind not in TOKEN_KINDS:
            raise ValueError(f"SAEConfig.token_kind {self.token_kind!r} is not one of {TOKEN_KINDS}")
        for name in ("expansion", "batch_size", "train_tokens", "shuffle_chunks", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SAEConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("lr_warmup_steps", "l1_warmup_steps"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"SAEConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.lr > 0 or not self.l1_coeff >= 0:
            raise ValueError(f"SAEConfig needs lr > 0 and l1_coeff >= 0, got {self.lr!r}, {self.l1_coeff!r}")

    @classmethod
    def from_dict(cls, d: dict) -> SAEConfig:
        """Build from a (validated YAML) mapping; an unknown key raises ValueError naming it.
        Values are coerced to the field types (plain Python int/float/str)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(f"unknown SAE config key(s) {unknown}; known keys are {sorted(fields)}")
        casts = {"int": int, "float": float, "str": str}
        kwargs = {k: casts[str(fields[k].type)](v) for k, v in d.items()}
        return cls(**kwargs)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class ReluSAE(torch.nn.Module):
    """ReLU SAE with unit-norm decoder rows and a scalar input normalisation (see module docstring)."""

    def __init__(self, d_in: int, d_sae: int, scale: float = 1.0, cfg: dict | None = None) -> None:
        super().__init__()
        self.d_in = d_in
        self.d_sae = d_sae
        self.W_enc_DF = torch.nn.Parameter(torch.zeros(d_in, d_sae))
        self.b_enc_F = torch.nn.Parameter(torch.zeros(d_sae))
        self.W_dec_FD = torch.nn.Parameter(torch.zeros(d_sae, d_in))
        self.b_dec_D = torch.nn.Parameter(torch.zeros(d_in))
        self.register_buffer("scale", torch.tensor(float(scale)))
        self.cfg: dict = dict(cfg or {})

    @torch.no_grad()
    def initialise(self, init_sample_ND: torch.Tensor, seed: int) -> None:
        """Set ``scale`` (E‖x·scale‖² = d_in), ``b_dec`` (normalised sample mean), seeded weights."""
        sample_ND = init_sample_ND.to(torch.float64)
        mean_sq = float((sample_ND**2).sum(dim=1).mean())
        if not math.isfinite(mean_sq) or mean_sq <= 0:
            raise ValueError(f"init sample has mean squared norm {mean_sq}; cannot normalise")
        scale = math.sqrt(self.d_in / mean_sq)
        self.scale.fill_(scale)
        self.b_dec_D.copy_((sample_ND * scale).mean(dim=0).to(torch.float32))
        gen = torch.Generator().manual_seed(int(seed))
        W_dec_FD = torch.randn(self.d_sae, self.d_in, generator=gen, dtype=torch.float32)
        W_dec_FD /= W_dec_FD.norm(dim=1, keepdim=True)
        self.W_dec_FD.copy_(W_dec_FD)
        self.W_enc_DF.copy_(W_dec_FD.T)
        self.b_enc_F.zero_()

    def encode(self, x_BD: torch.Tensor) -> torch.Tensor:
        """Feature activations ``f_BF`` (normalised units) of inputs ``x_BD`` in original units."""
        return torch.relu((x_BD * self.scale - self.b_dec_D) @ self.W_enc_DF + self.b_enc_F)

    def decode(self, f_BF: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``x̂_BD`` in the original units."""
        return (f_BF @ self.W_dec_FD + self.b_dec_D) / self.scale

    def forward(self, x_BD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f_BF = self.encode(x_BD)
        return self.decode(f_BF), f_BF

    @torch.no_grad()
    def remove_parallel_grad(self) -> None:
        """Drop from each decoder row's gradient its component along the (unit-norm) row."""
        if self.W_dec_FD.grad is None:
            return
        W_FD = self.W_dec_FD
        parallel_F1 = (self.W_dec_FD.grad * W_FD).sum(dim=1, keepdim=True)
        self.W_dec_FD.grad -= parallel_F1 * W_FD

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec_FD /= self.W_dec_FD.norm(dim=1, keepdim=True)

    def state_dict_saelens(self) -> dict[str, torch.Tensor]:
        """Tensors under SAELens' names and shapes: W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec."""
        return {
            "W_enc": self.W_enc_DF.detach().cpu().contiguous(),
            "b_enc": self.b_enc_F.detach().cpu().contiguous(),
            "W_dec": self.W_dec_FD.detach().cpu().contiguous(),
            "b_dec": self.b_dec_D.detach().cpu().contiguous(),
        }


# --------------------------------------------------------------------------------------------
# Loader


class TokenLoader:
    """Deterministic batches of float32 tokens ``[B, D]`` from one split of an activation store.

    Each epoch visits the split's chunks in a permutation drawn from ``(seed, epoch)``; whole chunks
    are read into a buffer of up to ``shuffle_chunks`` chunks (plus the tokens left over from the
    previous buffer), the buffer's tokens are shuffled with a generator seeded by ``seed`` and cut
    into batches. Iteration stops once ``n_tokens`` tokens have been yielded (the last batch may be
    smaller); chunks are read lazily, so nothing beyond what those tokens need is read.

    ``bytes_read`` counts the bytes of (token-sliced, fp16) activations read from the store;
    ``chunks_read`` lists ``(epoch, chunk_index)`` in read order.
    """

    def __init__(
        self,
        store_path: str | os.PathLike,
        split: str,
        token_kind: str,
        batch_size: int,
        seed: int,
        shuffle_chunks: int,
        n_tokens: int,
    ) -> None:
        self.store_path = Path(store_path)
        self.split = split
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle_chunks = int(shuffle_chunks)
        self.n_tokens = int(n_tokens)
        group = open_store(self.store_path)
        self.array = split_array(group, split)
        self.layout = dict(group.attrs["token_layout"])
        self.tokens = token_slice(self.layout, token_kind)
        n_images, _, self.d_in = self.array.shape
        self.n_chunks = math.ceil(n_images / self.array.chunks[0])
        per_image = len(range(*self.tokens.indices(self.layout["n_tokens"])))
        self.split_tokens = n_images * per_image
        if self.split_tokens < self.batch_size:
            raise ValueError(
                f"store {self.store_path} split {split!r} has {self.split_tokens} {token_kind!r} tokens, "
                f"fewer than batch_size={self.batch_size}; lower batch_size or extract more images"
            )
        self.bytes_read = 0
        self.chunks_read: list[tuple[int, int]] = []
        self._shuffle_rng = np.random.default_rng([self.seed, 0x5AE])
        self._chunk_iter = self._chunks()
        self._pending_ND: np.ndarray | None = None  # buffer filled by peek_buffer, not yet batched
        self._yielded = 0
        self._gen = self._batches()

    def _chunks(self) -> Iterator[np.ndarray]:
        epoch = 0
        while True:
            order = np.random.default_rng([self.seed, epoch]).permutation(self.n_chunks)
            for i, (_, acts_BTD) in zip(order, iter_chunks(self.array, order, self.tokens)):
                self.bytes_read += acts_BTD.nbytes
                self.chunks_read.append((epoch, int(i)))
                if not np.isfinite(acts_BTD).all():
                    raise ValueError(
                        f"activations contain NaN/Inf: store {self.store_path} split {self.split!r} "
                        f"chunk {int(i)}; re-extract this store"
                    )
                yield acts_BTD.reshape(-1, self.d_in)
            epoch += 1

    def _fill(self, leftover_ND: np.ndarray) -> np.ndarray:
        """Leftover tokens + the next ``shuffle_chunks`` chunks, shuffled (fp16). Stops reading early
        once the buffer holds every token still to be yielded, so no chunk is read needlessly."""
        need = self.n_tokens - self._yielded
        parts = [leftover_ND]
        held = leftover_ND.shape[0]
        for _ in range(self.shuffle_chunks):
            if held >= need:
                break
            parts.append(next(self._chunk_iter))
            held += parts[-1].shape[0]
        buf_ND = np.concatenate(parts, axis=0)
        return buf_ND[self._shuffle_rng.permutation(buf_ND.shape[0])]

    def peek_buffer(self) -> np.ndarray:
        """The first shuffled buffer (fp16 ``[N, D]``), read once and then also used for batches."""
        if self._yielded or self._pending_ND is not None:
            if self._pending_ND is None:
                raise RuntimeError("peek_buffer must be called before iteration starts")
            return self._pending_ND
        self._pending_ND = self._fill(np.zeros((0, self.d_in), np.float16))
        return self._pending_ND

    def _batches(self) -> Iterator[torch.Tensor]:
        buf_ND = np.zeros((0, self.d_in), np.float16)
        pos = 0
        while self._yielded < self.n_tokens:
            want = min(self.batch_size, self.n_tokens - self._yielded)
            if buf_ND.shape[0] - pos < want:
                if self._pending_ND is not None:
                    buf_ND, self._pending_ND = self._pending_ND, None
                else:
                    buf_ND = self._fill(buf_ND[pos:])
                pos = 0
                continue
            batch_ND = buf_ND[pos : pos + want]
            pos += want
            self._yielded += want
            yield torch.from_numpy(batch_ND.astype(np.float32))

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        return next(self._gen)


def token_batches(
    store_path: str | os.PathLike,
    split: str,
    token_kind: str,
    batch_size: int,
    seed: int,
    shuffle_chunks: int,
    n_tokens: int,
) -> TokenLoader:
    """Iterator of float32 ``[B, D]`` batches; see :class:`TokenLoader` (which it returns, so that
    ``bytes_read`` and ``chunks_read`` can be inspected)."""
    return TokenLoader(store_path, split, token_kind, batch_size, seed, shuffle_chunks, n_tokens)


# --------------------------------------------------------------------------------------------
# Training


@torch.no_grad()
def _log_row(
    step: int, tokens: int, loss: torch.Tensor, mse: torch.Tensor, l1: torch.Tensor, xn_BD: torch.Tensor,
    f_BF: torch.Tensor, last_fired_F: torch.Tensor, lr: float, l1_coeff: float,
) -> dict:  # fmt: skip
    var = ((xn_BD - xn_BD.mean(dim=0)) ** 2).sum(dim=1).mean()
    if step >= DEAD_WINDOW_BATCHES:
        dead = float((step - last_fired_F >= DEAD_WINDOW_BATCHES).float().mean())
    else:
        dead = float((last_fired_F == 0).float().mean())
    return {
        "step": step,
        "tokens": tokens,
        "loss": float(loss),
        "mse": float(mse),
        "l1": float(l1),
        "l0": float((f_BF > 0).sum(dim=1).float().mean()),
        "fvu": float(mse / var) if var > 0 else float("nan"),
        "dead_fraction": dead,
        "lr": float(lr),
        "l1_coeff": float(l1_coeff),
    }


def train(
    batches: Iterator[torch.Tensor],
    d_in: int,
    cfg: SAEConfig,
    init_sample_ND: torch.Tensor,
    device: str | torch.device = "cpu",
) -> tuple[ReluSAE, list[dict]]:
    """Train one SAE on ``batches`` (float32 ``[B, d_in]``, original units) and return it with its log.

    Training stops when ``batches`` ends or ``cfg.train_tokens`` tokens have been used.
    Log rows (every ``cfg.log_every`` steps and at the last step): ``step`` (1-based), ``tokens`` seen,
    ``loss``, ``mse`` (normalised units, summed over d, mean over batch), ``l1`` (mean Σ|f|), ``l0``
    (mean active features per token), ``fvu`` (of the batch, against the batch mean), ``dead_fraction``
    (features that fired on none of the last ``DEAD_WINDOW_BATCHES`` batches, or none since the start
    before that many steps), ``lr`` and ``l1_coeff`` (the values used at that step).
    """
    d_sae = d_in * cfg.expansion
    sae = ReluSAE(d_in, d_sae)
    sae.initialise(init_sample_ND, cfg.seed)
    sae.to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr)
    n_steps = math.ceil(cfg.train_tokens / cfg.batch_size)
    last_fired_F = torch.zeros(d_sae, dtype=torch.long, device=device)  # step of last firing (0 = never)
    log: list[dict] = []
    tokens = 0
    step = 0
    for x_BD in batches:
        step += 1
        x_BD = x_BD.to(device, torch.float32)
        lr = cfg.lr * min(1.0, step / cfg.lr_warmup_steps) if cfg.lr_warmup_steps else cfg.lr
        l1_ramp = min(1.0, (step - 1) / cfg.l1_warmup_steps) if cfg.l1_warmup_steps else 1.0
        l1_coeff = cfg.l1_coeff * l1_ramp
        for group in opt.param_groups:
            group["lr"] = lr
        xn_BD = x_BD * sae.scale
        f_BF = torch.relu((xn_BD - sae.b_dec_D) @ sae.W_enc_DF + sae.b_enc_F)
        xhat_BD = f_BF @ sae.W_dec_FD + sae.b_dec_D
        mse = ((xhat_BD - xn_BD) ** 2).sum(dim=1).mean()
        l1 = f_BF.sum(dim=1).mean()  # f >= 0, so |f| = f
        loss = mse + l1_coeff * l1
        if not torch.isfinite(loss):
            raise ValueError(
                f"SAE loss became {loss.item()} at step {step}; lower lr or check the activations"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_parallel_grad()
        opt.step()
        sae.normalise_decoder()
        tokens += x_BD.shape[0]
        with torch.no_grad():
            last_fired_F[(f_BF > 0).any(dim=0)] = step
        if step % cfg.log_every == 0 or step == n_steps or tokens >= cfg.train_tokens:
            log.append(_log_row(step, tokens, loss, mse, l1, xn_BD, f_BF, last_fired_F, lr, l1_coeff))
            logger.info(
                "step %d/%d tokens %d loss %.4g mse %.4g l0 %.1f fvu %.4f dead %.3f",
                step, n_steps, tokens, *(log[-1][k] for k in ("loss", "mse", "l0", "fvu", "dead_fraction")),
            )  # fmt: skip
        if tokens >= cfg.train_tokens:
            break
    if step == 0:
        raise ValueError("no batches to train on")
    if not log or log[-1]["step"] != step:  # batches ran out before train_tokens: still log the last step
        log.append(_log_row(step, tokens, loss, mse, l1, xn_BD, f_BF, last_fired_F, lr, l1_coeff))
        logger.warning("batches ran out after %d steps, %d of %d tokens", step, tokens, cfg.train_tokens)
    sae.cpu()
    sae.cfg = {"d_in": d_in, "d_sae": d_sae, **cfg.to_dict()}
    return sae, log


def sae_cfg_json(sae: ReluSAE, cfg: SAEConfig, meta: dict, store_attrs: dict) -> dict:
    """The cfg.json dict: SAELens-style fields, every SAEConfig field, and ``meta``."""
    model = meta.get("model", store_attrs.get("model"))
    out = {
        "d_in": int(sae.d_in),
        "d_sae": int(sae.d_sae),
        "architecture": ARCHITECTURE,
        "activation_fn": "relu",
        "normalisation": {
            "kind": "scalar",
            "scale": float(sae.scale),
            "note": "encode multiplies inputs by scale; b_dec and features are in scaled units; "
            "decode divides by scale",
        },
        "dtype": "float32",
        "hook": {
            "model": model,
            "layer": meta.get("layer", store_attrs.get("layer")),
            "tokens": cfg.token_kind,
        },
        **cfg.to_dict(),
        "meta": meta,
    }
    return json.loads(json.dumps(out))  # plain JSON types only (fails loudly on NumPy scalars etc.)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def train_from_store(
    store_path: str | os.PathLike,
    split: str,
    cfg: SAEConfig,
    out_dir: str | os.PathLike,
    meta: dict,
    device: str | torch.device = "cpu",
) -> Path:
    """Train one SAE on ``split`` of the store and write ``sae.safetensors``, ``cfg.json`` and
    ``train_log.csv`` into ``out_dir``; returns the safetensors path.

    The init sample (for ``scale`` and ``b_dec``) is the first ``INIT_SAMPLE_TOKENS`` tokens of the
    loader's first shuffled buffer, so the store is read once. ``sae.safetensors`` is written last
    and renamed into place, so a killed job leaves none.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loader = token_batches(
        store_path, split, cfg.token_kind, cfg.batch_size, cfg.seed, cfg.shuffle_chunks, cfg.train_tokens
    )
    init_sample_ND = torch.from_numpy(loader.peek_buffer()[:INIT_SAMPLE_TOKENS].astype(np.float32))
    sae, log = train(loader, loader.d_in, cfg, init_sample_ND, device=device)
    store_attrs = dict(open_store(store_path).attrs)
    meta = {"store": str(store_path), "split": split, **meta}
    meta.setdefault("dataset", store_attrs.get("dataset"))
    meta["bytes_read"] = int(loader.bytes_read)
    cfg_json = sae_cfg_json(sae, cfg, meta, store_attrs)
    sae.cfg = cfg_json

    tmp_log = out_dir / f".{LOG_FILE}.partial-{os.getpid()}"
    with open(tmp_log, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(log)
    os.replace(tmp_log, out_dir / LOG_FILE)
    _atomic_write_text(out_dir / CFG_FILE, json.dumps(cfg_json, indent=2, sort_keys=True) + "\n")
    final = out_dir / WEIGHTS_FILE
    tmp = out_dir / f".{WEIGHTS_FILE}.partial-{os.getpid()}"
    save_file(sae.state_dict_saelens(), str(tmp), metadata={"architecture": ARCHITECTURE})
    os.replace(tmp, final)
    logger.info("wrote %s (%d steps, %d tokens, %d bytes read)", final, log[-1]["step"], log[-1]["tokens"],
                loader.bytes_read)
    return final


def load(path: str | os.PathLike) -> torch.nn.Module:
    """Load any SAE this project writes, of every architecture (the sweep trainer's and this module's
    checkpoints), from its directory or its ``sae.safetensors`` and the ``cfg.json`` beside it: a module
    with ``encode(x_BD) -> f_BF``, ``decode(f_BF) -> x̂_BD`` (original units), ``forward`` giving both,
    and ``cfg`` (:func:`vitsae.sweep.load`)."""
    from vitsae.sweep import load as load_any  # vitsae.sweep imports this module

    return load_any(path)
