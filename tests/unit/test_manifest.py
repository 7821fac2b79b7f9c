"""Manifests built from the demo trees: columns and values against hashlib/PIL, subsets, errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vitsae.data import demo
from vitsae.data.manifest import (
    BASE_COLUMNS,
    INAT_COLUMNS,
    CorruptImageError,
    build_manifest,
    manifest_digest,
    read_manifest,
    write_manifest,
)

TRAIN, VAL = 3, 2
IMAGENET_SPLITS = {"train": "train", "val": "val"}
INAT_SPLITS = {"train": "train_mini", "val": "val"}


@pytest.fixture(scope="module")
def demo_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("demos")
    demo.make_imagenet_demo(
        base / "imagenet", seed=0, train_per_class=TRAIN, val_per_class=VAL, image_size=48
    )
    demo.make_inat_demo(base / "inat", seed=0, train_per_class=TRAIN, val_per_class=VAL, image_size=48)
    return {"imagenet": base / "imagenet", "inat": base / "inat"}


@pytest.fixture(scope="module")
def imagenet_df(demo_roots: dict[str, Path]) -> pd.DataFrame:
    return build_manifest("demo", "imagenet", demo_roots["imagenet"], IMAGENET_SPLITS)


@pytest.fixture(scope="module")
def inat_df(demo_roots: dict[str, Path]) -> pd.DataFrame:
    return build_manifest("inat", "inat2021", demo_roots["inat"], INAT_SPLITS)


@pytest.fixture()
def imagenet_copy(demo_roots: dict[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(demo_roots["imagenet"], tmp_path / "imagenet"))


# --------------------------------------------------------------------------------------------------
# columns and values


def test_imagenet_manifest_rows_and_values(imagenet_df: pd.DataFrame, demo_roots: dict[str, Path]) -> None:
    root = demo_roots["imagenet"]
    df = imagenet_df
    assert list(df.columns) == BASE_COLUMNS
    n_classes = len(demo.IMAGENET_DEMO_CLASSES)
    assert len(df) == n_classes * (TRAIN + VAL)
    assert df.groupby("split")["label"].value_counts().to_dict() == {
        **{("train", w): TRAIN for w in demo.IMAGENET_DEMO_CLASSES},
        **{("val", w): VAL for w in demo.IMAGENET_DEMO_CLASSES},
    }
    # sorted by split as given, then label, then path
    split_rank = df["split"].map({"train": 0, "val": 1})
    keys = list(zip(split_rank, df["label"], df["path"], strict=True))
    assert keys == sorted(keys)
    assert (df["status"] == "ok").all() and (df["error"] == "").all()
    for row in df.itertuples():
        file = root / row.path
        assert not Path(row.path).is_absolute() and "\\" not in row.path
        assert row.path == f"{'train' if row.split == 'train' else 'val'}/{row.label}/{file.name}"
        assert row.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
        with Image.open(file) as im:
            assert (row.width, row.height) == im.size
    assert df["width"].dtype == np.int64 and df["height"].dtype == np.int64


def test_width_height_come_from_the_image(tmp_path: Path) -> None:
    root = tmp_path / "folder"
    (root / "train" / "a").mkdir(parents=True)
    Image.new("RGB", (30, 20), (1, 2, 3)).save(root / "train" / "a" / "x.png")
    Image.new("RGB", (17, 41), (1, 2, 3)).save(root / "train" / "a" / "y.JPG")
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    (root / "train" / "a" / ".hidden.jpg").write_bytes(b"junk")
    df = build_manifest("folder", "imagefolder", root, {"train": "train"})
    assert df["path"].tolist() == ["train/a/x.png", "train/a/y.JPG"]
    assert df[["width", "height"]].values.tolist() == [[30, 20], [17, 41]]


def test_inat_manifest_taxonomy(inat_df: pd.DataFrame) -> None:
    df = inat_df
    assert list(df.columns) == BASE_COLUMNS + INAT_COLUMNS
    assert len(df) == len(demo.INAT_DEMO_SPECIES) * (TRAIN + VAL)
    assert set(df["path"].str.split("/").str[0]) == {"train_mini", "val"}
    assert df["split"].tolist() == ["train"] * (len(df) * TRAIN // (TRAIN + VAL)) + ["val"] * (
        len(df) * VAL // (TRAIN + VAL)
    )
    by_dir = {s["image_dir_name"]: s for s in demo.INAT_DEMO_SPECIES}
    for row in df.drop_duplicates("label").to_dict("records"):
        s = by_dir[row["label"]]
        for rank in ("kingdom", "phylum", "class", "order", "family", "genus"):
            assert row[rank] == s[rank]
        assert row["species"] == s["name"] == f"{s['genus']} {s['specific_epithet']}"
        assert row["category_id"] == s["id"]
        assert (row["common_name"], row["supercategory"]) == (s["common_name"], s["supercategory"])
    assert df["category_id"].dtype == np.int64


def test_inat_without_json_has_empty_common_names(demo_roots: dict[str, Path], tmp_path: Path) -> None:
    root = Path(shutil.copytree(demo_roots["inat"], tmp_path / "inat"))
    (root / "val.json").unlink()
    df = build_manifest("inat", "inat2021", root, INAT_SPLITS)
    assert (df.loc[df["split"] == "val", "common_name"] == "").all()
    assert (df.loc[df["split"] == "train", "common_name"] != "").all()
    assert df.loc[df["label"].str.endswith("Vanessa_atalanta"), "species"].unique().tolist() == [
        "Vanessa atalanta"
    ]


# --------------------------------------------------------------------------------------------------
# determinism, subsets, Parquet round trip


def test_max_per_class_is_a_seeded_subset(imagenet_df: pd.DataFrame, demo_roots: dict[str, Path]) -> None:
    root = demo_roots["imagenet"]
    a = build_manifest("demo", "imagenet", root, IMAGENET_SPLITS, max_per_class=2, seed=1)
    b = build_manifest("demo", "imagenet", root, IMAGENET_SPLITS, max_per_class=2, seed=1)
    c = build_manifest("demo", "imagenet", root, IMAGENET_SPLITS, max_per_class=2, seed=2)
    pd.testing.assert_frame_equal(a, b)
    n_classes = len(demo.IMAGENET_DEMO_CLASSES)
    assert len(a) == n_classes * 2 * 2  # min(2, 3) train + min(2, 2) val per class
    assert set(a.groupby(["split", "label"]).size()) == {2}
    assert set(a["path"]) <= set(imagenet_df["path"])
    assert (
        a.loc[a["split"] == "val", "path"].tolist()
        == imagenet_df.loc[imagenet_df["split"] == "val", "path"].tolist()
    )
    assert a["path"].tolist() != c["path"].tolist()
    keys = list(zip(a["split"] == "val", a["label"], a["path"], strict=True))
    assert keys == sorted(keys)
    one = build_manifest("demo", "imagenet", root, IMAGENET_SPLITS, max_per_class=1, seed=1)
    assert len(one) == 2 * n_classes


def test_split_order_follows_the_mapping(demo_roots: dict[str, Path]) -> None:
    df = build_manifest("demo", "imagenet", demo_roots["imagenet"], {"val": "val", "train": "train"})
    assert df["split"].iloc[0] == "val" and df["split"].iloc[-1] == "train"


def test_write_read_digest(imagenet_df: pd.DataFrame, tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "m.parquet", tmp_path / "m2.parquet"
    write_manifest(imagenet_df, first)
    with_attrs = imagenet_df.copy()
    with_attrs.attrs["built_at"] = "some time"
    write_manifest(with_attrs, second)
    assert manifest_digest(first) == manifest_digest(second) == hashlib.sha256(first.read_bytes()).hexdigest()
    assert sorted(p.name for p in first.parent.iterdir()) == ["m.parquet"]  # no temp file left
    back = read_manifest(first)
    assert list(back.columns) == BASE_COLUMNS
    assert back.astype(object).values.tolist() == imagenet_df.astype(object).values.tolist()
    assert back["width"].dtype == np.int64
    write_manifest(imagenet_df.iloc[:-1], second)
    assert manifest_digest(second) != manifest_digest(first)
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        read_manifest(tmp_path / "missing.parquet")


def test_rebuild_is_identical(imagenet_df: pd.DataFrame, demo_roots: dict[str, Path]) -> None:
    again = build_manifest("demo", "imagenet", demo_roots["imagenet"], IMAGENET_SPLITS)
    pd.testing.assert_frame_equal(imagenet_df, again)


# --------------------------------------------------------------------------------------------------
# errors


def test_missing_root_names_path_and_key(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        build_manifest("imnet", "imagenet", root, IMAGENET_SPLITS)
    assert str(root) in str(err.value) and "datasets.imnet.root" in str(err.value)


def test_typo_in_split_dir(demo_roots: dict[str, Path]) -> None:
    root = demo_roots["inat"]
    with pytest.raises(FileNotFoundError) as err:
        build_manifest("inat", "inat2021", root, {"train": "train-mini", "val": "val"})
    message = str(err.value)
    assert str(root / "train-mini") in message and "datasets.inat.splits.train" in message
    assert "train_mini" in message  # lists what is there


def test_corrupt_images_raise_with_path_or_are_recorded(imagenet_copy: Path) -> None:
    truncated = imagenet_copy / "train" / "n02085620" / "n02085620_1.JPEG"
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    garbage = imagenet_copy / "val" / "n04487394" / "n04487394_0.JPEG"
    garbage.write_bytes(b"this is not a JPEG at all" * 10)

    with pytest.raises(CorruptImageError) as err:
        build_manifest("imnet", "imagenet", imagenet_copy, IMAGENET_SPLITS)
    assert isinstance(err.value, ValueError)
    assert str(truncated.resolve()) in str(err.value)  # the first bad file in manifest order
    assert "datasets.imnet.on_corrupt: skip" in str(err.value)

    with pytest.raises(CorruptImageError, match="n04487394_0.JPEG"):
        build_manifest("imnet", "imagenet", imagenet_copy, {"val": "val"})

    df = build_manifest("imnet", "imagenet", imagenet_copy, IMAGENET_SPLITS, on_corrupt="skip")
    bad = df[df["status"] == "corrupt"]
    assert bad["path"].tolist() == ["train/n02085620/n02085620_1.JPEG", "val/n04487394/n04487394_0.JPEG"]
    assert (bad["width"] == -1).all() and (bad["height"] == -1).all()
    assert bad["error"].str.contains("truncated").iloc[0]
    assert (bad["error"] != "").all()
    assert bad["sha256"].tolist() == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in (truncated, garbage)
    ]
    good = df[df["status"] == "ok"]
    assert len(good) == len(df) - 2 and (good["error"] == "").all() and (good["width"] == 48).all()


def test_empty_class_dir_and_empty_split(imagenet_copy: Path) -> None:
    empty = imagenet_copy / "train" / "n01440764"
    empty.mkdir()
    with pytest.raises(ValueError, match=str(empty)):
        build_manifest("imnet", "imagenet", imagenet_copy, IMAGENET_SPLITS)
    empty.rmdir()
    bare = imagenet_copy / "test"
    bare.mkdir()
    (bare / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"")
    with pytest.raises(ValueError, match=f"{bare}.*no class folders.*valprep"):
        build_manifest("imnet", "imagenet", imagenet_copy, {"test": "test"})


def test_layout_errors_name_the_directory(
    demo_roots: dict[str, Path], imagenet_copy: Path, tmp_path: Path
) -> None:
    (imagenet_copy / "train" / "dogs").mkdir()
    shutil.copy(next((imagenet_copy / "train").glob("*/*.JPEG")), imagenet_copy / "train" / "dogs" / "a.JPEG")
    with pytest.raises(ValueError, match=r"train/dogs is not named by a wnid"):
        build_manifest("imnet", "imagenet", imagenet_copy, IMAGENET_SPLITS)

    root = Path(shutil.copytree(demo_roots["inat"], tmp_path / "inat"))
    good = next((root / "val").iterdir())
    bad = good.with_name("00003_Animalia_Arthropoda_Insecta_Vanessa_atalanta")
    good.rename(bad)
    with pytest.raises(ValueError, match=f"'{bad.name}' is not an iNat2021 species directory"):
        build_manifest("inat", "inat2021", root, INAT_SPLITS)
    bad.rename(good.with_name("3_" + good.name.split("_", 1)[1]))
    with pytest.raises(ValueError, match="is not an iNat2021 species directory"):
        build_manifest("inat", "inat2021", root, INAT_SPLITS)


def test_inat_json_id_mismatch(demo_roots: dict[str, Path], tmp_path: Path) -> None:
    root = Path(shutil.copytree(demo_roots["inat"], tmp_path / "inat"))
    coco = json.loads((root / "val.json").read_text())
    coco["categories"][0]["id"] = 99
    (root / "val.json").write_text(json.dumps(coco))
    with pytest.raises(ValueError, match="category id 99"):
        build_manifest("inat", "inat2021", root, INAT_SPLITS)


def test_a_root_that_is_a_file_says_so(tmp_path: Path) -> None:
    root = tmp_path / "imagenet.tar"
    root.write_bytes(b"an archive, not yet unpacked")
    with pytest.raises(NotADirectoryError) as err:
        build_manifest("imnet", "imagenet", root, IMAGENET_SPLITS)
    assert str(err.value) == (
        f"dataset 'imnet': root {root} is a file, not a directory; set datasets.imnet.root in the config "
        "to the directory that holds the split folders"
    )
    split = tmp_path / "data"
    split.mkdir()
    (split / "val").write_text("")
    with pytest.raises(
        NotADirectoryError, match=f"split 'val' directory {split / 'val'} is a file, not a dir"
    ):
        build_manifest("folder", "imagefolder", split, {"val": "val"})


def test_a_broken_symlink_is_a_corrupt_row_or_an_error(imagenet_copy: Path, tmp_path: Path) -> None:
    link = imagenet_copy / "val" / "n04487394" / "n04487394_9.JPEG"
    target = tmp_path / "elsewhere" / "gone.JPEG"
    link.symlink_to(target)
    with pytest.raises(CorruptImageError) as err:
        build_manifest("imnet", "imagenet", imagenet_copy, IMAGENET_SPLITS)
    assert str(err.value) == (
        f"dataset 'imnet': image {link} cannot be read (broken symbolic link to {target} "
        "(FileNotFoundError: No such file or directory)); replace or delete it, or set "
        "datasets.imnet.on_corrupt: skip to record it as corrupt and go on"
    )

    df = build_manifest("imnet", "imagenet", imagenet_copy, IMAGENET_SPLITS, on_corrupt="skip")
    bad = df[df["status"] != "ok"]
    assert bad["path"].tolist() == ["val/n04487394/n04487394_9.JPEG"]
    assert bad[["status", "sha256", "width", "height"]].values.tolist() == [["corrupt", "", -1, -1]]
    assert bad["error"].tolist() == [
        f"broken symbolic link to {target} (FileNotFoundError: No such file or directory)"
    ]
    assert len(df) == len(demo.IMAGENET_DEMO_CLASSES) * (TRAIN + VAL) + 1


def test_a_name_that_is_not_utf8_is_named_before_any_decoding(
    imagenet_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vitsae.data import manifest

    class_dir = imagenet_copy / "train" / "n02085620"
    bad = os.fsdecode(b"caf\xe9.JPEG")  # latin-1 é: an undecodable byte, a surrogate escape in Python
    shutil.copy(class_dir / "n02085620_0.JPEG", os.path.join(os.fsencode(class_dir), b"caf\xe9.JPEG"))
    assert (class_dir / bad).is_file()

    def no_decoding(path: Path) -> dict:
        raise AssertionError(f"{path} was decoded before the listing was checked")

    monkeypatch.setattr(manifest, "_inspect", no_decoding)
    with pytest.raises(ValueError) as err:
        build_manifest("imnet", "imagenet", imagenet_copy, IMAGENET_SPLITS)
    assert str(err.value) == (
        f"dataset 'imnet': directory {class_dir} holds a name that is not valid UTF-8: 'caf\\udce9.JPEG'; "
        "rename it to UTF-8 (e.g. convmv -f latin1 -t utf8 --notest), the manifest stores names as UTF-8 text"
    )
    (class_dir / bad).unlink()
    os.rename(os.fsencode(class_dir), os.path.join(os.fsencode(class_dir.parent), b"n0208\xff620"))
    with pytest.raises(
        ValueError, match=r"directory .*/train holds a name that is not valid UTF-8: 'n0208\\udcff620'"
    ):
        build_manifest("imnet", "imagenet", imagenet_copy, IMAGENET_SPLITS)
