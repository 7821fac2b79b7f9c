"""The WordNet 3.0 noun hierarchy above the 1000 ImageNet-1K classes, from a committed table.

An ImageNet wnid is ``'n'`` + the 8-digit offset of a noun synset in WordNet 3.0's ``data.noun``
(``n02123045`` = offset 2123045 = tabby.n.01). :func:`build_tables` parses ``data.noun`` and
``index.noun`` directly (no nltk) and writes two tab-separated files, committed under ``data/`` so that
no machine that runs the pipeline needs WordNet installed:

``data/imagenet1k_hierarchy.tsv``
    one row per (class, hypernym path): ``class_index  wnid  path_index  path``; ``class_index`` is the
    class's position in timm's ``imagenet_synsets.txt`` (the standard ImageNet-1K order), ``path`` the
    wnids from ``n00001740`` (entity.n.01) down to the class, joined by ``/``. Paths follow the hypernym
    pointers ``@`` (hypernym) and ``@i`` (instance hypernym); a class with several hypernyms has several
    paths (304 of the 1000 classes), numbered from 0 in lexicographic order of their wnid lists.
``data/imagenet1k_synsets.tsv``
    one row per synset on any of those paths: ``wnid  name  depth  lemmas  gloss``; ``name`` is nltk's
    synset name (``<first lemma, lower case>.n.<sense number in index.noun, 2 digits>``, e.g.
    ``tabby.n.01``), ``lemmas`` the synset's words joined by ``,``.

Both files start with ``#`` lines naming their source (with the sha256 of ``data.noun``); regenerate with
``python -m vitsae.analysis.wordnet --wordnet /usr/share/wordnet --out data`` (Debian package ``wordnet-base``).

Definitions used by every later stage
-------------------------------------
* ``depth(s)``: the number of hypernym edges on the *shortest* path from ``s`` up to entity.n.01
  (nltk's ``min_depth``; entity has depth 0). ImageNet classes have depth 4-17, median 10.
* ``ancestors(s)``: every synset on any path of ``s``, ``s`` itself included.
* ``max_depth(s)``: edges on the *longest* path from ``s`` up to entity.n.01 (nltk's ``max_depth``).
* ``lca(wnids)``: of the synsets that are ancestors of every given wnid (over all their paths), the one
  with the greatest ``max_depth``; ties go to the greater ``depth``, then to the smaller wnid. Ranking by
  the longest path (as nltk's ``lowest_common_hypernyms`` does) matters with several paths: a synset's
  ``max_depth`` always exceeds its ancestors', so the chosen one is never an ancestor of another common
  ancestor, while by shortest-path depth cat.n.01 (13) would beat its own descendant domestic_cat.n.01
  (8, via domestic_animal). Returned with its ``depth`` (shortest path). Examples: tabby + tiger →
  feline.n.01 (depth 12); tabby + golden retriever → carnivore.n.01; a single wnid → itself.
* ``similarity(a, b)``: Wu-Palmer as nltk computes it, ``2·(m+1) / (d(a,l) + d(b,l) + 2·(m+1))`` with
  ``l = lca([a, b])``, ``m = max_depth(l)`` and ``d(x, l)`` the fewest hypernym edges from ``x`` up to
  ``l``; 1 for ``a == b``, in (0, 1] always (entity counts as depth 0, hence the +1).
* ``branches(s)``: the *top-level branches* of ``s``: the synsets at depth index ``BRANCH_DEPTH`` (= 6,
  counted in nodes below entity along each path) of its paths; a path shorter than that contributes its
  class. Depth 6 is where ImageNet's broad kinds separate: animal.n.01 (398 classes), device.n.01 (118),
  container, clothing, conveyance, equipment, implement, structure's kinds, food kinds, fungus, ...;
  at depths 4-5 all animals, plants and fungi share one node (living_thing / organism) and half the
  classes share artifact / instrumentality. :func:`n_branches` of a set of classes is the size of a
  greedy set cover of the classes by their branches (largest cover first, ties by wnid): exactly 1
  when one branch holds them all, an upper bound of the minimum otherwise.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vitsae.atomic import atomic_write
from vitsae.data.manifest import imagenet_wnids

ROOT_WNID = "n00001740"  # entity.n.01
ANIMAL_WNID = "n00015388"  # animal.n.01
ARTIFACT_WNID = "n00021939"  # artifact.n.01
BRANCH_DEPTH = 6
DATA_DIR = Path(__file__).resolve().parents[2] / "data"
HIERARCHY_FILE = "imagenet1k_hierarchy.tsv"
SYNSETS_FILE = "imagenet1k_synsets.tsv"
HIERARCHY_COLUMNS = ("class_index", "wnid", "path_index", "path")
SYNSET_COLUMNS = ("wnid", "name", "depth", "lemmas", "gloss")
HYPERNYM_POINTERS = ("@", "@i")


class WordNetError(RuntimeError):
    """The WordNet database or the committed hierarchy table is missing or inconsistent."""


# --------------------------------------------------------------------------------------------
# Parsing WordNet 3.0 (data.noun, index.noun) and building the committed tables


@dataclass(frozen=True)
class NounSynset:
    offset: int
    lemmas: tuple[str, ...]
    hypernyms: tuple[int, ...]  # offsets, via '@' and '@i'
    gloss: str


def wnid_of(offset: int) -> str:
    return f"n{offset:08d}"


def offset_of(wnid: str) -> int:
    if len(wnid) != 9 or wnid[0] != "n" or not wnid[1:].isdigit():
        raise ValueError(f"{wnid!r} is not a WordNet noun id (n + 8 digits, e.g. n02123045)")
    return int(wnid[1:])


def parse_data_noun(path: str | os.PathLike) -> dict[int, NounSynset]:
    """offset → synset of every line of WordNet's ``data.noun`` (license header lines skipped).

    Line format (wndb(5)): ``offset lex_filenum ss_type w_cnt(hex) [word lex_id]... p_cnt
    [symbol offset pos source/target]... | gloss``.
    """
    synsets: dict[int, NounSynset] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.startswith("  "):
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            try:
                offset = int(fields[0])
                w_cnt = int(fields[3], 16)
                lemmas = tuple(fields[4 : 4 + 2 * w_cnt : 2])
                p_cnt = int(fields[4 + 2 * w_cnt])
                pointers = fields[5 + 2 * w_cnt : 5 + 2 * w_cnt + 4 * p_cnt]
            except (IndexError, ValueError) as e:
                raise WordNetError(
                    f"{path}:{number} is not a WordNet data.noun line ({e}): {line[:80]!r}"
                ) from e
            hypernyms = tuple(
                int(pointers[i + 1])
                for i in range(0, len(pointers), 4)
                if pointers[i] in HYPERNYM_POINTERS and pointers[i + 2] == "n"
            )
            synsets[offset] = NounSynset(offset, lemmas, hypernyms, gloss.strip())
    return synsets


def parse_index_noun(path: str | os.PathLike) -> dict[str, list[int]]:
    """lemma (lower case) → its synset offsets in sense order, from WordNet's ``index.noun``."""
    senses: dict[str, list[int]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):
                continue
            fields = line.split()
            synset_cnt = int(fields[2])
            senses[fields[0]] = [int(x) for x in fields[len(fields) - synset_cnt :]]
    return senses


def synset_name(synset: NounSynset, senses: dict[str, list[int]]) -> str:
    """nltk's name of a noun synset: ``<first lemma, lower case>.n.<sense number, 2 digits>``."""
    lemma = synset.lemmas[0].lower()
    return f"{lemma}.n.{senses[lemma].index(synset.offset) + 1:02d}"


def hypernym_paths(offset: int, synsets: dict[int, NounSynset]) -> list[tuple[int, ...]]:
    """Every path of offsets from the root down to ``offset``, sorted lexicographically."""

    @functools.cache
    def up(o: int) -> tuple[tuple[int, ...], ...]:
        parents = synsets[o].hypernyms
        if not parents:
            return ((o,),)
        return tuple(p + (o,) for h in parents for p in up(h))

    return sorted(set(up(offset)))


def _clean(text: str) -> str:
    return " ".join(text.replace("\t", " ").split())


def build_tables(wordnet_dir: str | os.PathLike, wnids: Sequence[str] | None = None) -> dict[str, str]:
    """The text of the two committed tables (file name → content) for ``wnids`` (default: ImageNet-1K)."""
    wordnet_dir = Path(wordnet_dir)
    data_noun, index_noun = wordnet_dir / "data.noun", wordnet_dir / "index.noun"
    for p in (data_noun, index_noun):
        if not p.is_file():
            raise WordNetError(
                f"{p} does not exist; install WordNet 3.0 (Debian/Ubuntu: apt-get install wordnet-base, "
                "files in /usr/share/wordnet) or pass its directory"
            )
    wnids = list(imagenet_wnids() if wnids is None else wnids)
    synsets = parse_data_noun(data_noun)
    senses = parse_index_noun(index_noun)
    sha = hashlib.sha256(data_noun.read_bytes()).hexdigest()
    header = (
        f"# derived from WordNet 3.0 data.noun (sha256 {sha}) and index.noun by vitsae.analysis.wordnet.build_tables;\n"
        "# regenerate with: python -m vitsae.analysis.wordnet --wordnet /usr/share/wordnet --out data\n"
    )
    rows, nodes = [], set()
    for index, wnid in enumerate(wnids):
        offset = offset_of(wnid)
        if offset not in synsets:
            raise WordNetError(f"{wnid} is not a noun synset offset in {data_noun}; is this WordNet 3.0?")
        for p, path in enumerate(hypernym_paths(offset, synsets)):
            if wnid_of(path[0]) != ROOT_WNID:
                raise WordNetError(f"{wnid}: a hypernym path ends at {wnid_of(path[0])}, not entity.n.01")
            rows.append(f"{index}\t{wnid}\t{p}\t{'/'.join(wnid_of(o) for o in path)}\n")
            nodes.update(path)
    depth: dict[int, int] = {}
    for o in nodes:
        depth[o] = min(len(p) - 1 for p in hypernym_paths(o, synsets))
    synset_rows = [
        f"{wnid_of(o)}\t{synset_name(synsets[o], senses)}\t{depth[o]}\t{','.join(synsets[o].lemmas)}\t"
        f"{_clean(synsets[o].gloss)}\n"
        for o in sorted(nodes)
    ]
    return {
        HIERARCHY_FILE: header + "\t".join(HIERARCHY_COLUMNS) + "\n" + "".join(rows),
        SYNSETS_FILE: header + "\t".join(SYNSET_COLUMNS) + "\n" + "".join(synset_rows),
    }


def write_tables(wordnet_dir: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    out_dir = Path(out_dir)
    written = []
    for name, text in build_tables(wordnet_dir).items():
        written.append(
            atomic_write(out_dir / name, lambda p, text=text: p.write_text(text, encoding="utf-8"))
        )
    return written


# --------------------------------------------------------------------------------------------
# The hierarchy, from the committed tables alone


def _read_tsv(path: Path, columns: Sequence[str]) -> list[list[str]]:
    if not path.is_file():
        raise WordNetError(
            f"{path} does not exist; it is committed with vitsae (data/), or regenerate it with "
            "python -m vitsae.analysis.wordnet --wordnet /usr/share/wordnet --out data"
        )
    lines = [
        ln.rstrip("\n") for ln in path.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")
    ]
    if not lines or tuple(lines[0].split("\t")) != tuple(columns):
        header = "\t".join(columns)
        raise WordNetError(f"{path} does not start with the header {header!r}; regenerate it")
    rows = [ln.split("\t") for ln in lines[1:]]
    for n, row in enumerate(rows, 2):
        if len(row) != len(columns):
            raise WordNetError(f"{path}: data line {n} has {len(row)} fields, expected {len(columns)}")
    return rows


@dataclass
class Hierarchy:
    """ImageNet-1K classes and their WordNet ancestors; see the module docstring for every definition."""

    classes: list[str]  # wnids in class-index order
    paths: dict[str, list[tuple[str, ...]]]  # class wnid → paths root..class
    names: dict[str, str]  # wnid → nltk-style name, for every synset on a path
    depths: dict[str, int]
    lemmas: dict[str, tuple[str, ...]]
    glosses: dict[str, str]
    _ancestor_dist: dict[str, dict[str, int]] = field(default_factory=dict, repr=False)
    _max_depth: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for wnid, paths in self.paths.items():
            dist: dict[str, int] = {}
            for path in paths:
                for i, node in enumerate(path):
                    d = len(path) - 1 - i
                    dist[node] = min(d, dist.get(node, d))
                    self._max_depth[node] = max(i, self._max_depth.get(node, 0))
            self._ancestor_dist[wnid] = dist
        self.class_index = {w: i for i, w in enumerate(self.classes)}

    def _check(self, wnid: str) -> None:
        if wnid not in self.paths:
            raise KeyError(
                f"{wnid!r} is not one of the {len(self.classes)} classes of the WordNet hierarchy table "
                "(ImageNet-1K wnids such as n02123045); check the manifest's label column"
            )

    def name(self, wnid: str) -> str:
        return self.names[wnid]

    def depth(self, wnid: str) -> int:
        """Fewest hypernym edges from ``wnid`` (a class or any synset on a path) up to entity.n.01."""
        return self.depths[wnid]

    def max_depth(self, wnid: str) -> int:
        """Edges on the longest path from ``wnid`` (a class or any synset on a path) up to entity.n.01."""
        return self._max_depth[wnid]

    def ancestors(self, wnid: str) -> set[str]:
        """Every synset on any hypernym path of class ``wnid``, itself included."""
        self._check(wnid)
        return set(self._ancestor_dist[wnid])

    def hypernym_paths(self, wnid: str) -> list[tuple[str, ...]]:
        self._check(wnid)
        return list(self.paths[wnid])

    def distance_up(self, wnid: str, ancestor: str) -> int:
        """Fewest hypernym edges from class ``wnid`` up to ``ancestor``."""
        self._check(wnid)
        return self._ancestor_dist[wnid][ancestor]

    def lca(self, wnids: Iterable[str]) -> tuple[str, int]:
        """(wnid, depth) of the lowest common ancestor of ``wnids`` (deepest shared synset, see module doc)."""
        wnids = list(dict.fromkeys(wnids))
        if not wnids:
            raise ValueError("lca() of no classes")
        for w in wnids:
            self._check(w)
        common = set(self._ancestor_dist[wnids[0]])
        for w in wnids[1:]:
            common &= self._ancestor_dist[w].keys()
        best = min(common, key=lambda s: (-self._max_depth[s], -self.depths[s], s))
        return best, self.depths[best]

    def similarity(self, a: str, b: str) -> float:
        """Wu-Palmer similarity of two classes (see module doc); 1.0 when ``a == b``."""
        if a == b:
            self._check(a)
            return 1.0
        lca, _ = self.lca([a, b])
        top = 2 * (self._max_depth[lca] + 1)
        return top / (self._ancestor_dist[a][lca] + self._ancestor_dist[b][lca] + top)

    def similarity_matrix(self, wnids: Sequence[str]) -> np.ndarray:
        """``S_CC[i, j] = similarity(wnids[i], wnids[j])`` (float64, symmetric, ones on the diagonal)."""
        n = len(wnids)
        sim_CC = np.ones((n, n))
        for i in range(n):
            for j in range(i + 1, n):
                sim_CC[i, j] = sim_CC[j, i] = self.similarity(wnids[i], wnids[j])
        return sim_CC

    def branches(self, wnid: str, depth: int = BRANCH_DEPTH) -> set[str]:
        """Top-level branches of class ``wnid``: the node at index ``depth`` of each of its paths."""
        self._check(wnid)
        return {p[min(depth, len(p) - 1)] for p in self.paths[wnid]}

    def n_branches(self, wnids: Iterable[str], depth: int = BRANCH_DEPTH) -> int:
        """How many top-level branches ``wnids`` span: greedy set cover size (module doc)."""
        left = set(wnids)
        member = {w: self.branches(w, depth) for w in left}
        count = 0
        while left:
            candidates = {b for w in left for b in member[w]}
            best = min(candidates, key=lambda b: (-sum(b in member[w] for w in left), b))
            left = {w for w in left if best not in member[w]}
            count += 1
        return count

    def descendants(self, ancestor: str) -> list[str]:
        """The classes (in class-index order) that have ``ancestor`` among their ancestors."""
        return [w for w in self.classes if ancestor in self._ancestor_dist[w]]

    def animal_classes(self) -> list[str]:
        """ImageNet-1K classes below animal.n.01 (398 of them)."""
        return self.descendants(ANIMAL_WNID)


@functools.cache
def _load_cached(directory: str) -> Hierarchy:
    directory_path = Path(directory)
    rows = _read_tsv(directory_path / HIERARCHY_FILE, HIERARCHY_COLUMNS)
    synset_rows = _read_tsv(directory_path / SYNSETS_FILE, SYNSET_COLUMNS)
    classes: list[str] = []
    paths: dict[str, list[tuple[str, ...]]] = {}
    for _, wnid, _, path in rows:
        if wnid not in paths:
            classes.append(wnid)
            paths[wnid] = []
        paths[wnid].append(tuple(path.split("/")))
    names = {r[0]: r[1] for r in synset_rows}
    missing = {n for ps in paths.values() for p in ps for n in p} - names.keys()
    if missing:
        raise WordNetError(
            f"{directory_path / SYNSETS_FILE} lacks {len(missing)} synsets that appear on paths "
            f"(e.g. {min(missing)}); regenerate both tables together"
        )
    return Hierarchy(
        classes=classes,
        paths=paths,
        names=names,
        depths={r[0]: int(r[2]) for r in synset_rows},
        lemmas={r[0]: tuple(r[3].split(",")) for r in synset_rows},
        glosses={r[0]: r[4] for r in synset_rows},
    )


def load_hierarchy(directory: str | os.PathLike | None = None) -> Hierarchy:
    """The hierarchy from the committed tables in ``directory`` (default: the repository's ``data/``)."""
    return _load_cached(str(Path(directory) if directory is not None else DATA_DIR))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the ImageNet-1K WordNet hierarchy tables.")
    parser.add_argument(
        "--wordnet", default="/usr/share/wordnet", help="directory with data.noun, index.noun"
    )
    parser.add_argument("--out", default=str(DATA_DIR), help="output directory (default: the repo's data/)")
    args = parser.parse_args(argv)
    for path in write_tables(args.wordnet, args.out):
        print(path)


if __name__ == "__main__":
    main()
