"""Vision models: DINOv2 and any other timm ViT (timm), CLIP (open_clip), run up to one block, with their
token layout.

Families (``models.<name>.family``): ``dinov2``, a timm DINOv2 (``vit_*_dinov2*``); ``timm``, any timm
``VisionTransformer`` with a class token and a fixed patch grid, by name and pretrained tag (e.g. the
baselines ``vit_base_patch16_224.augreg2_in21k_ft_in1k`` (supervised), ``vit_base_patch16_224.mae``,
``vit_base_patch16_224.dino`` (DINO v1)); ``clip``, any open_clip model whose image tower is open_clip's
own ``VisionTransformer`` (``ViT-B-16-quickgelu``, ...). A timm model is run with its own preprocessing
(timm's data config: mean, std, interpolation, crop) at the configured image size, and its grid and
register count are read off the model. Any other architecture (a ResNet, ConvNeXt, a timm ViT without a
class token) is refused with a :class:`ValueError` that names it.

``load_model(spec)`` returns a :class:`VisionModel` whose ``transform`` is the model's own
preprocessing at the configured image size and whose ``block_output(x, layer)`` runs the model
only up to transformer block ``layer`` (0-based) and returns that block's output, all tokens,
``[batch, tokens, d]``, in the order CLS, registers, patches (row-major patch grid).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch

from vitsae.data.settings import ModelSpec

log = logging.getLogger("vitsae.data.models")

HF_HOST = "huggingface.co"


#: Which library builds each family's network.
FAMILY_LIBRARY = {"dinov2": "timm", "timm": "timm", "clip": "open_clip"}


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but can neither be found in the cache nor downloaded."""


@dataclass
class VisionModel:
    spec: ModelSpec
    module: torch.nn.Module
    transform: object  # PIL image -> float tensor [3, H, W]
    preprocessing: dict
    n_blocks: int
    n_registers: int
    grid: tuple[int, int]
    d_model: int
    weights: (
        dict  # which weights: hub repo, revision, file and digests, or random (arch, seed); see load_model
    )

    @property
    def library(self) -> str:
        return FAMILY_LIBRARY[self.spec.family]

    @property
    def token_layout(self) -> dict:
        n_prefix = 1 + self.n_registers
        return {
            "n_tokens": n_prefix + self.grid[0] * self.grid[1],
            "n_prefix": n_prefix,
            "n_registers": self.n_registers,
            "cls_index": 0,
            "grid": list(self.grid),
        }

    def check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.n_blocks:
            raise ValueError(
                f"model '{self.spec.name}' ({self.spec.arch}) has blocks 0..{self.n_blocks - 1}; "
                f"layer {layer} does not exist; fix models.{self.spec.name}.layers in the config"
            )

    @torch.inference_mode()
    def block_output(self, x_BCHW: torch.Tensor, layer: int) -> torch.Tensor:
        """Output of block ``layer`` for all tokens, ``[B, T, D]``; later blocks are not run."""
        self.check_layer(layer)
        if self.library == "timm":
            ((patches_BPD, prefix_BRD),) = self.module.forward_intermediates(
                x_BCHW,
                indices=[layer],
                return_prefix_tokens=True,
                norm=False,
                stop_early=True,
                output_fmt="NLC",
                intermediates_only=True,
            )
        else:
            out = self.module.forward_intermediates(
                x_BCHW,
                indices=[layer],
                stop_early=True,
                intermediates_only=True,
                output_fmt="NLC",
                output_extra_tokens=True,
            )
            (patches_BPD,) = out["image_intermediates"]
            (prefix_BRD,) = out["image_intermediates_prefix"]
        return torch.cat([prefix_BRD, patches_BPD], dim=1)

    @torch.inference_mode()
    def finish(self, acts_BTD: torch.Tensor, layer: int) -> torch.Tensor:
        """The model's final image representation ``[B, D_out]`` from block ``layer``'s output (all tokens,
        as :meth:`block_output` gives them): blocks ``layer + 1`` to the last, then the model's own head.
        timm (built without classifier): ``norm``, then ``forward_head`` (the model's own pooling: the CLS
        token, or the mean of the patches with ``fc_norm`` where the model pools so); CLIP (open_clip):
        ``_pool`` (``ln_post`` and the CLS token, in the model's order) and ``proj``, the image embedding.
        ``finish(block_output(x, l), l)`` is the full forward pass, ``module(x)``."""
        self.check_layer(layer)
        if acts_BTD.shape[1] != self.token_layout["n_tokens"]:
            raise ValueError(
                f"model '{self.spec.name}' has {self.token_layout['n_tokens']} tokens per image, "
                f"got {acts_BTD.shape[1]}: finish() needs all tokens of block {layer}'s output"
            )
        param = next(self.module.parameters())
        x_BTD = acts_BTD.to(device=param.device, dtype=param.dtype)
        if self.library == "timm":
            for block in self.module.blocks[layer + 1 :]:
                x_BTD = block(x_BTD)
            return self.module.forward_head(self.module.norm(x_BTD))
        transformer = self.module.transformer
        x = x_BTD if transformer.batch_first else x_BTD.transpose(0, 1)
        for block in transformer.resblocks[layer + 1 :]:
            x = block(x, attn_mask=None)
        pooled_BD, _ = self.module._pool(x if transformer.batch_first else x.transpose(0, 1))
        return pooled_BD if self.module.proj is None else pooled_BD @ self.module.proj

    def blocks(self) -> torch.nn.ModuleList:
        """The transformer blocks, for forward hooks (tests compare hooks to ``block_output``)."""
        if self.library == "timm":
            return self.module.blocks
        return self.module.transformer.resblocks


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection((HF_HOST, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _cached(repo_id: str, filenames: list[str]) -> tuple[str, str] | None:
    """``(filename, path)`` of the first of ``filenames`` in the hub cache at ``refs/main``, else None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        path = try_to_load_from_cache(repo_id, filename)
        if isinstance(path, str):
            return filename, path
    return None


def _need_weights(spec: ModelSpec, repo_id: str, filenames: list[str]) -> tuple[str, str] | None:
    """Fail at once, with what to do, when pretrained weights are neither cached nor downloadable."""
    cached = _cached(repo_id, filenames)
    if cached is None and not _hub_reachable():
        raise WeightsUnavailableError(
            f"model '{spec.name}' ({spec.family} {spec.arch}, pretrained={spec.pretrained!r}) needs weights from "
            f"the Hugging Face hub repository '{repo_id}', which is not in the local cache "
            f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}) and {HF_HOST} cannot be reached. "
            f"On a machine with internet run `huggingface-cli download {repo_id}` and copy the cache here "
            f"(or point HF_HOME at a shared copy), or set models.{spec.name}.pretrained: false for random weights."
        )
    if cached is not None:
        # Use the cache, never wait on the network. huggingface_hub reads the variable once, at import,
        # into constants.HF_HUB_OFFLINE (what is_offline_mode() returns), so set both.
        os.environ["HF_HUB_OFFLINE"] = "1"
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True
    return cached


def _file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


def state_digest(module: torch.nn.Module) -> str:
    """``"sha256:<hex>"`` over the state dict: per key (sorted) its name, dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for key, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(key.encode("utf-8"))
        h.update(b"\0")
        h.update(str(t.dtype).encode("utf-8"))
        h.update(str(tuple(t.shape)).encode("utf-8"))
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())  # reshape: a 0-d tensor cannot be viewed
    return f"sha256:{h.hexdigest()}"


def _file_tensors(path: str) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for each tensor of a checkpoint file, read lazily where the format allows."""
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            names = f.keys()  # a safe_open handle is not iterable
            for key in names:
                yield key, f.get_tensor(key)
        return
    sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    sd = sd.get("state_dict", sd)
    yield from ((k, v) for k, v in sd.items() if isinstance(v, torch.Tensor))


def _check_loaded(module: torch.nn.Module, path: str, prefix: str = "") -> int:
    """Raise unless the module holds the file's tensors: every file tensor ``prefix + name`` that the
    module has as ``name`` with the same shape (resampled position embeddings differ) must be equal,
    and there must be at least one. Returns how many were compared."""
    sd = module.state_dict()
    n = 0
    for key, t in _file_tensors(path):
        mine = sd.get(key[len(prefix) :]) if key.startswith(prefix) else None
        if mine is None or mine.shape != t.shape:
            continue
        if not torch.equal(mine.detach().cpu(), t.to(mine.dtype)):
            raise RuntimeError(
                f"the model's {key[len(prefix) :]!r} differs from {key!r} in {path}: "
                f"these are not the weights that were loaded"
            )
        n += 1
    if n == 0:
        raise RuntimeError(
            f"no tensor of {path} is in the model under the same name and shape: "
            f"cannot confirm these are the weights that were loaded"
        )
    return n


def _hub_weights(
    spec: ModelSpec,
    repo_id: str,
    filenames: list[str],
    before: tuple[str, str] | None,
    module: torch.nn.Module,
    prefix: str = "",
) -> dict:
    """Describe the hub file the just-built ``module`` was loaded from, after checking it holds that file."""
    found = _cached(repo_id, filenames)  # again: a download during creation fills the cache only now
    if found is None:
        raise RuntimeError(
            f"model '{spec.name}': pretrained weights were loaded but no {' or '.join(filenames)} "
            f"of '{repo_id}' is in the hub cache; cannot say which weights these are"
        )
    filename, path = found
    if before is not None and before != found:
        log.warning(
            "model '%s': the hub cache had %s before loading and %s after (the hub served a newer "
            "revision?); describing the latter",
            spec.name,
            before[1],
            path,
        )
    # try_to_load_from_cache gives <cache>/models--<org>--<name>/snapshots/<revision>/<filename> unresolved;
    # the file is normally a symlink to ../../blobs/<sha256>, so read the revision off this path, not the target.
    snapshot = Path(path).parents[len(PurePosixPath(filename).parts) - 1]
    repo_dir = "models--" + repo_id.replace("/", "--")
    if snapshot.parent.name != "snapshots" or snapshot.parent.parent.name != repo_dir:
        raise RuntimeError(
            f"model '{spec.name}': {path} is not in the hub cache layout "
            f"{repo_dir}/snapshots/<revision>/{filename}"
        )
    _check_loaded(module, path, prefix)
    return {
        "source": "huggingface",
        "repo_id": repo_id,
        "revision": snapshot.name,
        "filename": filename,
        "file_sha256": _file_sha256(path),
    }


def _random_weights(spec: ModelSpec) -> dict:
    return {"source": "random", "arch": spec.arch, "init_seed": int(spec.init_seed)}


def load_model(spec: ModelSpec, device: str | torch.device = "cpu") -> VisionModel:
    """Build the model of ``spec`` on ``device``. ``weights`` says which weights it holds, JSON-ready:

    pretrained: ``source: "huggingface"``, ``repo_id``, ``revision`` (the cache snapshot's commit), ``filename``,
    ``file_sha256`` (``tag`` too for open_clip); random: ``source: "random"``, ``arch``, ``init_seed``; both:
    ``state_sha256``, :func:`state_digest` of the module as loaded (on CPU, so the same for any device).
    """
    loaders = {"dinov2": _load_timm, "timm": _load_timm, "clip": _load_clip}
    if spec.family not in loaders:
        raise ValueError(f"model '{spec.name}': unknown family {spec.family!r} (dinov2, timm or clip)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.init_seed)  # random-weight models are a function of the spec
        vm = loaders[spec.family](spec)
    vm.weights = {**vm.weights, "state_sha256": state_digest(vm.module)}
    vm.module.to(device).eval()
    return vm


def _load_timm(spec: ModelSpec) -> VisionModel:
    """A timm ViT (family dinov2 or timm) at ``spec.image_size``, without classifier, with timm's own
    preprocessing for it; its registers are the prefix tokens after the class token."""
    import timm
    from timm.data import create_transform, resolve_data_config

    probe = _timm_vit(spec.family, spec.arch, f"model '{spec.name}'")  # on the meta device: fails fast
    weights = _random_weights(spec)
    if spec.pretrained:
        repo_id = probe.pretrained_cfg.get("hf_hub_id")
        if not repo_id:
            raise ValueError(
                f"model '{spec.name}': timm has no Hugging Face hub weights for {spec.arch!r}; name a pretrained "
                f"tag that has them (timm.list_pretrained('{spec.arch.split('.')[0]}*')) or set "
                f"models.{spec.name}.pretrained: false"
            )
        # timm asks hf_hub_download for model.safetensors, then pytorch_model.bin, at refs/main
        filenames = ["model.safetensors", "pytorch_model.bin"]
        before = _need_weights(spec, repo_id, filenames)
    module = timm.create_model(
        spec.arch, pretrained=bool(spec.pretrained), img_size=spec.image_size, num_classes=0
    )
    if spec.pretrained:
        weights = _hub_weights(spec, repo_id, filenames, before, module)
    # timm's pretrained_cfg keeps the tag's input size after img_size=... (518 px for DINOv2): give the
    # size ourselves (FACTS.md); mean, std, interpolation and crop are the tag's own.
    data_cfg = resolve_data_config({"input_size": (3, spec.image_size, spec.image_size)}, model=module)
    transform = create_transform(**data_cfg, is_training=False)
    grid = tuple(module.patch_embed.grid_size)
    preprocessing = {
        "library": "timm",
        "input_size": list(data_cfg["input_size"]),
        "interpolation": data_cfg["interpolation"],
        "crop_pct": float(data_cfg["crop_pct"]),
        "crop_mode": data_cfg.get("crop_mode", "center"),
        "mean": [float(v) for v in data_cfg["mean"]],
        "std": [float(v) for v in data_cfg["std"]],
    }
    return VisionModel(
        spec,
        module,
        transform,
        preprocessing,
        n_blocks=len(module.blocks),
        n_registers=module.num_prefix_tokens - 1,
        grid=grid,
        d_model=module.embed_dim,
        weights=weights,
    )


def _load_clip(spec: ModelSpec) -> VisionModel:
    import open_clip

    _clip_vit(spec.arch, f"model '{spec.name}'")  # on the meta device: fails fast
    tag = None
    weights = _random_weights(spec)
    if spec.pretrained:
        tag = "openai" if spec.pretrained is True else str(spec.pretrained)
        pcfg = open_clip.get_pretrained_cfg(spec.arch, tag)
        if not pcfg:
            raise ValueError(
                f"model '{spec.name}': open_clip has no pretrained tag {tag!r} for {spec.arch}; "
                f"known: {open_clip.list_pretrained_tags_by_model(spec.arch)}"
            )
        repo_id = pcfg.get("hf_hub", "").rstrip("/")
        filenames = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        before = _need_weights(spec, repo_id, filenames)
    model, _, preprocess = open_clip.create_model_and_transforms(
        spec.arch, pretrained=tag, force_image_size=spec.image_size
    )
    visual = model.visual
    if spec.pretrained:
        weights = {**_hub_weights(spec, repo_id, filenames, before, visual, prefix="visual."), "tag": tag}
    norm = next(t for t in preprocess.transforms if type(t).__name__ == "Normalize")
    resize = next(t for t in preprocess.transforms if type(t).__name__ == "Resize")
    preprocessing = {
        "library": "open_clip",
        "input_size": [3, spec.image_size, spec.image_size],
        "interpolation": str(resize.interpolation.value),
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": [float(v) for v in norm.mean],
        "std": [float(v) for v in norm.std],
    }
    grid = tuple(visual.grid_size)
    return VisionModel(
        spec,
        visual,
        preprocess,
        preprocessing,
        n_blocks=len(visual.transformer.resblocks),
        n_registers=0,
        grid=grid,
        d_model=visual.transformer.width,
        weights=weights,
    )


# ---------------------------------------------------------------------------------------------
# Shapes without weights


class UnknownModelError(ValueError):
    """timm or open_clip has no architecture of that name."""


class NotAViTError(UnknownModelError):
    """The library knows the architecture, but it is not a ViT this package can run: no transformer
    blocks over a fixed patch grid with a class token in front."""


@dataclass(frozen=True)
class ModelShape:
    """What a model gives per image, known without its weights."""

    n_tokens: int  # all tokens per image (CLS, registers, patches)
    n_prefix: int
    n_patches: int
    d_model: int
    n_blocks: int


def _timm_vit(family: str, arch: str, where: str, image_size: int | None = None) -> torch.nn.Module:
    """The timm model ``arch`` built on the meta device (no weights, no download), at ``image_size``
    (None: its default), after checking that it is a ViT :class:`VisionModel` can run; else
    :class:`UnknownModelError` / :class:`NotAViTError` saying why, prefixed by ``where``."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    if not timm.is_model(arch) or ("." in arch and arch not in timm.list_pretrained(arch)):
        raise UnknownModelError(f"timm has no model {arch!r}")
    if family == "dinov2" and "dinov2" not in arch:
        raise NotAViTError(
            f"{where}: family dinov2 needs a timm DINOv2 architecture (e.g. vit_base_patch14_dinov2.lvd142m), "
            f"got {arch!r}; use family timm for another timm ViT"
        )
    # the meta device holds no weights; fork_rng: building must not move the random weights' generator
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        m = timm.create_model(arch, pretrained=False, num_classes=0)
        why = None
        if not isinstance(m, VisionTransformer):
            why = f"builds a {type(m).__name__}, not a timm VisionTransformer"
        elif getattr(m, "cls_token", None) is None:
            why = "has no class token (the token layout is CLS, registers, patches)"
        elif getattr(m.patch_embed, "grid_size", None) is None or getattr(m, "dynamic_img_size", False):
            why = "has no fixed patch grid"
        if why is not None:
            raise NotAViTError(
                f"{where}: timm model {arch!r} {why}; family {family} takes a ViT with a class token and a "
                f"fixed patch grid (e.g. vit_base_patch16_224.augreg2_in21k_ft_in1k, vit_base_patch16_224.mae)"
            )
        if image_size is not None:
            m = timm.create_model(arch, pretrained=False, img_size=image_size, num_classes=0)
    return m


def _clip_vit(arch: str, where: str, image_size: int | None = None) -> torch.nn.Module:
    """The image tower of open_clip's model ``arch`` built on the meta device, after checking that it is
    open_clip's own VisionTransformer; else :class:`UnknownModelError` / :class:`NotAViTError`."""
    import open_clip
    from open_clip.transformer import VisionTransformer

    if arch not in open_clip.list_models():
        raise UnknownModelError(f"open_clip has no model {arch!r}")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # open_clip warns "no pretrained weights loaded": we want none
    try:
        kwargs = {} if image_size is None else {"force_image_size": image_size}
        with torch.random.fork_rng(devices=[]):  # open_clip draws on the CPU generator even for "meta"
            v = open_clip.create_model(arch, pretrained=None, device="meta", **kwargs).visual
    finally:
        root.setLevel(level)
    if not isinstance(v, VisionTransformer):
        raise NotAViTError(
            f"{where}: open_clip model {arch!r} has a {type(v).__name__} image tower, not open_clip's "
            f"VisionTransformer; family clip takes open_clip ViTs (e.g. ViT-B-16-quickgelu). A tower built "
            f"from a timm model (SigLIP, ...) may load as family timm under its timm name"
        )
    return v


def model_shape(family: str, arch: str, image_size: int) -> ModelShape:
    """Token count, width and depth of a model, built on the meta device (no weights, no download,
    milliseconds once the library is imported). Raises :class:`UnknownModelError` for a name the
    library does not know and :class:`NotAViTError` for one that is not a ViT with a patch grid."""
    if FAMILY_LIBRARY.get(family) == "timm":
        m = _timm_vit(family, arch, f"family {family}", image_size)
        h, w = m.patch_embed.grid_size
        return ModelShape(m.num_prefix_tokens + h * w, m.num_prefix_tokens, h * w, m.embed_dim, len(m.blocks))
    if family != "clip":
        raise UnknownModelError(f"unknown model family {family!r} (dinov2, timm or clip)")
    v = _clip_vit(arch, f"family {family}", image_size)
    h, w = v.grid_size
    return ModelShape(1 + h * w, 1, h * w, v.transformer.width, len(v.transformer.resblocks))
