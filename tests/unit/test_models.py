import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from vitsae.data.models import (
    NotAViTError,
    WeightsUnavailableError,
    _check_loaded,
    load_model,
    model_shape,
    state_digest,
)
from vitsae.data.settings import ModelSpec

SPECS = [
    ModelSpec("dinov2-s14", "dinov2", "vit_small_patch14_dinov2.lvd142m", False, 56),
    ModelSpec("dinov2-s14-reg", "dinov2", "vit_small_patch14_reg4_dinov2.lvd142m", False, 56),
    ModelSpec("clip-b16", "clip", "ViT-B-16-quickgelu", False, 64),
    # family timm: any timm ViT by name and tag (a supervised ViT-Ti/16 here)
    ModelSpec("sup-ti16", "timm", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", False, 64),
]


def images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (48 + 8 * i, 80, 3), dtype=np.uint8)) for i in range(n)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_block_output_equals_forward_hook_and_layout(spec):
    torch.manual_seed(0)
    vm = load_model(spec)
    x = torch.stack([vm.transform(im) for im in images(3)])
    assert x.shape == (3, 3, spec.image_size, spec.image_size)
    layer = 5
    got = vm.block_output(x, layer)
    seen = {}
    hooks = [
        b.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o))
        for k, b in enumerate(vm.blocks())
    ]
    with torch.no_grad():
        vm.module(x)
    for h in hooks:
        h.remove()
    torch.testing.assert_close(got, seen[layer], rtol=0, atol=0)
    lay = vm.token_layout
    grid = spec.image_size // (14 if spec.family == "dinov2" else 16)
    assert lay["grid"] == [grid, grid]
    assert lay["n_registers"] == (4 if "reg4" in spec.arch else 0)
    assert lay["n_prefix"] == 1 + lay["n_registers"]
    assert got.shape == (3, lay["n_tokens"], vm.d_model) and lay["n_tokens"] == lay["n_prefix"] + grid * grid


@pytest.mark.parametrize("spec", SPECS[:1] + SPECS[2:], ids=lambda s: s.name)
def test_block_output_stops_at_the_layer(spec):
    vm = load_model(spec)
    called = []
    hooks = [
        b.register_forward_hook(lambda m, i, o, k=k: called.append(k)) for k, b in enumerate(vm.blocks())
    ]
    vm.block_output(torch.zeros(1, 3, spec.image_size, spec.image_size), 2)
    for h in hooks:
        h.remove()
    assert called == [0, 1, 2]


def test_preprocessing_is_the_models_own():
    vm = load_model(SPECS[0])
    assert vm.preprocessing["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert vm.preprocessing["interpolation"] == "bicubic"
    clip = load_model(SPECS[2])
    assert clip.preprocessing["mean"] == pytest.approx([0.48145466, 0.4578275, 0.40821073])
    # the CPU transform resizes the short side and centre-crops to the configured size
    im = images(1)[0]
    x = clip.transform(im)
    ref = torch.from_numpy(
        np.asarray(im.resize((106, 64), Image.BICUBIC).crop((21, 0, 85, 64)), dtype=np.float32)
    )
    ref = (
        ref.permute(2, 0, 1) / 255 - torch.tensor(clip.preprocessing["mean"])[:, None, None]
    ) / torch.tensor(clip.preprocessing["std"])[:, None, None]
    assert x.shape == (3, 64, 64)
    assert (x - ref).abs().mean() < 0.05  # PIL vs torchvision antialiasing differ slightly, layout must not


def test_unknown_layer_is_named():
    vm = load_model(SPECS[0])
    with pytest.raises(
        ValueError, match=r"has blocks 0..11; layer 12 does not exist; fix models.dinov2-s14.layers"
    ):
        vm.block_output(torch.zeros(1, 3, 56, 56), 12)


@pytest.mark.parametrize(
    "spec",
    [
        SPECS[3],
        # a timm ViT with 4 registers, loaded as family timm: registers come from the model itself
        ModelSpec("reg-s14", "timm", "vit_small_patch14_reg4_dinov2.lvd142m", False, 56),
    ],
    ids=lambda s: s.name,
)
def test_timm_family_block_output_is_timms_own_blocks_in_the_documented_layout(spec):
    vm = load_model(spec)
    m = vm.module
    x = torch.stack([vm.transform(im) for im in images(2)])
    layer = 4
    got = vm.block_output(x, layer)
    with torch.no_grad():  # timm's own path: embed, position, pre-norm, then the blocks up to `layer`
        ref = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
        for block in m.blocks[: layer + 1]:
            ref = block(ref)
        (patches_BDHW,) = m.forward_intermediates(
            x, indices=[layer], norm=False, output_fmt="NCHW", intermediates_only=True
        )
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    n_reg = 4 if "reg4" in spec.arch else 0
    side = spec.image_size // m.patch_embed.patch_size[0]
    assert vm.n_registers == n_reg == m.num_prefix_tokens - 1
    assert vm.token_layout == {"n_tokens": 1 + n_reg + side * side, "n_prefix": 1 + n_reg, "n_registers": n_reg,
                               "cls_index": 0, "grid": [side, side]}  # fmt: skip
    assert got.shape == (2, 1 + n_reg + side * side, m.embed_dim)
    # token 0 is CLS (the class token plus its position, through the blocks); the patches are row-major
    torch.testing.assert_close(
        got[:, 1 + n_reg :].reshape(2, side, side, -1), patches_BDHW.permute(0, 2, 3, 1)
    )
    assert not torch.allclose(got[:, 0], got[:, 1 + n_reg])
    # the rest of the model from that block's output is the whole model
    torch.testing.assert_close(vm.finish(got, layer), m(x), rtol=1e-5, atol=1e-5)
    shape = model_shape(spec.family, spec.arch, spec.image_size)
    assert (shape.n_tokens, shape.n_prefix, shape.d_model, shape.n_blocks) == (
        got.shape[1],
        1 + n_reg,
        m.embed_dim,
        12,
    )


def test_timm_family_preprocessing_is_the_tags_own():
    vm = load_model(SPECS[3])  # AugReg ViT-Ti/16: mean = std = 0.5, crop 0.9, bicubic (timm's data config)
    assert vm.preprocessing == {
        "library": "timm", "input_size": [3, 64, 64], "interpolation": "bicubic", "crop_pct": 0.9,
        "crop_mode": "center", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
    }  # fmt: skip
    assert vm.weights["source"] == "random" and vm.weights["arch"] == SPECS[3].arch


@pytest.mark.parametrize(
    "family,arch,message",
    [
        ("timm", "resnet18", "timm model 'resnet18' builds a ResNet, not a timm VisionTransformer"),
        (
            "timm",
            "vit_base_patch16_siglip_224",
            "timm model 'vit_base_patch16_siglip_224' has no class token",
        ),
        (
            "clip",
            "RN50",
            "open_clip model 'RN50' has a ModifiedResNet image tower, not open_clip's VisionTransformer",
        ),
        ("dinov2", "vit_tiny_patch16_224", "family dinov2 needs a timm DINOv2 architecture"),
    ],
)
def test_a_model_that_is_not_a_vit_with_a_patch_grid_is_refused_by_name(family, arch, message):
    with pytest.raises(NotAViTError, match=f"^model 'm': .*{message}"):
        load_model(ModelSpec("m", family, arch, False, 64))
    with pytest.raises(NotAViTError, match=message) as e:
        model_shape(family, arch, 224)
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    "spec,repo",
    [
        (
            ModelSpec("dinov2-b14", "dinov2", "vit_base_patch14_dinov2.lvd142m", True, 224),
            "timm/vit_base_patch14_dinov2.lvd142m",
        ),
        (
            ModelSpec("clip-b16", "clip", "ViT-B-16-quickgelu", "openai", 224),
            "timm/vit_base_patch16_clip_224.openai",
        ),
        (
            ModelSpec("mae-b16", "timm", "vit_base_patch16_224.mae", True, 224),
            "timm/vit_base_patch16_224.mae",
        ),
    ],
    ids=["dinov2", "clip", "timm"],
)
def test_pretrained_without_network_fails_at_once_naming_model_and_repo(spec, repo):
    with pytest.raises(WeightsUnavailableError) as e:
        load_model(spec)
    msg = str(e.value)
    assert f"model '{spec.name}'" in msg and repo in msg
    assert "pretrained: false" in msg and "HF_HOME" in msg


def test_state_digest_is_the_documented_hash_of_the_state_dict():
    m = torch.nn.Module()
    m.w = torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3).t())  # not contiguous
    m.register_buffer("a_scale", torch.tensor(0.5, dtype=torch.float64))  # 0-d
    m.register_buffer("n", torch.tensor([1, -2], dtype=torch.int64))
    h = hashlib.sha256()
    for key, dtype, shape, arr in [
        ("a_scale", "torch.float64", "()", np.array(0.5, dtype=np.float64)),
        ("n", "torch.int64", "(2,)", np.array([1, -2], dtype=np.int64)),
        ("w", "torch.float32", "(3, 2)", np.array([[0, 3], [1, 4], [2, 5]], dtype=np.float32)),
    ]:
        h.update(key.encode() + b"\0" + dtype.encode() + shape.encode() + arr.tobytes())
    assert state_digest(m) == "sha256:" + h.hexdigest()


def test_random_weights_are_described_by_seed_and_state_digest():
    a, b = load_model(SPECS[0]), load_model(SPECS[0])
    digest = state_digest(a.module)
    assert a.weights == {
        "source": "random",
        "arch": "vit_small_patch14_dinov2.lvd142m",
        "init_seed": 0,
        "state_sha256": digest,
    }
    assert b.weights == a.weights and state_digest(b.module) == digest
    other = load_model(
        ModelSpec("dinov2-s14", "dinov2", "vit_small_patch14_dinov2.lvd142m", False, 56, init_seed=1)
    )
    assert other.weights["init_seed"] == 1 and other.weights["state_sha256"] != digest
    with torch.no_grad():  # one element, one ulp
        w = b.module.blocks[3].mlp.fc1.weight.view(-1)
        w[7] = torch.nextafter(w[7], torch.tensor(float("inf")))
    assert state_digest(b.module) != digest
    clip = load_model(SPECS[2])
    assert clip.weights == {
        "source": "random",
        "arch": "ViT-B-16-quickgelu",
        "init_seed": 0,
        "state_sha256": state_digest(clip.module),
    }
    json.dumps(a.weights)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_random_weights_are_the_librarys_own_init_from_the_seed(spec):
    """Checking the architecture first (on the meta device) draws nothing: the weights are those the library
    builds right after ``torch.manual_seed(init_seed)``, as the stores' recorded digests assume."""
    import open_clip
    import timm

    torch.manual_seed(spec.init_seed)
    if spec.family == "clip":
        ref = open_clip.create_model(spec.arch, pretrained=None, force_image_size=spec.image_size).visual
    else:
        ref = timm.create_model(spec.arch, pretrained=False, img_size=spec.image_size, num_classes=0)
    assert load_model(spec).weights["state_sha256"] == state_digest(ref)


def test_check_loaded_refuses_a_file_the_module_does_not_hold(tmp_path):
    from safetensors.torch import save_file

    m = torch.nn.Linear(3, 2)
    path = str(tmp_path / "w.safetensors")
    save_file(
        {
            "visual.weight": m.weight.detach().clone(),
            "visual.bias": m.bias.detach().clone(),
            "visual.extra": torch.zeros(4),
        },
        path,
    )
    assert _check_loaded(m, path, prefix="visual.") == 2
    with torch.no_grad():
        m.bias[1] += 1e-3
    with pytest.raises(RuntimeError, match=r"the model's 'bias' differs from 'visual.bias'"):
        _check_loaded(m, path, prefix="visual.")
    with pytest.raises(RuntimeError, match="no tensor of .* is in the model"):
        _check_loaded(m, path)  # no prefix: no names in common


# Runs with huggingface_hub reading a private cache: it reads HF_HUB_CACHE / HF_HUB_OFFLINE at import.
_LOAD_FROM_CACHE = textwrap.dedent("""
    import json, sys
    from safetensors.torch import save_file
    from vitsae.data.models import WeightsUnavailableError, load_model, state_digest
    from vitsae.data.settings import ModelSpec

    vm = load_model(ModelSpec("dinov2-s14", "dinov2", "vit_small_patch14_dinov2.lvd142m", True, 56))
    save_file({"qkv": vm.module.state_dict()["blocks.0.attn.qkv.weight"].contiguous()}, sys.argv[1])
    out = {"weights": vm.weights, "state": state_digest(vm.module)}
    try:
        load_model(ModelSpec("dinov2-b14", "dinov2", "vit_base_patch14_dinov2.lvd142m", True, 56))
    except WeightsUnavailableError as e:
        out["error"] = str(e)
    print(json.dumps(out))
""")


def test_pretrained_weights_from_the_hub_cache_are_identified(tmp_path):
    import timm
    from safetensors.torch import load_file, save_file

    repo_id = "timm/vit_small_patch14_dinov2.lvd142m"
    assert (
        timm.create_model("vit_small_patch14_dinov2.lvd142m", pretrained=False).pretrained_cfg["hf_hub_id"]
        == repo_id
    )
    torch.manual_seed(1234)
    # default image size: the same shapes as the hub's model.safetensors (pos_embed for 518 px)
    model = timm.create_model("vit_small_patch14_dinov2.lvd142m", pretrained=False)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    # the real cache layout: snapshots/<commit>/<file> -> ../../blobs/<sha256 of file>, refs/main = <commit>.
    # timm (hf_hub_download, offline) needs nothing else: it resolves refs/main and opens model.safetensors.
    repo = tmp_path / "hf" / "hub" / "models--timm--vit_small_patch14_dinov2.lvd142m"
    rev = "0123456789abcdef0123456789abcdef01234567"
    (repo / "blobs").mkdir(parents=True)
    staged = repo / "blobs" / "staged"
    save_file(sd, str(staged))
    file_sha = hashlib.sha256(staged.read_bytes()).hexdigest()
    staged.rename(repo / "blobs" / file_sha)
    (repo / "snapshots" / rev).mkdir(parents=True)
    (repo / "snapshots" / rev / "model.safetensors").symlink_to(f"../../blobs/{file_sha}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TIMM_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hf" / "hub"))
    out_file = tmp_path / "qkv.safetensors"
    proc = subprocess.run(
        [sys.executable, "-c", _LOAD_FROM_CACHE, str(out_file)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["weights"] == {
        "source": "huggingface",
        "repo_id": repo_id,
        "revision": rev,
        "filename": "model.safetensors",
        "file_sha256": f"sha256:{file_sha}",
        "state_sha256": out["state"],
    }
    # the cache file really was loaded: a tensor whose shape does not depend on the image size
    assert torch.equal(load_file(str(out_file))["qkv"], sd["blocks.0.attn.qkv.weight"])
    random_same_arch = load_model(SPECS[0])
    assert out["state"] != random_same_arch.weights["state_sha256"]
    msg = out["error"]
    assert "model 'dinov2-b14'" in msg and "timm/vit_base_patch14_dinov2.lvd142m" in msg
    assert "pretrained: false" in msg and f"HF_HOME={tmp_path / 'hf'}" in msg
