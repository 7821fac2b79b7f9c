import json
from pathlib import Path

import pytest
import yaml

from vitsae.config import ConfigError, build, check_dataset_roots, check_models, validate
from vitsae.sae.settings import select, sweep_ids, sweep_specs, training_settings

ROOT = Path(__file__).resolve().parents[2]


def demo_config() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def paper_only_config() -> dict:
    """The demo config with its one science sweep: no control sweeps, comparisons or controls."""
    cfg = demo_config()
    cfg["sweeps"] = {"paper": cfg["sweeps"]["paper"]}
    for key in ("claims", "controls", "transfer"):
        cfg.pop(key, None)
    return cfg


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
    cfg["datasets"]["real"] = {
        "format": "imagenet",
        "root": str(tmp_path / "nowhere"),
        "splits": {"train": "train", "val": "val"},
    }
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


def test_a_sweep_is_every_combination_of_its_lists_and_ids_are_readable():
    cfg = demo_config()
    cfg["sweeps"]["paper"].update(
        {
            "architecture": ["relu_l1", "topk"],
            "l1_coeff": [3, 6.5],
            "k": [16, 32],
            "seed": [0, 1],
            "lr": 0.004,
            "expansion": 8,
        }
    )
    sweep = validate(cfg)["sweeps"]["paper"]
    ids = sweep_ids(sweep)
    # l1_coeff only varies ReLU SAEs and k only TopK ones: 2 x 2 + 2 x 2, not 2 x 2 x 2 x 2
    assert ids == [
        "relu_l1-x8-l1_3-lr_0.004-s0",
        "relu_l1-x8-l1_3-lr_0.004-s1",
        "relu_l1-x8-l1_6.5-lr_0.004-s0",
        "relu_l1-x8-l1_6.5-lr_0.004-s1",
        "topk-x8-k16-lr_0.004-s0",
        "topk-x8-k16-lr_0.004-s1",
        "topk-x8-k32-lr_0.004-s0",
        "topk-x8-k32-lr_0.004-s1",
    ]
    specs = sweep_specs(sweep)
    assert specs[0] == {"architecture": "relu_l1", "expansion": 8, "l1_coeff": 3, "lr": 0.004, "seed": 0}
    assert specs[-1] == {
        "architecture": "topk",
        "expansion": 8,
        "k": 32,
        "lr": 0.004,
        "seed": 1,
        "aux_coeff": 0.03125,
    }
    assert training_settings(sweep)["train_tokens"] == sweep["train_tokens"]
    cfg["sweeps"]["paper"].update({"architecture": "topk", "aux_coeff": [0.1, 0.03125]})
    assert sweep_ids(validate(cfg)["sweeps"]["paper"])[:2] == [
        "topk-x8-k16-aux_0.1-lr_0.004-s0",
        "topk-x8-k16-lr_0.004-s0",
    ]
    cfg["sweeps"]["paper"].update({"architecture": "relu_l1", "l1_coeff": [3, 3.0], "seed": 0})
    assert sweep_ids(validate(cfg)["sweeps"]["paper"]) == ["relu_l1-x8-l1_3-lr_0.004-s0"]  # one SAE, not two


def test_numbers_given_as_strings_on_the_command_line_are_coerced():
    cfg = demo_config()
    cfg["sweeps"]["paper"]["l1_coeff"] = "9.5"
    cfg["models"]["clip-b16"]["layers"] = ["3"]
    out = validate(cfg)
    assert out["sweeps"]["paper"]["l1_coeff"] == 9.5 and out["models"]["clip-b16"]["layers"] == [3]
    cfg["sweeps"]["paper"]["l1_coeff"] = "lots"
    with pytest.raises(
        ConfigError, match="'lots' is neither of the allowed forms .*'lots' is not of type 'number'"
    ):
        validate(cfg)
    cfg["sweeps"]["paper"]["l1_coeff"] = "[2, 4.5]"  # a list given on the command line
    assert validate(cfg)["sweeps"]["paper"]["l1_coeff"] == [2, 4.5]


def test_sae_selectors_pick_by_sweep_name_and_settings():
    cfg = paper_only_config()
    cfg["sweeps"]["paper"].update(
        {
            "architecture": ["relu_l1", "topk"],
            "l1_coeff": [3, 6],
            "k": [16],
            "seed": [0, 1],
            "lr": 0.004,
            "expansion": 8,
        }
    )
    cfg["sweeps"]["wide"] = {**cfg["sweeps"]["paper"], "architecture": "relu_l1", "expansion": 16, "seed": 0}
    sweeps = validate(cfg)["sweeps"]
    every = select(sweeps, {})
    assert len(every) == 6 + 2 and every[0] == ("paper", "relu_l1-x8-l1_3-lr_0.004-s0")
    assert select(sweeps, {"sweeps": ["wide"]}) == [
        ("wide", "relu_l1-x16-l1_3-lr_0.004-s0"),
        ("wide", "relu_l1-x16-l1_6-lr_0.004-s0"),
    ]
    assert select(sweeps, {"where": {"l1_coeff": 3.0, "seed": 1}}) == [
        ("paper", "relu_l1-x8-l1_3-lr_0.004-s1")
    ]
    # a key an architecture does not use never matches it; lists mean any of
    assert select(sweeps, {"sweeps": ["paper"], "where": {"k": [16, 32]}}) == [
        ("paper", "topk-x8-k16-lr_0.004-s0"),
        ("paper", "topk-x8-k16-lr_0.004-s1"),
    ]
    assert select(sweeps, {"where": {"architecture": "topk", "seed": [1]}}) == [
        ("paper", "topk-x8-k16-lr_0.004-s1")
    ]
    assert select(sweeps, {"ids": ["relu_l1-x16-l1_6-lr_0.004-s0"], "where": {"expansion": 16}}) == [
        ("wide", "relu_l1-x16-l1_6-lr_0.004-s0")
    ]
    with pytest.raises(ValueError, match=r"transfer.saes.sweeps: no sweep named \['papr'\]"):
        select(sweeps, {"sweeps": ["papr"]}, "transfer.saes")
    with pytest.raises(ValueError, match=r"saes.ids: no SAE named \['relu_l1-x8-l1_9-lr_0.004-s0'\]"):
        select(sweeps, {"ids": ["relu_l1-x8-l1_9-lr_0.004-s0"]})
    with pytest.raises(ValueError, match=r"saes.where: \['l1'\] are not SAE settings"):
        select(sweeps, {"where": {"l1": 3}})
    with pytest.raises(ValueError, match="picks no SAE"):
        select(sweeps, {"sweeps": ["wide"], "where": {"seed": 1}})


def test_concept_thresholds_in_the_schema_default_to_the_rules_defaults():
    import dataclasses

    from vitsae.analysis.settings import ImageNetRules, INatRules

    validated = validate(demo_config())
    run = build(validated)
    for kind, cls in (("imagenet", ImageNetRules), ("inat", INatRules)):
        assert getattr(run.concepts, kind) == cls(), (
            kind
        )  # every default of the schema is the dataclass's default
        assert set(validated["concepts"][kind]) == {f.name for f in dataclasses.fields(cls)} - {"seed"}
    cfg = demo_config()
    cfg["concepts"] = {"inat": {"purity": 0.5}}
    with pytest.raises(ConfigError, match=r"unknown config key 'concepts.inat.purity'"):
        validate(cfg)


def test_sweep_defaults_in_the_schema_are_the_packages():
    import dataclasses

    from vitsae.config import load_schema
    from vitsae.sae.settings import GRID_KEYS, TRAINING_KEYS, SAESpec, TrainSettings

    props = load_schema()["properties"]["sweeps"]["additionalProperties"]["properties"]
    package = {f.name: f.default for c in (SAESpec, TrainSettings) for f in dataclasses.fields(c)}
    # l1_coeff and k are None in SAESpec: an architecture that does not use one carries no value for it
    unused_is_none = {"l1_coeff", "k"}
    keys = [k for k in (*GRID_KEYS, *TRAINING_KEYS) if "default" in props[k] and k not in unused_is_none]
    assert {k: props[k]["default"] for k in keys} == {k: package[k] for k in keys}
    assert {k: package[k] for k in unused_is_none} == {"l1_coeff": None, "k": None}
    assert set(GRID_KEYS) | set(TRAINING_KEYS) <= set(props)  # every setting is a config key
    # a sweep that sets nothing trains what SAESpec() and TrainSettings() describe
    cfg = demo_config()
    cfg["sweeps"]["plain"] = {"l1_coeff": 3.0}
    sweep = build(validate(cfg)).sweeps["plain"]
    assert sweep.training == dataclasses.replace(TrainSettings(), dead_steps=sweep.training.dead_steps)
    assert sweep.specs == (SAESpec(l1_coeff=3.0),)


def test_the_typed_run_holds_every_setting_once():
    run = build(validate(demo_config()))
    assert list(run.datasets) == ["imagenet-demo", "inat-demo"] and list(run.models) == [
        "clip-b16",
        "dinov2-s14",
        "vit-t16",
    ]
    assert run.claims.baselines == ("vit-t16",) and run.models["vit-t16"].spec.family == "timm"
    assert not run.sweeps["permuted"].trains("vit-t16") and run.sweeps["paper"].trains("vit-t16")
    assert run.datasets["inat-demo"].generate.kind == "inat-demo" and run.datasets["inat-demo"].splits[
        "train"
    ] == ("train_mini")
    assert run.models["clip-b16"].layers == (10,) and run.models["clip-b16"].spec.arch == "ViT-B-16-quickgelu"
    assert run.tokens("clip-b16").kept == "all" and run.extraction.parts_of("imagenet-demo") == 1
    sweep = run.sweeps["paper"]
    assert sweep.ids == tuple(sweep_ids(validate(demo_config())["sweeps"]["paper"]))
    assert [s.l1_coeff for s in sweep.specs] == [
        3.0,
        3.0,
        6.0,
        6.0,
    ] and sweep.training.train_tokens == 100_000
    assert run.transfer_saes == tuple(("paper", i) for i in sweep.ids)
    assert run.features.saes == tuple(
        (s, i) for s in ("paper", "twin", "permuted") for i in run.sweeps[s].ids
    )
    assert run.note == "demo: synthetic data, random weights"
    cfg = demo_config()
    cfg["models"]["dinov2-s14"]["tokens"] = {"subset": 8}
    cfg["seed"] = 5
    assert build(validate(cfg)).tokens("dinov2-s14").to_config() == {"subset": 8, "seed": 5}  # the run's seed
    cfg["features"] = {"saes": {"where": {"seed": 7}}}
    with pytest.raises(ConfigError, match=r"features.saes: the selector .* picks no SAE"):
        build(validate(cfg))


def test_unknown_architectures_and_missing_layers_fail_at_config_time_naming_the_key(tmp_path):
    cfg = validate(demo_config())
    check_models(cfg, cache=tmp_path / "depths.json")  # the demo's models exist and have block 10
    cached = json.loads((tmp_path / "depths.json").read_text())
    assert sorted(v["n_blocks"] for v in cached.values()) == [12, 12, 12]
    cfg["models"]["clip-b16"]["arch"] = "ViT-B-16-quickgel"
    cfg["models"]["dinov2-s14"]["layers"] = [10, 12]
    with pytest.raises(ConfigError) as e:
        check_models(cfg, cache=tmp_path / "depths.json")
    lines = str(e.value).splitlines()
    assert lines[0] == (
        "config: models.clip-b16.arch: open_clip has no model 'ViT-B-16-quickgel'; "
        "did you mean 'ViT-B-16-quickgelu' or 'ViT-L-14-quickgelu' or 'ViT-H-14-quickgelu'?"
    )
    assert lines[1] == (
        "config: models.dinov2-s14.layers: [12] not among the blocks of "
        "vit_small_patch14_dinov2.lvd142m, 0..11"
    )
    cfg = validate(demo_config())
    cfg["models"]["dinov2-s14"]["arch"] = "vit_small_patch14_dinov3"
    with pytest.raises(ConfigError, match=r"models.dinov2-s14.arch: family dinov2 needs a timm DINOv2"):
        check_models(cfg)
    cfg["models"]["dinov2-s14"]["arch"] = "vit_small_patch14_dinov2.lvd143m"
    with pytest.raises(
        ConfigError, match=r"models.dinov2-s14.arch: timm has no model 'vit_small_patch14_dinov2.lvd143m'"
    ):
        check_models(cfg)


def test_dataset_options_are_checked_once_by_the_schema_naming_the_key():
    for key, value, words in (("format", "imagenet1k", "is not one of"), ("on_corrupt", "ignore", "is not one of"),
                              ("max_per_class", 0, "is less than the minimum of 1")):  # fmt: skip
        cfg = demo_config()
        cfg["datasets"]["imagenet-demo"][key] = value
        with pytest.raises(ConfigError, match=rf"config key 'datasets.imagenet-demo.{key}': .*{words}"):
            validate(cfg)


def _claims_error(edit) -> str:
    cfg = demo_config()
    edit(cfg)
    with pytest.raises(ConfigError) as e:
        build(validate(cfg))
    return str(e.value)


def test_the_demo_declares_its_comparisons_and_controls_once():
    run = build(validate(demo_config()))
    names = {c.name: c for c in run.claims.comparisons}
    assert [c.role for c in run.claims.comparisons].count("primary") == 2
    twin = names["identity-abstraction"]
    assert twin.favoured.model == twin.other.model and twin.favoured.sweep != twin.other.sweep
    assert run.sweeps["twin"].models == ("dinov2-s14",) and not run.sweeps["twin"].trains("clip-b16")
    assert run.sweeps["permuted"].training.permute_dims and not run.sweeps["paper"].training.permute_dims
    assert run.claims.control_sweeps == {"twin", "permuted"}
    assert run.shuffled_labels == ("paper",)
    assert run.claims.grid("inat")["trait_max_rank"] == ["family", "order", "class"]


#: A baseline model for the demo config's claims (family timm: any timm ViT by name).
MAE = {
    "family": "timm",
    "arch": "vit_base_patch16_224.mae",
    "pretrained": False,
    "image_size": 112,
    "layers": [10],
}


def _set(path: str, value):
    """An edit of the demo config: ``path`` as dotted keys (list items by index)."""

    def edit(cfg: dict) -> None:
        *parents, last = path.split(".")
        node = cfg
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value

    return edit


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ([_set("claims.comparisons.0.favoured", "clip-l14")], "claims.comparisons[0] (abstraction).favoured: no model 'clip-l14'"),
        ([_set("claims.comparisons.0.dataset", "inat-demo")], "claim 1 needs a dataset of format imagenet, 'inat-demo' is inat2021"),
        ([_set("claims.comparisons.1.favoured_sweep", "twin"), _set("claims.comparisons.1.favoured", "clip-b16")],
         "sweep 'twin' does not train 'clip-b16'"),
        ([_set("claims.comparisons.2.role", "primary")], "claim 2 has 2 primary comparisons ['traits-inat', 'traits-imagenet']"),
        ([_set("features", {"saes": {"sweeps": ["twin", "permuted"]}})],
         "get no concept tables; features.saes must pick every SAE"),
        ([_set("claims.spec_grid.imagenet.n_top", [8, 16])], "claims.spec_grid.imagenet.n_top: 'n_top' needs the top images again"),
        ([_set("claims.spec_grid.inat.clade_purty", [0.8])], "'clade_purty' is not a label threshold"),
        ([_set("claims.null_sweep", "twin")], "claims.null_sweep: 'twin' is not a sweep with permute_dims: true"),
        ([_set("claims.baselines", ["vit-x"])], "claims.baselines: no model 'vit-x'; the config has"),
        ([_set("claims.baselines", ["clip-b16"])],
         "claims.baselines: 'clip-b16' is compared in claims.comparisons (abstraction); a baseline is a model"),
        ([_set("models.mae-s16", MAE), _set("sweeps.paper.models", ["dinov2-s14", "clip-b16"]),
          _set("claims.baselines", ["mae-s16"])],
         "claims.baselines: 'mae-s16' is trained by none of the compared sweeps ['paper']; add it to a sweep's models"),
        ([_set("models.mae-s16", {**MAE, "layers": [5]}), _set("claims.baselines", ["mae-s16"])],
         "claims.baselines: comparison abstraction is at layer 10, which is not among models.mae-s16.layers [5]"),
    ],
)  # fmt: skip
def test_a_claims_setting_the_run_cannot_honour_is_a_config_error_naming_the_key(edits, message):
    def edit(cfg):
        for e in edits:
            e(cfg)

    assert message in _claims_error(edit)


def test_baselines_are_read_into_the_claims_and_default_to_none():
    assert build(validate(demo_config())).claims.baselines == ("vit-t16",)  # the demo's third model
    cfg = demo_config()
    del cfg["claims"]["baselines"]
    assert build(validate(cfg)).claims.baselines == ()
    cfg["models"]["mae-s16"] = MAE
    cfg["claims"]["baselines"] = ["mae-s16"]
    assert build(validate(cfg)).claims.baselines == ("mae-s16",)


def test_a_timm_model_must_be_a_vit_with_a_class_token_and_a_patch_grid(tmp_path):
    cfg = validate(demo_config())
    cfg["models"]["mae-b16"] = {**MAE, "init_seed": 0}
    check_models(cfg, cache=tmp_path / "depths.json")  # any timm ViT by name and tag
    cfg["models"]["r18"] = {**MAE, "arch": "resnet18", "init_seed": 0}
    with pytest.raises(ConfigError) as e:
        check_models(cfg, cache=tmp_path / "depths.json")
    assert str(e.value) == (
        "config: models.r18.arch: family timm: timm model 'resnet18' builds a ResNet, not a timm "
        "VisionTransformer; family timm takes a ViT with a class token and a fixed patch grid "
        "(e.g. vit_base_patch16_224.augreg2_in21k_ft_in1k, vit_base_patch16_224.mae)"
    )


def test_a_sweep_for_an_unknown_model_is_named():
    cfg = demo_config()
    cfg["sweeps"]["twin"]["models"] = ["dinov2-s15"]
    with pytest.raises(ConfigError, match=r"sweeps.twin.models names \['dinov2-s15'\], which are not models"):
        validate(cfg)


def test_rating_and_browser_settings_default_to_the_packages_and_bad_names_fail():
    from vitsae.analysis.settings import BrowserSettings, RatingSettings

    run = build(validate(demo_config()))
    import dataclasses

    default = RatingSettings()  # the schema's defaults are the dataclass's (``correct`` sorted by label)
    assert run.rating == dataclasses.replace(default, correct=tuple(sorted(default.correct)))
    assert run.browser == BrowserSettings()
    cfg = demo_config()
    cfg["rating"] = {"correct": {"abstract": ["semantic abstracion"]}}
    with pytest.raises(ConfigError, match=r"rating.correct.abstract: 'semantic abstracion' is not one of"):
        build(validate(cfg))
    cfg = demo_config()
    cfg["rating"] = {"catch_category": "noise"}
    with pytest.raises(ConfigError, match=r"rating.catch_category: 'noise' is not one of rating.categories"):
        build(validate(cfg))
    cfg = demo_config()
    cfg["browser"] = {"sweeps": ["papers"]}
    with pytest.raises(ConfigError, match=r"browser.sweeps: 'papers' has no concept tables"):
        build(validate(cfg))
