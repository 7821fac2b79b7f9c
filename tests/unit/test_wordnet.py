"""The committed WordNet hierarchy table (vitsae.wordnet) and the iNat taxonomy helpers (vitsae.taxonomy)."""

import os
import statistics
from pathlib import Path

import pandas as pd
import pytest

from vitsae.analysis import taxonomy, wordnet

WORDNET_DIR = Path(os.environ.get("VITSAE_WORDNET_DIR", "/usr/share/wordnet"))
TABBY, TIGER, GOLDEN, PERSIAN = "n02123045", "n02129604", "n02099601", "n02123394"
FELINE, CARNIVORE, ANIMAL = "n02120997", "n02075296", "n00015388"


@pytest.fixture(scope="module")
def h() -> wordnet.Hierarchy:
    return wordnet.load_hierarchy()


def test_regenerated_tables_equal_the_committed_ones_byte_for_byte():
    if not (WORDNET_DIR / "data.noun").is_file():
        reason = f"WordNet 3.0 is not installed at {WORDNET_DIR} (apt-get install wordnet-base)"
        if os.environ.get("VITSAE_REQUIRE_WORDNET"):
            pytest.fail(f"VITSAE_REQUIRE_WORDNET is set but {reason}")
        pytest.skip(reason)
    tables = wordnet.build_tables(WORDNET_DIR)
    assert set(tables) == {wordnet.HIERARCHY_FILE, wordnet.SYNSETS_FILE}
    for name, text in tables.items():
        committed = (wordnet.DATA_DIR / name).read_bytes()
        assert text.encode("utf-8") == committed, f"data/{name} differs from a fresh build; regenerate it"


def test_parser_reads_pointers_and_instance_hypernyms(tmp_path):
    # Two synsets of WordNet 3.0 as they appear in data.noun: an '@' pointer and an '@i' pointer.
    (tmp_path / "data.noun").write_text(
        "  1 license header line  \n"
        "02123045 05 n 02 tabby 1 tabby_cat 0 001 @ 02121808 n 0000 | a cat with a grey or tawny coat  \n"
        "09044862 15 n 02 United_States 0 US 0 003 @i 08544813 n 0000 + 02927512 a 0101 #p 09275016 n 0000 "
        "| North American republic  \n"
    )
    synsets = wordnet.parse_data_noun(tmp_path / "data.noun")
    assert synsets[2123045].lemmas == ("tabby", "tabby_cat")
    assert synsets[2123045].hypernyms == (2121808,)
    assert synsets[9044862].hypernyms == (8544813,)  # '@i' kept, '+' and '#p' ignored
    assert synsets[9044862].gloss == "North American republic"


def test_every_class_has_paths_from_entity(h):
    assert len(h.classes) == 1000 and h.classes[0] == "n01440764" and h.classes[-1] == "n15075141"
    for w in h.classes:
        for path in h.hypernym_paths(w):
            assert path[0] == wordnet.ROOT_WNID and path[-1] == w
    assert h.name(wordnet.ROOT_WNID) == "entity.n.01"
    assert h.name(TABBY) == "tabby.n.01" and h.name(GOLDEN) == "golden_retriever.n.01"


def test_facts_depths_and_paths(h):
    depths = [h.depth(w) for w in h.classes]
    assert (min(depths), max(depths), statistics.median(depths)) == (4, 17, 10)
    assert sum(len(h.hypernym_paths(w)) > 1 for w in h.classes) == 304
    # depth is the shortest path: tabby has a 15-edge path via cat and a 9-edge one via domestic_animal
    assert sorted(len(p) - 1 for p in h.hypernym_paths(TABBY)) == [9, 15] and h.depth(TABBY) == 9
    # no class is an ancestor of another (shared/FACTS.md)
    classes = set(h.classes)
    assert all(h.ancestors(w) & classes == {w} for w in h.classes)


def test_lca_and_similarity(h):
    assert h.lca([TABBY, TIGER]) == (FELINE, 12)
    assert h.name(h.lca([TABBY, GOLDEN])[0]) == "carnivore.n.01"
    assert h.lca([TABBY]) == (TABBY, h.depth(TABBY))
    assert h.lca([TABBY, TIGER, GOLDEN])[0] == CARNIVORE
    assert h.name(h.lca([TABBY, "n03000134"])[0]) == "whole.n.02"  # tabby + chainlink fence
    # several paths: domestic_cat (shortest depth 8, longest 14) beats its ancestor cat (13, 13)
    assert h.name(h.lca([TABBY, PERSIAN])[0]) == "domestic_cat.n.01"
    assert h.lca([TABBY, PERSIAN])[1] == 8 and h.max_depth(h.lca([TABBY, PERSIAN])[0]) == 14
    # Wu-Palmer: 2(12+1) / (d(tabby, feline)=3 + d(tiger, feline)=2 + 26); tabby-persian 30 / (1 + 1 + 30)
    assert h.similarity(TABBY, TIGER) == pytest.approx(26 / 31)
    assert h.similarity(TABBY, PERSIAN) == pytest.approx(30 / 32)
    assert h.similarity(TABBY, TABBY) == 1.0
    assert h.similarity(TABBY, PERSIAN) > h.similarity(TABBY, TIGER) > h.similarity(TABBY, GOLDEN)
    sim = h.similarity_matrix([TABBY, TIGER, GOLDEN])
    assert sim.shape == (3, 3) and (sim == sim.T).all() and sim[0, 1] == h.similarity(TABBY, TIGER)
    with pytest.raises(KeyError, match="n99999999.*label column"):
        h.lca([TABBY, "n99999999"])


def test_branches_and_animals(h):
    assert h.branches(TABBY) == {ANIMAL}
    assert h.n_branches([TABBY, TIGER, GOLDEN]) == 1
    assert h.n_branches([TABBY, "n03000134"]) == 2  # an animal and a fence
    animals = h.animal_classes()
    assert len(animals) == 398 and animals[0] == "n01440764" and TABBY in animals
    assert "n03000134" not in animals
    branch_names = {h.name(b) for w in h.classes for b in h.branches(w)}
    assert {"animal.n.01", "device.n.01", "container.n.01", "clothing.n.01"} <= branch_names


def test_missing_table_says_how_to_regenerate(tmp_path):
    with pytest.raises(wordnet.WordNetError, match="python -m vitsae.analysis.wordnet"):
        wordnet.load_hierarchy(tmp_path)


def _taxa(rows: list[str]) -> pd.DataFrame:
    return pd.DataFrame([r.split() for r in rows], columns=list(reversed(taxonomy.RANKS)))


def test_taxonomy_purity_and_deepest_rank():
    k, p, c = "Animalia", "Chordata", "Aves"
    taxa = _taxa(
        [
            f"{k} {p} {c} Passeriformes Paridae Parus Parus_major",
            f"{k} {p} {c} Passeriformes Paridae Parus Parus_minor",
            f"{k} {p} {c} Passeriformes Paridae Parus Parus_major",
            f"{k} {p} {c} Passeriformes Corvidae Corvus Corvus_corax",
        ]
    )
    assert taxonomy.purities(taxa) == {
        "species": 0.5, "genus": 0.75, "family": 0.75, "order": 1.0, "class": 1.0, "phylum": 1.0, "kingdom": 1.0,
    }  # fmt: skip
    assert taxonomy.deepest_agreeing_rank(taxa) == "order"
    assert taxonomy.deepest_agreeing_rank(taxa, min_purity=0.75) == "genus"
    assert taxonomy.n_clades(taxa, "species") == 3
    # same genus name in two families is two genera
    twins = _taxa([f"{k} {p} {c} O F1 G G_a", f"{k} {p} {c} O F2 G G_b"])
    assert taxonomy.purity(twins, "genus") == 0.5
    with pytest.raises(KeyError, match="inat2021"):
        taxonomy.purity(pd.DataFrame({"label": ["x"]}), "genus")
