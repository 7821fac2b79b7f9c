import errno
import hashlib
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import SPEC, make_folder

from vitsae.data import store
from vitsae.data.activations import extract
from vitsae.data.manifest import build_manifest, manifest_digest, write_manifest
from vitsae.data.models import load_model
from vitsae.data.settings import ModelSpec


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    make_folder(root, {"train": 5, "val": 2})
    df = build_manifest("toy", "imagefolder", root, {"train": "train", "val": "val"})
    path = root.parent / "toy.parquet"
    write_manifest(df, path)
    return root, path, df


def test_store_holds_the_models_block_output_per_image(dataset, tmp_path):
    root, manifest, df = dataset
    out = extract(manifest, root, "toy", SPEC, 4, tmp_path / "layer4.zarr", ["train", "val"], batch_size=4)
    g = store.open_store(out)
    vm = load_model(SPEC)
    assert g.attrs["token_layout"] == {**vm.token_layout, "kept": "all", "model_tokens": vm.token_layout}
    assert g.attrs["layer"] == 4 and g.attrs["model"]["arch"] == SPEC.arch
    assert g.attrs["manifest_sha256"] == manifest_digest(manifest)
    assert g.attrs["preprocessing"]["input_size"] == [3, 56, 56]
    assert g.attrs["splits"] == {"train": 10, "val": 4}
    train = g["train"]
    assert train.shape == (10, vm.token_layout["n_tokens"], 384) and train.chunks[0] == 4
    rows = g["train_rows"][:]
    assert (df.loc[rows, "split"] == "train").all() and len(set(rows)) == 10
    # every stored image equals the model's block output for that image, computed independently
    paths = df.loc[rows, "path"].tolist()
    x = torch.stack([vm.transform(Image.open(root / p).convert("RGB")) for p in paths])
    ref = vm.block_output(x, 4).to(torch.float16).numpy()
    np.testing.assert_array_equal(train[:], ref)
    np.testing.assert_array_equal(g["val_rows"][:], np.flatnonzero(df["split"] == "val"))


def test_a_timm_family_model_is_stored_like_the_others(dataset, tmp_path):
    """Family timm (any timm ViT; a supervised ViT-Ti/16 here): block output, layout, preprocessing."""
    root, manifest, df = dataset
    spec = ModelSpec("sup-ti16", "timm", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", False, 64)
    out = extract(manifest, root, "toy", spec, 3, tmp_path / "layer3.zarr", ["train"], batch_size=5)
    g = store.open_store(out)
    vm = load_model(spec)
    assert g.attrs["token_layout"]["grid"] == [4, 4] and g.attrs["token_layout"]["n_tokens"] == 17
    assert g.attrs["model"] == spec.to_dict() and g.attrs["preprocessing"] == vm.preprocessing
    rows = g["train_rows"][:]
    x = torch.stack([vm.transform(Image.open(root / p).convert("RGB")) for p in df.loc[rows, "path"]])
    np.testing.assert_array_equal(g["train"][:], vm.block_output(x, 3).to(torch.float16).numpy())


def test_corrupt_rows_are_left_out_of_the_store(tmp_path):
    bad_root = tmp_path / "bad"
    make_folder(bad_root, {"train": 3, "val": 1})
    (bad_root / "train" / "cat" / "cat_0.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    df = build_manifest("toy", "imagefolder", bad_root, {"train": "train", "val": "val"}, on_corrupt="skip")
    write_manifest(df, tmp_path / "bad.parquet")
    out = extract(
        tmp_path / "bad.parquet", bad_root, "toy", SPEC, 1, tmp_path / "l1.zarr", ["train"], batch_size=2
    )
    g = store.open_store(out)
    assert g.attrs["splits"] == {"train": 5}
    kept = set(df.loc[g["train_rows"][:], "path"])
    assert "train/cat/cat_0.jpg" not in kept and len(kept) == 5


def test_killed_extraction_publishes_nothing_and_the_rerun_completes(tmp_path):
    root = tmp_path / "data"
    make_folder(root, {"train": 60})
    manifest = tmp_path / "m.parquet"
    write_manifest(build_manifest("toy", "imagefolder", root, {"train": "train"}), manifest)
    out = tmp_path / "acts" / "layer10.zarr"
    clip = "ModelSpec('clip-b16', 'clip', 'ViT-B-16-quickgelu', False, 64)"
    code = (
        "import torch; torch.set_num_threads(1)\n"
        "from vitsae.data.activations import extract\nfrom vitsae.data.settings import ModelSpec\n"
        f"extract({str(manifest)!r}, {str(root)!r}, 'toy', {clip}, 10, {str(out)!r}, ['train'], batch_size=2)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 120
    partial = None
    while time.time() < deadline and proc.poll() is None:
        found = list(out.parent.glob(".layer10.zarr.partial-*/train/c/*")) if out.parent.exists() else []
        if len(found) >= 2:  # some chunks are on disk: the job is half way
            partial = found[0].parents[2]
            break
        time.sleep(0.05)
    assert partial is not None and proc.poll() is None, "extraction finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    with pytest.raises(store.StoreError):
        store.open_store(out)
    with pytest.raises(store.StoreError, match="is incomplete"):
        store.open_store(partial)
    extract(
        manifest,
        root,
        "toy",
        ModelSpec("clip-b16", "clip", "ViT-B-16-quickgelu", False, 64),
        10,
        out,
        ["train"],
        batch_size=8,
    )
    g = store.open_store(out)
    assert g.attrs["splits"] == {"train": 120}
    assert np.isfinite(g["train"][:]).all()
    assert not partial.exists()  # the killed job's leftovers are cleaned up


# --- token choice -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_tokens(dataset, tmp_path_factory):
    root, manifest, _ = dataset
    out = tmp_path_factory.mktemp("tokens") / "all.zarr"
    return extract(manifest, root, "toy", SPEC, 2, out, ["train", "val"], batch_size=4)


@pytest.mark.parametrize("tokens", ["patches", "cls", {"subset": 5, "seed": 7}])
def test_a_token_choice_stores_exactly_those_tokens_and_says_so(dataset, all_tokens, tmp_path, tokens):
    root, manifest, _ = dataset
    out = extract(
        manifest, root, "toy", SPEC, 2, tmp_path / "k.zarr", ["train", "val"], batch_size=4, tokens=tokens
    )
    full, kept = store.open_store(all_tokens), store.open_store(out)
    model = full.attrs["token_layout"]  # 1 CLS + 4 x 4 patches
    layout = kept.attrs["token_layout"]
    assert layout["model_tokens"] == model["model_tokens"]
    acts_all = full["train"][:]
    acts = store.split_array(kept, "train")[:]
    if tokens == "patches":
        assert layout["kept"] == "patches" and layout["n_tokens"] == 16 and layout["cls_index"] is None
        np.testing.assert_array_equal(acts, acts_all[:, 1:])
        np.testing.assert_array_equal(acts[:, store.token_slice(layout, "patches")], acts_all[:, 1:])
        with pytest.raises(store.StoreError, match="keeps only patch tokens .* no 'cls' tokens"):
            store.token_slice(layout, "cls")
        assert (store.patch_index(kept, "train") == np.arange(16)).all()
    elif tokens == "cls":
        assert layout["kept"] == "cls" and layout["n_tokens"] == 1
        np.testing.assert_array_equal(acts[:, store.token_slice(layout, "cls")], acts_all[:, :1])
        with pytest.raises(store.StoreError, match="only the CLS token"):
            store.token_slice(layout, "patches")
    else:
        assert layout["kept"] == "subset" and layout["subset"] == {"k": 5, "seed": 7} and acts.shape[1] == 5
        index_BK = store.patch_index(kept, "train")
        assert index_BK.shape == (acts.shape[0], 5) == (10, 5)
        assert (np.diff(index_BK, axis=1) > 0).all() and index_BK.min() >= 0 and index_BK.max() < 16
        assert len({tuple(r) for r in index_BK}) > 1  # a different subset per image
        # stored token j of image i is model patch index_BK[i, j] (token 1 + that, after the CLS)
        np.testing.assert_array_equal(acts, np.take_along_axis(acts_all, 1 + index_BK[:, :, None], axis=1))
        with pytest.raises(store.StoreError, match="subset of 5 patch tokens"):
            store.token_slice(layout, "all")
        # an image's subset depends on its seed and manifest row only, not on the batch (chunk) size
        other = extract(
            manifest, root, "toy", SPEC, 2, tmp_path / "k3.zarr", ["train"], batch_size=3, tokens=tokens
        )
        np.testing.assert_array_equal(store.patch_index(store.open_store(other), "train"), index_BK)


# --- input pipeline -----------------------------------------------------------------------------


def test_pil_path_is_the_models_reference_transform(dataset):
    root, _, df = dataset
    from vitsae.data.activations import _Images

    vm = load_model(SPEC)
    paths = df["path"].tolist()
    ds = _Images(root, paths, df["sha256"].tolist(), "dataset 'toy'", vm.transform)
    for i, p in enumerate(paths):
        np.testing.assert_array_equal(
            ds[i].numpy(), vm.transform(Image.open(root / p).convert("RGB")).numpy()
        )


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec("d", "dinov2", "vit_small_patch14_dinov2.lvd142m", False, 224),
        ModelSpec("c", "clip", "ViT-B-16-quickgelu", False, 64),
        # family timm with its tag's own preprocessing (crop 0.9, mean = std = 0.5)
        ModelSpec("t", "timm", "vit_tiny_patch16_224.augreg_in21k_ft_in1k", False, 64),
    ],
)
def test_tensor_path_matches_the_pil_path(tmp_path, spec):
    """torchvision decode + torch-op resize/crop/normalise (the GPU path, here on the CPU) against PIL +
    the model's transform, on photo-like JPEGs larger, smaller and not the shape of the input."""
    from vitsae.data.activations import decode_images, tensor_transform

    vm = load_model(spec)
    rng = np.random.default_rng(0)
    diffs = []
    for i, (h, w) in enumerate([(375, 500), (500, 375), (100, 90), (224, 224), (61, 300)]):
        yy, xx = np.mgrid[0:h, 0:w]
        smooth = np.stack([np.sin(xx / (7 + c) + yy / (11 + 2 * c)) for c in range(3)], -1) * 90 + 128
        arr = np.clip(smooth + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        path = tmp_path / f"im{i}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        (image,) = decode_images([data], [path], "cpu")
        assert image.dtype == torch.uint8 and tuple(image.shape) == (3, h, w)
        # the decoders agree exactly (both libjpeg-turbo); the resize differs by rounding only
        np.testing.assert_array_equal(
            image.permute(1, 2, 0).numpy(), np.asarray(Image.open(path).convert("RGB"))
        )
        x = tensor_transform(image, vm.preprocessing)
        ref = vm.transform(Image.open(path).convert("RGB"))
        assert x.shape == ref.shape == (3, spec.image_size, spec.image_size)
        diffs.append(float((x - ref).abs().max()))
        assert float((x - ref).abs().mean()) < 0.01
    # at most one 8-bit level (a rounding difference of the resize) after normalisation: 1/255/std
    level = 1 / 255 / min(vm.preprocessing["std"])
    assert max(diffs) <= level + 1e-5, (diffs, level)


def _failing_writes(monkeypatch, error: OSError) -> None:
    """The second write of activations (a 3-D array) raises ``error``, as the chunk write of a failing disk."""
    import zarr

    calls = {"n": 0}
    original = zarr.Array.__setitem__

    def failing(self, key, value):
        if self.ndim == 3:
            calls["n"] += 1
            if calls["n"] == 2:
                raise error
        return original(self, key, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", failing)


def test_a_writer_error_surfaces_and_nothing_is_published(dataset, tmp_path, monkeypatch):
    root, manifest, _ = dataset
    _failing_writes(monkeypatch, OSError(errno.EIO, "Input/output error"))
    out = tmp_path / "l1.zarr"
    with pytest.raises(OSError, match="Input/output error"):
        extract(manifest, root, "toy", SPEC, 1, out, ["train"], batch_size=2)
    assert not out.exists()


def test_a_full_disk_names_the_store_and_the_space_it_needs_and_removes_it(dataset, tmp_path, monkeypatch):
    from vitsae.data.activations import StoreSpaceError

    root, manifest, _ = dataset
    _failing_writes(monkeypatch, OSError(errno.ENOSPC, "No space left on device"))
    out = tmp_path / "acts" / "l1.zarr"
    with pytest.raises(StoreSpaceError) as err:
        extract(manifest, root, "toy", SPEC, 1, out, ["train", "val"], batch_size=2)
    needed = (10 + 4) * 17 * 384 * 2  # images x tokens (1 CLS + 4 x 4 patches) x d x 2 bytes (fp16)
    message = str(err.value)
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert message.startswith(
        f"[Errno 28] No space left on device writing store {out} (dataset 'toy'): it needs about {needed:,} "
        f"bytes (0.00 GB: 14 images x 17 tokens x 384 dims x 2 bytes, fp16, as `vitsae plan` sizes a store) and "
    )
    assert re.search(r"and [\d,]+ bytes are free there now; the unfinished store .*/acts/\.l1\.zarr\.partial-\d+ "
                     r"was removed\. Free that much space \(or put the results on a larger disk\) and rerun$", message)  # fmt: skip
    assert list(out.parent.iterdir()) == []  # neither the store nor its partial one


def test_nan_activations_name_the_images_and_publish_nothing(dataset, tmp_path, monkeypatch):
    root, manifest, _ = dataset
    from vitsae.data.models import VisionModel

    original = VisionModel.block_output

    def poisoned(self, x, layer):
        out = original(self, x, layer).clone()
        out[1, 3, 0] = float("nan")
        return out

    monkeypatch.setattr(VisionModel, "block_output", poisoned)
    out = tmp_path / "nan.zarr"
    with pytest.raises(
        FloatingPointError, match=r"gave NaN/Inf .* 1 image\(s\) of toy/train, e\.g\. \['train/"
    ):
        extract(manifest, root, "toy", SPEC, 1, out, ["train"], batch_size=4)
    assert not out.exists()


@pytest.mark.parametrize(("decode", "workers"), [("pil", 0), ("tensor", 0), ("pil", 1)])
def test_an_image_changed_after_the_manifest_names_the_file(tmp_path, decode, workers):
    """Bytes that differ from the manifest's sha256 stop the extraction, whether they still decode or not."""
    from vitsae.data.activations import ImageChangedError, ImageDecodeError

    root = tmp_path / "data"
    make_folder(root, {"train": 2})
    manifest = tmp_path / "m.parquet"
    df = build_manifest("toy", "imagefolder", root, {"train": "train"})
    write_manifest(df, manifest)
    changed = root / "train" / "dog" / "dog_1.jpg"
    recorded = df.loc[df["path"] == "train/dog/dog_1.jpg", "sha256"].item()
    out = tmp_path / "s.zarr"
    for data in [(root / "train" / "cat" / "cat_0.jpg").read_bytes(), b"\xff\xd8\xff\xe0 truncated"]:
        changed.write_bytes(data)  # another valid JPEG, then a truncated one
        with pytest.raises(ImageChangedError) as err:
            extract(
                manifest,
                root,
                "toy",
                SPEC,
                1,
                out,
                ["train"],
                batch_size=2,
                decode=decode,
                num_workers=workers,
            )
        assert (
            f"dataset 'toy' (manifest {manifest}): image {changed} has changed since the manifest was built "
            f"(its sha256 is {hashlib.sha256(data).hexdigest()}, the manifest has {recorded}); restore the file, "
            "or delete the manifest so that it is rebuilt (and the stores made from it)"
        ) in str(err.value)
        assert not out.exists()
    changed.unlink()
    with pytest.raises(ImageDecodeError, match=r"cannot decode .*train/dog/dog_1\.jpg.*delete the manifest"):
        extract(
            manifest, root, "toy", SPEC, 1, out, ["train"], batch_size=2, decode=decode, num_workers=workers
        )


# --- packed batches, the input thread, the batched transform, the profile (issue 21) -------------


def test_a_packed_batch_round_trips_every_images_bytes_exactly(dataset):
    """The tensor path's workers hand over one uint8 buffer and its offsets per batch, not one tensor per
    image; unpacking gives each image's bytes back, byte for byte, and they decode as separate copies do."""
    from vitsae.data.activations import _loader, decode_images, pack_bytes, unpack_bytes

    rng = np.random.default_rng(0)
    items = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (5, 0, 1, 4099, 17)]
    data_N, offsets_B1 = pack_bytes(items)
    assert data_N.dtype == torch.uint8 and data_N.shape == (4122,)
    assert offsets_B1.tolist() == [0, 5, 5, 6, 4105, 4122]
    assert [v.numpy().tobytes() for v in unpack_bytes(data_N, offsets_B1)] == items

    root, _, df = dataset
    paths, sha256s = df["path"].tolist(), df["sha256"].tolist()
    loader = _loader(root, paths, sha256s, "dataset 'toy'", None, "tensor", 4, num_workers=1, pin=False)
    got, n_batches = [], 0
    for batch in loader:  # from a worker process
        data_N, offsets_B1 = batch
        assert data_N.dtype == torch.uint8 and data_N.ndim == 1 and offsets_B1.shape == (len(offsets_B1),)
        views = unpack_bytes(data_N, offsets_B1)
        got += [v.numpy().tobytes() for v in views]
        copies = [torch.frombuffer(bytearray(v.numpy().tobytes()), dtype=torch.uint8) for v in views]
        for a, b in zip(
            decode_images(views, paths[:4], "cpu"), decode_images(copies, paths[:4], "cpu"), strict=True
        ):
            assert torch.equal(a, b)
        n_batches += 1
    assert got == [(root / p).read_bytes() for p in paths]
    assert n_batches == -(-len(paths) // 4)


def _preprocessing(kind: str) -> dict:
    if kind == "dinov2":  # bicubic, crop_pct 0.875: shorter side to 64, centre crop 56
        return load_model(SPEC).preprocessing
    return {"input_size": [3, 64, 64], "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
            "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]}  # fmt: skip


@pytest.mark.parametrize("kind", ["dinov2", "clip"])
def test_the_batched_transform_equals_the_per_image_transform(kind):
    """Images of several sizes in one batch (two of a size, resized in one call; one already at the resize
    size; landscape, portrait, smaller than the input), against :func:`tensor_transform` image by image."""
    from vitsae.data.activations import batch_transform, tensor_transform

    pp = _preprocessing(kind)
    s = pp["input_size"][1]
    rng = np.random.default_rng(1)
    sizes = [
        (375, 500),
        (40, 64),
        (375, 500),
        (64, 80) if kind == "dinov2" else (64, 64),
        (500, 375),
        (40, 64),
    ]
    images = [torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)) for h, w in sizes]
    ref_BCSS = torch.stack([tensor_transform(im, pp) for im in images])
    x_BCSS = batch_transform(images, pp)
    assert x_BCSS.shape == ref_BCSS.shape == (6, 3, s, s) and x_BCSS.dtype == torch.float32
    torch.testing.assert_close(x_BCSS, ref_BCSS, rtol=0, atol=1e-5)
    same = [images[0], images[2]]  # one size: the whole batch in one resize
    torch.testing.assert_close(batch_transform(same, pp), ref_BCSS[[0, 2]], rtol=0, atol=1e-5)
    assert float((ref_BCSS[0] - ref_BCSS[2]).abs().max()) > 0.1  # the images differ, so the order is checked


def test_the_input_thread_runs_ahead_by_at_most_its_queue_and_passes_its_error_on():
    """Batches come out in order; the thread prepares at most depth + 1 batches beyond what was taken;
    an error in it reaches the consumer as the same exception object, after the batches before it."""
    from vitsae.data.activations import _Producer, _Stages

    prepared = []

    def prepare(b, batch):
        prepared.append(b)
        if batch == "bad":
            raise ValueError("cannot decode img3.jpg")
        return torch.tensor(batch)

    producer = _Producer(iter([0, 1, 2, 3, 4, 5, 6, 7]), prepare, _Stages(), torch.device("cpu"), depth=2)
    it = iter(producer)
    assert int(next(it)) == 0
    time.sleep(0.3)
    assert len(prepared) <= 1 + 2 + 1
    assert [int(x) for x in it] == [1, 2, 3, 4, 5, 6, 7]
    producer.close()

    producer = _Producer(iter([0, 1, 2, "bad", 4]), prepare, _Stages(), torch.device("cpu"), depth=2)
    got = []
    with pytest.raises(ValueError, match=r"^cannot decode img3\.jpg$"):
        for x in producer:
            got.append(int(x))
    assert got == [0, 1, 2]
    producer.close()

    prepared.clear()  # a consumer that stops early does not leave the thread blocked
    producer = _Producer(iter(range(100)), prepare, _Stages(), torch.device("cpu"), depth=2)
    next(iter(producer))
    t0 = time.perf_counter()
    producer.close()
    assert time.perf_counter() - t0 < 2 and len(prepared) < 10


def test_a_corrupt_image_on_the_tensor_path_is_named_from_the_input_thread(tmp_path):
    """Bytes the manifest agrees with that neither nvJPEG/libjpeg nor PIL decode: the input thread's
    ImageDecodeError reaches the caller with the same message (the file, what to do)."""
    from vitsae.data.activations import ImageDecodeError

    root = tmp_path / "data"
    make_folder(root, {"train": 3})
    df = build_manifest("toy", "imagefolder", root, {"train": "train"})
    bad = root / "train" / "dog" / "dog_1.jpg"
    data = b"\xff\xd8\xff\xe0 not a jpeg at all"
    bad.write_bytes(data)
    df.loc[df["path"] == "train/dog/dog_1.jpg", "sha256"] = hashlib.sha256(data).hexdigest()
    write_manifest(df, tmp_path / "m.parquet")
    out = tmp_path / "s.zarr"
    with pytest.raises(ImageDecodeError) as err:
        extract(tmp_path / "m.parquet", root, "toy", SPEC, 1, out, ["train"], batch_size=2, decode="tensor")
    assert str(err.value).startswith(f"cannot decode {bad} (")
    assert str(err.value).endswith(
        "it was readable when the manifest was built: restore the file, or delete the manifest so it is rebuilt"
    )
    assert "_produce" in [entry.name for entry in err.traceback]  # raised in the input thread
    assert not out.exists()


def _gpu_bench():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "gpu" / "extract_gpu.py"
    spec = importlib.util.spec_from_file_location("extract_gpu_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("decode", ["tensor", "pil"])
def test_the_gpu_benchmark_runs_on_the_cpu_its_stages_add_up_and_its_store_is_extracts(tmp_path, decode):
    """bench/gpu/extract_gpu.py's pieces at tiny size on the CPU: the profile's stages add up to the wall
    time, 'other' (time no stage accounts for) stays under 5% of it, and the store the benchmark wrote holds
    the activations a plain extract() writes."""
    from vitsae.data.activations import BUSY, STAGES

    bench, device = _gpu_bench(), torch.device("cpu")
    root, manifest = tmp_path / "data", tmp_path / "m.parquet"
    paths = bench.synthetic_jpegs(root, 10, classes=2)
    write_manifest(build_manifest("bench", "imagefolder", root, {"train": "train"}), manifest)
    vm, build_s, digest_s = bench.build_model(SPEC, device)
    assert build_s > digest_s > 0
    run = bench.run_extraction(manifest, root, SPEC, vm, 1, tmp_path / "bench.zarr", 4, 0, device, decode, 1)
    prof = run["profile"]
    stages = prof["stages"]
    assert list(stages) == list(STAGES) and list(prof["busy"]) == list(BUSY)
    assert all(v >= 0 for v in stages.values()) and stages["forward"] > 0 and stages["setup"] > 0
    assert sum(stages.values()) == pytest.approx(prof["wall"], rel=1e-9)
    assert stages["other"] <= 0.05 * prof["wall"], stages
    assert prof["wall"] == pytest.approx(run["call_s"], rel=0.05)
    assert run["synced_s"] >= run["call_s"]
    if decode == "tensor":
        assert prof["busy"]["decode"] > 0 and prof["busy"]["transform"] > 0
    assert prof["busy"]["write"] > 0 and prof["images"] == 10 and prof["decode"] == decode
    assert [n for _, n in prof["written_at"]] == [4, 4, 2]
    assert run["steady_img_s"] == pytest.approx(6 / (prof["written_at"][2][0] - prof["written_at"][0][0]))
    plain = extract(
        manifest, root, "bench", SPEC, 1, tmp_path / "plain.zarr", ["train"], batch_size=4, decode=decode
    )
    ours, ref = store.open_store(tmp_path / "bench.zarr"), store.open_store(plain)
    assert np.isfinite(ours["train"][:]).all() and ours["train"].shape == (10, 17, 384)
    np.testing.assert_array_equal(ours["train"][:], ref["train"][:])
    np.testing.assert_array_equal(ours["train_rows"][:], ref["train_rows"][:])
    table = bench.stage_table(prof)
    assert all(k in table for k in (*STAGES, *BUSY, "wall"))
    assert bench.forward_only(vm, 1, paths, 4, device, reps=2) > 0
    assert bench.decode_only(manifest, root, vm, 4, 0, device, warmup=1) > 0
    assert bench.disk_write_gb_s(tmp_path, 1 << 20, 0.003) > 0 and not (tmp_path / "disk-probe").exists()
