import numpy as np
import pytest
import torch
from PIL import Image

from vitsae.models import ModelSpec, WeightsUnavailableError, load_model

SPECS = [
    ModelSpec("dinov2-s14", "dinov2", "vit_small_patch14_dinov2.lvd142m", False, 56),
    ModelSpec("dinov2-s14-reg", "dinov2", "vit_small_patch14_reg4_dinov2.lvd142m", False, 56),
    ModelSpec("clip-b16", "clip", "ViT-B-16-quickgelu", False, 64),
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
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o)) for k, b in enumerate(vm.blocks())]
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
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: called.append(k)) for k, b in enumerate(vm.blocks())]
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
    ref = torch.from_numpy(np.asarray(im.resize((106, 64), Image.BICUBIC).crop((21, 0, 85, 64)), dtype=np.float32))
    ref = (ref.permute(2, 0, 1) / 255 - torch.tensor(clip.preprocessing["mean"])[:, None, None]) / torch.tensor(
        clip.preprocessing["std"])[:, None, None]
    assert x.shape == (3, 64, 64)
    assert (x - ref).abs().mean() < 0.05  # PIL vs torchvision antialiasing differ slightly, layout must not


def test_unknown_layer_is_named():
    vm = load_model(SPECS[0])
    with pytest.raises(ValueError, match=r"has blocks 0..11; layer 12 does not exist; fix models.dinov2-s14.layers"):
        vm.block_output(torch.zeros(1, 3, 56, 56), 12)


@pytest.mark.parametrize(
    "spec,repo",
    [(ModelSpec("dinov2-b14", "dinov2", "vit_base_patch14_dinov2.lvd142m", True, 224),
      "timm/vit_base_patch14_dinov2.lvd142m"),
     (ModelSpec("clip-b16", "clip", "ViT-B-16-quickgelu", "openai", 224), "timm/vit_base_patch16_clip_224.openai")],
    ids=["dinov2", "clip"],
)
def test_pretrained_without_network_fails_at_once_naming_model_and_repo(spec, repo):
    with pytest.raises(WeightsUnavailableError) as e:
        load_model(spec)
    msg = str(e.value)
    assert f"model '{spec.name}'" in msg and repo in msg
    assert "pretrained: false" in msg and "HF_HOME" in msg
