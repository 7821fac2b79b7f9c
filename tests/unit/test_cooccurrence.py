"""The co-occurrence control of "abstract" (vitsae.analysis.cooccurrence): a feature whose major classes of
different branches appear in the same photos (ReaL-style multi-labels) is co-occurrence, not abstract."""

import io
import json

import numpy as np
import pandas as pd
import pytest

from vitsae.analysis import concepts, cooccurrence, relabel
from vitsae.analysis.settings import ImageNetRules
from vitsae.analysis.wordnet import imagenet_wnids, load_hierarchy

CANOE, PADDLE, GOLDEN, CAB = "n02951358", "n03873416", "n02099601", "n02930766"
PER_CLASS, K = 12, 10


@pytest.fixture(scope="module")
def hierarchy():
    return load_hierarchy()


def test_pair_rates_match_a_loop_and_the_real_labels():
    rng = np.random.default_rng(0)
    labels = [sorted(set(rng.integers(0, 6, rng.integers(0, 4)).tolist())) for _ in range(300)]
    rate = cooccurrence.pair_rates(labels, 6)
    for a in range(6):
        for b in range(6):
            n_a, n_b = (sum(x in s for s in labels) for x in (a, b))
            n_ab = sum(a in s and b in s for s in labels)
            assert rate[a, b] == pytest.approx(n_ab / min(n_a, n_b) if min(n_a, n_b) else 0.0)
    # ReaL, as timm ships it: the pairs the issue names, and a pair that never meets
    wnids = imagenet_wnids()
    real = cooccurrence.pair_rates(cooccurrence.load_multilabels(cooccurrence.resolve("real", "")))
    i = {w: wnids.index(w) for w in (CANOE, PADDLE, GOLDEN, CAB)}
    assert real[i[CANOE], i[PADDLE]] == pytest.approx(0.4839, abs=1e-4)
    assert real[i[GOLDEN], i[CAB]] == 0.0


def test_bad_multilabel_files_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        cooccurrence.load_multilabels(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps([[1, 2], [3, 1000]]))
    with pytest.raises(ValueError, match=r"entry 1 is \[3, 1000\], not a list of class indices in 0..999"):
        cooccurrence.load_multilabels(tmp_path / "bad.json")
    (tmp_path / "text.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        cooccurrence.load_multilabels(tmp_path / "text.json")


@pytest.fixture(scope="module")
def scene(hierarchy):
    """Feature 0: top images half canoe, half paddle (two branches: conveyance, implement); feature 1:
    half golden retriever, half cab. Random descriptors: both pass every other test of abstract."""
    others = [w for w in hierarchy.classes[::40] if w not in (CANOE, PADDLE, GOLDEN, CAB)][:30]
    classes = [CANOE, PADDLE, GOLDEN, CAB, *others]
    labels = np.repeat(classes, PER_CLASS)
    rng = np.random.default_rng(1)
    desc = rng.random((len(labels), 48)).astype(np.float32)
    top_FK = np.array([[*range(5), *range(12, 17)], [*range(24, 29), *range(36, 41)]])
    map_FKT = rng.random((2, K, 4)).astype(np.float32)
    return labels, desc, top_FK, map_FKT


def _multilabels(tmp_path, pairs_together: int) -> str:
    """A ReaL-style file: 20 canoe images, ``pairs_together`` of them also showing a paddle; 20 paddle
    images; golden retrievers and cabs never together."""
    w = {x: imagenet_wnids().index(x) for x in (CANOE, PADDLE, GOLDEN, CAB)}
    rows = [[w[CANOE], w[PADDLE]] if i < pairs_together else [w[CANOE]] for i in range(20)]
    rows += [[w[PADDLE]]] * 20 + [[w[GOLDEN]]] * 20 + [[w[CAB]]] * 20 + [[]]
    path = tmp_path / f"ml{pairs_together}.json"
    path.write_text(json.dumps(rows))
    return str(path)


def test_classes_that_share_photos_are_cooccurrence_not_abstract(scene, hierarchy, tmp_path):
    labels, desc, top_FK, map_FKT = scene
    table = concepts.imagenet_table(top_FK, map_FKT, labels, hierarchy, desc,
                                    context=concepts.imagenet_context(labels, hierarchy, desc,
                                                                      multilabels=_multilabels(tmp_path, 8)))  # fmt: skip
    canoe, dog_cab = table.set_index("feature").loc[0], table.set_index("feature").loc[1]
    # 8 of the 20 canoe images (the rarer: 28 paddle images) show a paddle: rate 0.4
    assert canoe["major_cooccurrence"] == pytest.approx(0.4) and canoe["label"] == "co-occurrence", (
        canoe.to_dict()
    )
    assert (
        canoe["cooccurring_pairs"] == f"{CANOE}|{PADDLE}:0.4" and canoe["branch_pair"] == "artifact-artifact"
    )
    assert dog_cab["major_cooccurrence"] == 0.0 and dog_cab["label"] == "abstract", dog_cab.to_dict()
    assert dog_cab["branch_pair"] == "animal-artifact"
    # rarely together (1 of 20: 0.05 < 0.1): abstract again; without multi-labels the control is off
    rare = concepts.imagenet_table(top_FK, map_FKT, labels, hierarchy, desc,
                                   context=concepts.imagenet_context(labels, hierarchy, desc,
                                                                     multilabels=_multilabels(tmp_path, 1)))  # fmt: skip
    assert rare.loc[0, "major_cooccurrence"] == pytest.approx(0.05) and rare.loc[0, "label"] == "abstract"
    off = concepts.imagenet_table(top_FK, map_FKT, labels, hierarchy, desc)
    assert np.isnan(off.loc[0, "major_cooccurrence"]) and off.loc[0, "label"] == "abstract"


@pytest.mark.parametrize("rate,share", [(0.3, 0.15), (0.5, 0.15), (0.3, 0.6)])
def test_relabel_agrees_with_a_table_built_with_the_other_rules(scene, hierarchy, tmp_path, rate, share):
    labels, desc, top_FK, map_FKT = scene
    ml = _multilabels(tmp_path, 8)
    base = concepts.imagenet_table(top_FK, map_FKT, labels, hierarchy, desc,
                                   context=concepts.imagenet_context(labels, hierarchy, desc, multilabels=ml))  # fmt: skip
    saved = pd.read_csv(io.StringIO(base.to_csv(index=False)))  # as the claims job reads it
    rules = ImageNetRules(cooccurrence_min_rate=rate, abstract_min_class_share=share)
    direct = concepts.imagenet_table(top_FK, map_FKT, labels, hierarchy, desc, rules,
                                     context=concepts.imagenet_context(labels, hierarchy, desc, rules, multilabels=ml))  # fmt: skip
    again = relabel.relabel(saved, "imagenet", rules, hierarchy)
    assert again["label"].tolist() == direct["label"].tolist()
    assert again.loc[0, "label"] == ("co-occurrence" if rate <= 0.4 and share <= 0.5 else
                                     "abstract" if share <= 0.5 else "unclear")  # fmt: skip
