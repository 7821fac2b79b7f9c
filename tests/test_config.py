from pathlib import Path

import pytest
import yaml

from vitsae.config import ConfigError, check_dataset_roots, sae_id, validate

ROOT = Path(__file__).resolve().parent.parent


def demo_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_demo_and_paper_configs_validate_with_defaults():
    cfg = validate(demo_config())
    assert cfg["datasets"]["imagenet-demo"]["on_corrupt"] == "error"  # a default filled in
    assert cfg["datasets"]["imagenet-demo"]["max_per_class"] is None
    assert cfg["extraction"]["num_workers"] == 0
    paper = validate(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    assert paper["models"]["clip-b16"]["arch"] == "ViT-B-16-quickgelu"
    assert paper["models"]["dinov2-b14"]["image_size"] == 224


def test_typo_in_a_key_is_named_with_a_suggestion():
    cfg = demo_config()
    cfg["datasets"]["imagenet-demo"]["max_per_clas"] = 3
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    msg = str(e.value)
    assert "unknown config key 'datasets.imagenet-demo.max_per_clas'" in msg
    assert "did you mean 'max_per_class'?" in msg


def test_top_level_typo_and_bad_value():
    cfg = demo_config()
    cfg["sweep"] = cfg.pop("sweeps")
    with pytest.raises(ConfigError, match=r"unknown config key 'sweep'; did you mean 'sweeps'\?"):
        validate(cfg)
    cfg = demo_config()
    cfg["sweeps"]["paper"]["token_kind"] = "patch"
    with pytest.raises(ConfigError, match=r"config key 'sweeps.paper.token_kind': 'patch' is not one of"):
        validate(cfg)


def test_missing_dataset_root_names_the_path(tmp_path):
    cfg = validate(demo_config())
    cfg["datasets"]["real"] = {"format": "imagenet", "root": str(tmp_path / "nowhere"),
                               "splits": {"train": "train", "val": "val"}}
    with pytest.raises(ConfigError) as e:
        check_dataset_roots(cfg)
    assert f"dataset 'real': root {tmp_path / 'nowhere'} does not exist" in str(e.value)
    assert "datasets.real.root" in str(e.value)
    (tmp_path / "nowhere" / "train").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"nowhere/val \(split 'val'\) does not exist"):
        check_dataset_roots(cfg)


def test_generated_dataset_must_live_under_results_datasets():
    cfg = demo_config()
    cfg["datasets"]["inat-demo"]["root"] = "data/inat"
    with pytest.raises(ConfigError, match="set datasets.inat-demo.root: results/datasets/inat-demo"):
        validate(cfg)


def test_sae_id_is_readable_and_changes_with_l1():
    cfg = validate(demo_config())
    sweep = cfg["sweeps"]["paper"]
    assert sae_id(sweep) == "relu-x8-l1_3-lr_0.004-s0"
    assert sae_id({**sweep, "l1_coeff": 0.002}) != sae_id(sweep)


def test_numbers_given_as_strings_on_the_command_line_are_coerced():
    cfg = demo_config()
    cfg["sweeps"]["paper"]["l1_coeff"] = "9.5"
    cfg["models"]["clip-b16"]["layers"] = ["3"]
    out = validate(cfg)
    assert out["sweeps"]["paper"]["l1_coeff"] == 9.5 and out["models"]["clip-b16"]["layers"] == [3]
    cfg["sweeps"]["paper"]["l1_coeff"] = "lots"
    with pytest.raises(ConfigError, match="'lots' is not of type 'number'"):
        validate(cfg)
