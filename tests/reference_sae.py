"""The reference SAE: ReLU + L1 with unit-norm decoder rows, in plain PyTorch.

Conventions (so that L1 coefficients can be compared with other tools)
----------------------------------------------------------------------
* **Scalar input normalisation.** Inputs are multiplied by one scalar ``scale`` chosen on a
  sample of training tokens so that ``E‖(x − mean)·scale‖² = d_in`` (``input_norm="centred"``: the
  spread sets the units, not the offset) or ``E‖x·scale‖² = d_in`` (``"raw"``: SAELens'
  ``expected_average_only_in``; Anthropic's April 2024 update). ``b_dec``, ``b_enc`` and all feature activations live in these
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
  linearly to ``lr`` over ``lr_warmup_steps``, stays constant, and falls linearly over the last
  ``lr_decay_steps`` (to ``lr/lr_decay_steps`` at the last step).
* **Init.** Decoder rows are seeded random unit vectors, ``W_enc = enc_init_scale · W_dec.T``, ``b_enc = 0`` and
  ``b_dec`` = the mean of the normalised init sample. ReLU+L1 fails to recover dictionaries on
  data with per-dimension offsets (as ViT activations have) without the latter (shared/FACTS.md).

This is the plain-PyTorch reference (one SAE, ``torch.optim.Adam``, no stacking) that the stacked
trainer (:mod:`vitsae.sae.train`) is checked against, bitwise; it is not part of the package.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

logger = logging.getLogger("reference_sae")

LOG_FIELDS = ("step", "tokens", "loss", "mse", "l1", "l0", "fvu", "dead_fraction", "lr", "l1_coeff")
#: A feature counts as dead in the training log when it has not fired in this many consecutive
#: batches (fewer at the start of training: then "since step 0").
DEAD_WINDOW_BATCHES = 10


@dataclass(frozen=True)
class SAEConfig:
    """Hyperparameters of one SAE. Defaults are tuned for the demo (random-weight ViTs, d=384/768,
    ~200K training tokens, i.e. ~200 steps of 1024) and work on longer runs; see the module docstring
    for the loss convention that ``l1_coeff`` refers to."""

    expansion: int = 8
    l1_coeff: float = 3.0
    lr: float = 4e-3
    lr_warmup_steps: int = 10
    lr_decay_steps: int = 0
    l1_warmup_steps: int = 50
    batch_size: int = 1024
    train_tokens: int = 200_000
    seed: int = 0
    token_kind: str = "patches"
    shuffle_chunks: int = 8
    log_every: int = 20
    enc_init_scale: float = 1.0
    input_norm: str = "centred"

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
    def initialise(
        self,
        init_sample_ND: torch.Tensor,
        seed: int,
        enc_init_scale: float = 1.0,
        input_norm: str = "centred",
    ) -> None:
        """Set ``scale`` (module docstring), ``b_dec`` (normalised sample mean), seeded weights."""
        sample_ND = init_sample_ND.to(torch.float64)
        spread_ND = sample_ND - sample_ND.mean(dim=0) if input_norm == "centred" else sample_ND
        mean_sq = float((spread_ND**2).sum(dim=1).mean())
        if not math.isfinite(mean_sq) or mean_sq <= 0:
            raise ValueError(f"init sample has mean squared norm {mean_sq}; cannot normalise")
        scale = math.sqrt(self.d_in / mean_sq)
        self.scale.fill_(scale)
        self.b_dec_D.copy_((sample_ND * scale).mean(dim=0).to(torch.float32))
        gen = torch.Generator().manual_seed(int(seed))
        W_dec_FD = torch.randn(self.d_sae, self.d_in, generator=gen, dtype=torch.float32)
        W_dec_FD /= W_dec_FD.norm(dim=1, keepdim=True)
        self.W_dec_FD.copy_(W_dec_FD)
        self.W_enc_DF.copy_(W_dec_FD.T * enc_init_scale)
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
    sae.initialise(init_sample_ND, cfg.seed, cfg.enc_init_scale, cfg.input_norm)
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
        if cfg.lr_decay_steps:  # a linear fall over the last lr_decay_steps steps
            lr = min(lr, cfg.lr * (n_steps - step + 1) / cfg.lr_decay_steps)
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
