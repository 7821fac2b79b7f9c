"""Synthetic demo datasets in the real on-disk layouts, with visual concepts planted at known levels.

Two generators write small JPEG datasets that every later stage reads exactly as it reads the real ones:

- :func:`make_imagenet_demo`: ``root/{train,val}/<wnid>/<wnid>_<i>.JPEG`` with 12 real ImageNet-1K
  classes from 4 WordNet subtrees (dogs, cats, cars, musical instruments).
- :func:`make_inat_demo`: ``root/{train_mini,val}/<id:05d>_<Kingdom>_..._<epithet>/<uuid>.jpg`` plus
  ``root/train_mini.json`` and ``root/val.json`` in iNat2021's COCO-style format, with 16 real insect
  species in 6 genera, 4 families and 2 orders (every order has 2 families, so an order-level concept
  is not also a family-level one).

Each image is a background texture with two to four flat-coloured objects on it (numpy + PIL, cheap).
The concepts, listed in :data:`PLANTED` (one row per concept), are:

- ``texture``: the background pattern, shared by a WordNet subtree (ImageNet, level ``subtree``) or an
  order (iNat, level ``order``);
- ``part``: a shape of one colour shared by all species of a genus (iNat, level ``genus``);
- ``motif``: a two-colour bullseye shared by classes from different subtrees / orders (level ``motif``): a
  shared *visual* pattern, the negative control of ImageNet's ``abstract`` label (it must be labelled
  ``visual-motif``, :mod:`vitsae.analysis.regions`) and, in iNat, a convergent pattern (``cross-clade``);
- ``class_shape``: a shape of one colour unique to a class (level ``class``) or species (level ``species``),
  drawn twice in each of its images (:data:`SHAPE_COPIES`).

``members`` are the labels a manifest gives these images: wnids for ImageNet, species directory names
(``00012_Animalia_..._Vanessa_atalanta``) for iNat. Every drawn colour is a point of the grid
{0, 85, 170, 255}^3 used by one concept only, and every object colour is an *extreme point* of its
dataset's colours (objects and texture tones): on an edge of the RGB cube, not a corner, never inside the
convex hull of the others. A random-weight ViT is close to linear in the pixels (DINOv2's LayerScale
starts at 1e-5), and a ReLU feature (one half-space) can pick out a flat colour only if no mix of the
other colours equals it: with interior colours the demo of 2026-11 recovered 3 of 16 iNat species shapes,
with palettes of extreme colours (checked by ``tests/test_demo.py``) 13-15 of 16.

The demo's SAEs see 100k tokens, so a species shape on ~0.25% of them gets few gradient steps, and the
feature of a nearby colour absorbs it: with one copy per image, the patches of the rose red arrow of *H.
variegata* most excited a feature of *C. septempunctata*'s violet shape in all four DINOv2 SAEs. So every
shape is solid (on average it fills at least 85% of its best 14 px patch and 75% of its best 16 px one;
``tests/test_demo.py``) and a class's shape is drawn twice: on the demo 16 of 16 iNat species shapes and 6
of 6 genus parts were found, against 14 and 5 with thin shapes and one copy, 13 and 6 with solid shapes
and one copy.

A concept is found in an image by its colour(s) within a tolerance of ~40 per channel (object jitter is at
most 8, noise sigma 4, JPEG 4:4:4 at quality 90); the textures have period 8 px and are told apart by
their Fourier peaks. Positions (one object per quadrant, random quadrants and offsets), scale (+-15%),
colours and noise vary per image; everything is drawn from ``numpy.random.default_rng([seed, ...])``, so
one seed gives byte-identical files.

Both generators build the tree beside ``root`` and move it into place (:func:`vitsae.atomic.atomic_dir`). An existing
``root`` is replaced only if it is empty or was made by this module (it holds ``.vitsae-demo.json``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vitsae.atomic import atomic_dir

RGB = tuple[int, int, int]

MARKER_NAME = ".vitsae-demo.json"
MULTILABELS_NAME = "val_multilabels.json"  # imagenet-demo: per val image, its classes (ReaL format)
JPEG_QUALITY = 90
TEXTURE_PERIOD = 8  # pixels; stripes and checks are TEXTURE_PERIOD // 2 wide
OBJECT_JITTER = 8  # max per-channel colour shift of one drawn object
NOISE_SIGMA = 4.0
MIN_IMAGE_SIZE = 48
SHAPE_COPIES = 2  # copies of the class / species shape in each image of its class

# ---------------------------------------------------------------------------------------------------
# Classes and taxa
# ---------------------------------------------------------------------------------------------------


def _palette(table: str) -> dict[str, tuple[str, RGB]]:
    """A table of ``key shape r g b`` rows (the key may hold spaces) as key → (shape, colour)."""
    out = {}
    for line in table.strip().splitlines():
        *key, shape, r, g, b = line.split()
        out[" ".join(key)] = (shape, (int(r), int(g), int(b)))
    return out


def _rows(table: str, columns: int) -> list[list[str]]:
    """The rows of a table written as text, one row a line: ``columns`` fields separated by spaces, the
    last taking the rest of the line (it may hold spaces: a name)."""
    return [line.split(maxsplit=columns - 1) for line in table.strip().splitlines()]


#: WordNet subtree name -> its root synset (WordNet 3.0 noun offset as a wnid).
IMAGENET_DEMO_SUBTREES: dict[str, str] = {
    "dogs": "n02084071",  # dog, domestic dog, Canis familiaris
    "cats": "n02120997",  # feline, felid
    "cars": "n02958343",  # car, auto, automobile
    "instruments": "n03800933",  # musical instrument, instrument
}

#: wnid -> {"name", "subtree"}; all 12 are ImageNet-1K classes.
IMAGENET_DEMO_CLASSES: dict[str, dict[str, str]] = {
    wnid: {"name": name, "subtree": subtree}
    for wnid, subtree, name in _rows(
        """
        n02085620 dogs         Chihuahua
        n02099601 dogs         golden retriever
        n02106662 dogs         German shepherd
        n02123045 cats         tabby
        n02123597 cats         Siamese cat
        n02129165 cats         lion
        n02930766 cars         cab
        n03100240 cars         convertible
        n04285008 cars         sports car
        n02676566 instruments  acoustic guitar
        n03452741 instruments  grand piano
        n04487394 instruments  trombone
        """,
        3,
    )
}


def _taxon(order: str, family: str, genus: str, epithet: str, common_name: str) -> dict[str, str]:
    return {
        "kingdom": "Animalia",
        "phylum": "Arthropoda",
        "class": "Insecta",
        "order": order,
        "family": family,
        "genus": genus,
        "specific_epithet": epithet,
        "name": f"{genus} {epithet}",
        "common_name": common_name,
        "supercategory": "Insects",
    }


_SPECIES_UNSORTED = [
    _taxon(order, family, genus, epithet, common_name)
    for order, family, genus, epithet, common_name in _rows(
        """
        Lepidoptera Nymphalidae   Vanessa    atalanta          Red Admiral
        Lepidoptera Nymphalidae   Vanessa    cardui            Painted Lady
        Lepidoptera Nymphalidae   Vanessa    virginiensis      American Lady
        Lepidoptera Nymphalidae   Danaus     plexippus         Monarch
        Lepidoptera Nymphalidae   Danaus     gilippus          Queen
        Lepidoptera Nymphalidae   Danaus     eresimus          Soldier
        Lepidoptera Papilionidae  Papilio    glaucus           Eastern Tiger Swallowtail
        Lepidoptera Papilionidae  Papilio    polyxenes         Black Swallowtail
        Coleoptera  Coccinellidae Coccinella septempunctata    Seven-spotted Lady Beetle
        Coleoptera  Coccinellidae Coccinella transversoguttata Transverse Lady Beetle
        Coleoptera  Coccinellidae Coccinella novemnotata       Nine-spotted Lady Beetle
        Coleoptera  Coccinellidae Hippodamia convergens        Convergent Lady Beetle
        Coleoptera  Coccinellidae Hippodamia variegata         Variegated Lady Beetle
        Coleoptera  Coccinellidae Hippodamia parenthesis       Parenthesis Lady Beetle
        Coleoptera  Scarabaeidae  Cotinis    nitida            Green June Beetle
        Coleoptera  Scarabaeidae  Cotinis    mutabilis         Figeater Beetle
        """,
        5,
    )
]

_RANKS = ("kingdom", "phylum", "class", "order", "family", "genus", "specific_epithet")


def _with_ids(species: list[dict[str, str]]) -> list[dict]:
    """Number species in taxonomic order (as iNat2021 does) and add ``id`` and ``image_dir_name``."""
    ordered = sorted(species, key=lambda s: tuple(s[r] for r in _RANKS))
    rows = []
    for i, s in enumerate(ordered):
        dir_name = f"{i:05d}_" + "_".join(s[r] for r in _RANKS)
        rows.append({"id": i, **s, "image_dir_name": dir_name})
    return rows


#: iNat2021 category dicts (id, name, common_name, supercategory, kingdom ... specific_epithet,
#: image_dir_name), in id order.
INAT_DEMO_SPECIES: list[dict] = _with_ids(_SPECIES_UNSORTED)

_INAT_DIR: dict[str, str] = {s["name"]: s["image_dir_name"] for s in INAT_DEMO_SPECIES}

# ---------------------------------------------------------------------------------------------------
# Concepts
# ---------------------------------------------------------------------------------------------------

TEXTURES = ("hstripes", "vstripes", "diagonal", "checker")


@dataclass(frozen=True)
class Concept:
    """One planted concept: what is drawn, in which images (``members``, manifest labels)."""

    dataset: str  # "imagenet-demo" | "inat-demo"
    concept: str
    kind: str  # "part" | "texture" | "motif" | "class_shape"
    level: str  # "genus" | "order" | "subtree" | "motif" | "class" | "species"
    members: tuple[str, ...]
    pattern: str  # a shape name (see _SHAPES), "bullseye", or a texture name (see TEXTURES)
    colours: tuple[RGB, ...]  # objects: 1 colour (bullseye: outer, inner); textures: 2 tones
    size: float = 0.0  # object side as a fraction of the image side (0 for textures)

    def row(self) -> dict:
        return {
            "dataset": self.dataset,
            "concept": self.concept,
            "kind": self.kind,
            "level": self.level,
            "members": list(self.members),
        }


_COLOUR_NAMES: dict[RGB, str] = {
    (int(r), int(g), int(b)): name
    for r, g, b, name in _rows(
        """
          0   0   0  black
        255 255 255  white
        255   0   0  red
          0 255   0  green
          0   0 255  blue
        255 255   0  yellow
          0 255 255  cyan
        255   0 255  magenta
        255 170   0  orange
         85   0   0  maroon
          0 170   0  mid green
          0  85   0  dark green
        170 255   0  lime
          0  85 170  steel blue
        170   0 255  violet
          0   0 170  navy
          0  85 255  azure
          0 170 170  teal
          0 170 255  sky blue
         85   0 170  indigo
         85   0 255  ultramarine
         85  85   0  olive
        170   0   0  dark red
        170   0  85  crimson
        170   0 170  purple
        255  85 170  pink
        170 170  85  khaki
         85  85 170  slate
         85  85  85  grey
        170  85  85  rose
         85 170  85  sage
        170  85   0  brown
        255 255 170  cream
        170 170 255  lavender
        170 170 170  silver
        255 170 170  light pink
        170 255 170  pale green
        255 170  85  tan
          0 255  85  spring green
         85 255 170  mint
          0   0  85  midnight
        255   0 170  rose red
         85 255 255  aqua
         85  85 255  periwinkle
          0 255 170  sea green
        170  85 170  mauve
        255  85 255  orchid
        255  85  85  salmon
         85 170 170  cadet
         85 255   0  chartreuse
        255  85   0  vermilion
        170 255 255  pale cyan
        255 170 255  light magenta
        255   0  85  scarlet
        255 255  85  light yellow
        """,
        4,
    )
}

_TEXTURE_WORDS = {
    "hstripes": "horizontal stripes",
    "vstripes": "vertical stripes",
    "diagonal": "diagonal stripes",
    "checker": "checkerboard",
}


def _texture(dataset: str, level: str, members: list[str], pattern: str, dark: RGB, light: RGB) -> Concept:
    name = f"texture: {_COLOUR_NAMES[dark]}/{_COLOUR_NAMES[light]} {_TEXTURE_WORDS[pattern]}"
    return Concept(dataset, name, "texture", level, tuple(members), pattern, (dark, light))


def _object(
    dataset: str, kind: str, level: str, members: list[str], shape: str, colour: RGB, size: float
) -> Concept:
    word = {"part": "part", "class_shape": "shape"}[kind]
    name = f"{word}: {_COLOUR_NAMES[colour]} {shape.replace('_', ' ')}"
    return Concept(dataset, name, kind, level, tuple(members), shape, (colour,), size)


def _motif(dataset: str, members: list[str], outer: RGB, inner: RGB) -> Concept:
    name = f"motif: {_COLOUR_NAMES[outer]}/{_COLOUR_NAMES[inner]} bullseye"
    return Concept(dataset, name, "motif", "motif", tuple(members), "bullseye", (outer, inner), 0.3)


_CLASS_SIZE = 0.3
_PART_SIZE = 0.28


def _imagenet_concepts() -> list[Concept]:
    ds = "imagenet-demo"
    by_subtree = {
        st: [w for w, c in IMAGENET_DEMO_CLASSES.items() if c["subtree"] == st]
        for st in IMAGENET_DEMO_SUBTREES
    }
    concepts = [
        _texture(ds, "subtree", by_subtree["dogs"], "hstripes", (170, 170, 85), (170, 255, 170)),
        _texture(ds, "subtree", by_subtree["cats"], "vstripes", (85, 85, 170), (170, 170, 255)),
        _texture(ds, "subtree", by_subtree["cars"], "diagonal", (85, 85, 85), (170, 170, 170)),
        _texture(ds, "subtree", by_subtree["instruments"], "checker", (170, 85, 85), (255, 170, 170)),
        # golden retriever, cab, trombone: a dog, a car and an instrument
        _motif(ds, ["n02099601", "n02930766", "n04487394"], (85, 255, 0), (0, 170, 255)),
    ]
    shapes = _palette(
        """
            n02085620 circle        170   0   0
            n02099601 square        255 170   0
            n02106662 triangle        0  85   0
            n02123045 diamond         0 255  85
            n02123597 plus           85   0 255
            n02129165 star          170 255   0
            n02930766 ring          255 255  85
            n03100240 pentagon        0  85 255
            n04285008 hexagon         0   0 170
            n02676566 wide_ellipse  255  85 255
            n03452741 tall_bar      255   0 170
            n04487394 trapezoid     170 255 255
        """
    )
    for wnid, (shape, colour) in shapes.items():
        concepts.append(_object(ds, "class_shape", "class", [wnid], shape, colour, _CLASS_SIZE))
    return concepts


def _inat_concepts() -> list[Concept]:
    ds = "inat-demo"

    def members(rank: str, value: str) -> list[str]:
        return [s["image_dir_name"] for s in INAT_DEMO_SPECIES if s[rank] == value]

    concepts = [
        _texture(ds, "order", members("order", "Lepidoptera"), "diagonal", (85, 170, 85), (170, 255, 170)),
        _texture(ds, "order", members("order", "Coleoptera"), "checker", (170, 85, 0), (255, 170, 85)),
    ]
    # iNat needs 24 object colours: the 24 points inside the RGB cube's edges (not the corners), the most
    # that are all extreme points (module docstring). The two points of an edge are one grid step apart
    # and easier to confuse: the motif takes both points of one edge (always drawn together), and every
    # other pair is split between a butterfly and a beetle concept (parts with parts, shapes with shapes).
    # Species shapes keep three steps from every other concept of their genus and, where the palette allows,
    # from their order's texture tones (a search over the 16! assignments; tests/unit/test_demo.py checks it).
    parts = _palette(
        """
            Vanessa    wide_bar      255  85   0
            Danaus     down_triangle 255 255  85
            Papilio    chevron       170 255   0
            Coccinella circle        255 170   0
            Hippodamia square        255 255 170
            Cotinis    diamond        85 255   0
        """
    )
    for genus, (shape, colour) in parts.items():
        concepts.append(_object(ds, "part", "genus", members("genus", genus), shape, colour, _PART_SIZE))
    concepts.append(
        _motif(
            ds,
            [_INAT_DIR["Vanessa cardui"], _INAT_DIR["Hippodamia convergens"]],
            (85, 255, 255),
            (170, 255, 255),
        )
    )
    species = _palette(
        """
            Vanessa    atalanta          triangle       0 255  85
            Vanessa    cardui            plus           0   0  85
            Vanessa    virginiensis      star          85   0 255
            Danaus     plexippus         hexagon      170   0   0
            Danaus     gilippus          pentagon       0  85   0
            Danaus     eresimus          ring         255 170 255
            Papilio    glaucus           wide_ellipse   0 170 255
            Papilio    polyxenes         tall_bar     255   0  85
            Coccinella septempunctata    trapezoid    170   0 255
            Coccinella transversoguttata cross          0   0 170
            Coccinella novemnotata       tall_ellipse  85   0   0
            Hippodamia convergens        octagon        0  85 255
            Hippodamia variegata         arrow        255   0 170
            Hippodamia parenthesis       tee            0 170   0
            Cotinis    nitida            ell          255  85 255
            Cotinis    mutabilis         half_disc      0 255 170
        """
    )
    for name, (shape, colour) in species.items():
        concepts.append(_object(ds, "class_shape", "species", [_INAT_DIR[name]], shape, colour, _CLASS_SIZE))
    return concepts


#: Every planted concept with what is drawn (colours, pattern); :data:`PLANTED` is its public table.
CONCEPTS: list[Concept] = _imagenet_concepts() + _inat_concepts()

#: One row per planted concept: dataset, concept, kind, level, members (manifest labels: wnids for
#: ImageNet, species directory names for iNat).
PLANTED: list[dict] = [c.row() for c in CONCEPTS]


def concepts_for(dataset: str, label: str) -> list[Concept]:
    """The concepts drawn into images of ``label`` in ``dataset`` ("imagenet-demo" or "inat-demo")."""
    return [c for c in CONCEPTS if c.dataset == dataset and label in c.members]


def _display(dataset: str, label: str) -> str:
    if dataset == "imagenet-demo":
        return f"{label} ({IMAGENET_DEMO_CLASSES[label]['name']})"
    return next(s["name"] for s in INAT_DEMO_SPECIES if s["image_dir_name"] == label)


def planted_table_markdown() -> str:
    """The planted concepts as a Markdown table (members shown as "wnid (name)" or "Genus epithet")."""
    lines = ["| dataset | concept | kind | level | members |", "|---|---|---|---|---|"]
    for c in CONCEPTS:
        members = ", ".join(_display(c.dataset, m) for m in c.members)
        lines.append(f"| {c.dataset} | {c.concept} | {c.kind} | {c.level} | {members} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------------------

Polygon = list[tuple[float, float]]


def _regular(n: int, start_deg: float = -90.0, radius: float = 1.0) -> Polygon:
    angles = np.deg2rad(start_deg + 360.0 * np.arange(n) / n)
    return [(radius * float(np.cos(a)), radius * float(np.sin(a))) for a in angles]


def _star() -> Polygon:
    angles = np.deg2rad(-90.0 + 36.0 * np.arange(10))
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.62)
    return [(float(r * np.cos(a)), float(r * np.sin(a))) for r, a in zip(radii, angles, strict=True)]


# Shapes in unit coordinates [-1, 1]^2 (y down): polygons, or ("ellipse", rx, ry[, inner fraction]).
_SHAPES: dict[str, Polygon | tuple] = {
    "circle": ("ellipse", 1.0, 1.0),
    "ring": ("ellipse", 1.0, 1.0, 0.25),
    "wide_ellipse": ("ellipse", 1.0, 0.75),
    "tall_ellipse": ("ellipse", 0.75, 1.0),
    "half_disc": ("half_disc",),
    "square": [(-0.9, -0.9), (0.9, -0.9), (0.9, 0.9), (-0.9, 0.9)],
    "triangle": [(0.0, -1.0), (1.0, 1.0), (-1.0, 1.0)],
    "down_triangle": [(-1.0, -1.0), (1.0, -1.0), (0.0, 1.0)],
    "diamond": [(0.0, -1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)],
    "plus": [
        (-0.45, -1),
        (0.45, -1),
        (0.45, -0.45),
        (1, -0.45),
        (1, 0.45),
        (0.45, 0.45),
        (0.45, 1),
        (-0.45, 1),
        (-0.45, 0.45),
        (-1, 0.45),
        (-1, -0.45),
        (-0.45, -0.45),
    ],
    "cross": [
        (-1, -0.45),
        (-0.45, -1),
        (0, -0.55),
        (0.45, -1),
        (1, -0.45),
        (0.55, 0),
        (1, 0.45),
        (0.45, 1),
        (0, 0.55),
        (-0.45, 1),
        (-1, 0.45),
        (-0.55, 0),
    ],
    "star": _star(),
    "pentagon": _regular(5),
    "hexagon": _regular(6, 0.0),
    "octagon": _regular(8, 22.5),
    "trapezoid": [(-0.5, -0.8), (0.5, -0.8), (1.0, 0.8), (-1.0, 0.8)],
    "tall_bar": [(-0.55, -1.0), (0.55, -1.0), (0.55, 1.0), (-0.55, 1.0)],
    "wide_bar": [(-1.0, -0.55), (1.0, -0.55), (1.0, 0.55), (-1.0, 0.55)],
    "chevron": [(-1, -0.3), (0, -1), (1, -0.3), (1, 1), (0, 0.3), (-1, 1)],
    "arrow": [(-1, -0.5), (0, -0.5), (0, -1), (1, 0), (0, 1), (0, 0.5), (-1, 0.5)],
    "tee": [(-1, -1), (1, -1), (1, -0.2), (0.45, -0.2), (0.45, 1), (-0.45, 1), (-0.45, -0.2), (-1, -0.2)],
    "ell": [(-0.9, -1), (0.1, -1), (0.1, 0.1), (0.9, 0.1), (0.9, 1), (-0.9, 1)],
}


def shape_mask(shape: str, side: int) -> np.ndarray:
    """Boolean mask_SS of ``shape`` filling a ``side`` x ``side`` box."""
    canvas = Image.new("L", (side, side), 0)
    draw = ImageDraw.Draw(canvas)
    spec = _SHAPES[shape]
    half = (side - 1) / 2.0

    def box(rx: float, ry: float) -> list[float]:
        return [half - rx * half, half - ry * half, half + rx * half, half + ry * half]

    if isinstance(spec, list):
        draw.polygon([(half + x * half, half + y * half) for x, y in spec], fill=255)
    elif spec[0] == "ellipse":
        draw.ellipse(box(spec[1], spec[2]), fill=255)
        if len(spec) == 4:
            draw.ellipse(box(spec[1] * spec[3], spec[2] * spec[3]), fill=0)
    elif spec[0] == "half_disc":  # the upper half of an ellipse twice as tall as the box: a dome filling it
        draw.pieslice([0, 0, side - 1, 2 * (side - 1)], 180, 360, fill=255)
    else:  # pragma: no cover - table above is fixed
        raise ValueError(shape)
    mask_SS = np.asarray(canvas) > 0
    return mask_SS


def texture_mask(pattern: str, size: int, phase_y: int, phase_x: int) -> np.ndarray:
    """Boolean mask_HW of the light tone of a texture with period :data:`TEXTURE_PERIOD`."""
    yy_HW, xx_HW = np.mgrid[0:size, 0:size]
    half = TEXTURE_PERIOD // 2
    y = (yy_HW + phase_y) // half
    x = (xx_HW + phase_x) // half
    if pattern == "hstripes":
        return y % 2 == 1
    if pattern == "vstripes":
        return x % 2 == 1
    if pattern == "diagonal":
        return ((yy_HW + xx_HW + phase_y + phase_x) // half) % 2 == 1
    if pattern == "checker":
        return (y + x) % 2 == 1
    raise ValueError(f"unknown texture {pattern!r}; expected one of {TEXTURES}")


def _jitter(rng: np.random.Generator, colour: RGB) -> np.ndarray:
    shift_C = rng.integers(-OBJECT_JITTER, OBJECT_JITTER + 1, size=3)
    return np.clip(np.asarray(colour, dtype=np.int16) + shift_C, 0, 255)


def render_image(concepts: list[Concept], image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one image (uint8 img_HWC) holding exactly ``concepts`` (one texture, objects in quadrants)."""
    return render_with_owners(concepts, image_size, rng)[0]


def render_with_owners(
    concepts: list[Concept], image_size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`render_image` and each pixel's owner: ``owner_HW`` (int16), the index into ``concepts`` of the
    concept that drew the pixel (the texture where no object lies; a bullseye's ring and centre are the
    motif's). The same draws from ``rng``, so the image is the one :func:`render_image` draws."""
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size {image_size} is too small; use at least {MIN_IMAGE_SIZE}")
    textures = [c for c in concepts if c.kind == "texture"]
    objects = [c for c in concepts if c.kind != "texture"]
    # a class's own shape is drawn twice (two quadrants): see SHAPE_COPIES
    objects += [c for c in objects if c.kind == "class_shape"] * (SHAPE_COPIES - 1)
    if len(textures) != 1 or len(objects) > 4:
        raise ValueError(f"an image needs one texture and at most 4 objects, got {concepts}")
    texture = textures[0]
    phase_y, phase_x = (int(p) for p in rng.integers(0, TEXTURE_PERIOD, size=2))
    light_HW = texture_mask(texture.pattern, image_size, phase_y, phase_x)
    dark_C, light_C = (_jitter(rng, c) for c in texture.colours)
    img_HWC = np.where(light_HW[:, :, None], light_C, dark_C).astype(np.int16)
    owner_HW = np.full((image_size, image_size), concepts.index(texture), dtype=np.int16)

    cell = image_size // 2
    quadrants = rng.permutation(4)
    for concept, quadrant in zip(objects, quadrants[: len(objects)], strict=True):
        side = round(concept.size * image_size * float(rng.uniform(0.85, 1.15)))
        side = min(side, cell - 2)
        y0 = (quadrant // 2) * cell + int(rng.integers(1, cell - side))
        x0 = (quadrant % 2) * cell + int(rng.integers(1, cell - side))
        window_SSC = img_HWC[y0 : y0 + side, x0 : x0 + side]
        owner_SS = owner_HW[y0 : y0 + side, x0 : x0 + side]
        owner_SS[shape_mask("circle" if concept.pattern == "bullseye" else concept.pattern, side)] = (
            concepts.index(concept)
        )
        if concept.pattern == "bullseye":
            outer_C, inner_C = (_jitter(rng, c) for c in concept.colours)
            window_SSC[shape_mask("circle", side)] = outer_C
            inner_side = round(side * 0.5)
            off = (side - inner_side) // 2
            inner_SSC = window_SSC[off : off + inner_side, off : off + inner_side]
            inner_SSC[shape_mask("circle", inner_side)] = inner_C
        else:
            window_SSC[shape_mask(concept.pattern, side)] = _jitter(rng, concept.colours[0])

    noise_HWC = rng.normal(0.0, NOISE_SIGMA, size=img_HWC.shape)
    return np.clip(np.rint(img_HWC + noise_HWC), 0, 255).astype(np.uint8), owner_HW


def _save_jpeg(img_HWC: np.ndarray, path: Path) -> None:
    Image.fromarray(img_HWC).save(path, format="JPEG", quality=JPEG_QUALITY, subsampling=0)


# ---------------------------------------------------------------------------------------------------
# Atomic publication
# ---------------------------------------------------------------------------------------------------


def _build_atomically(root: Path, marker: dict, build: Callable[[Path], None]) -> None:
    """Run ``build(tmp)`` in a directory beside ``root``, then move it to ``root`` (replacing a demo)."""
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    # Empty folders are fine (Snakemake makes the output folders before the job runs).
    if root.exists() and any(p.is_file() for p in root.rglob("*")) and not (root / MARKER_NAME).is_file():
        raise FileExistsError(
            f"{root} exists, holds files and was not made by vitsae.data.demo (no {MARKER_NAME}); "
            "refusing to replace it: point the demo at an empty or new directory"
        )

    def run(tmp: Path) -> None:
        build(tmp)
        (tmp / MARKER_NAME).write_text(json.dumps(marker, sort_keys=True) + "\n")

    atomic_dir(root, run)


# ---------------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------------

_DATASET_CODE = {"imagenet-demo": 0, "inat-demo": 1}
_SPLIT_CODE = {"train": 0, "train_mini": 0, "val": 1}


_SPLITS = {"imagenet-demo": ("train", "val"), "inat-demo": ("train_mini", "val")}
_INAT_IDS = {sp["image_dir_name"]: sp["id"] for sp in INAT_DEMO_SPECIES}


def _plan(
    ds: str, seed: int, train_per_class: int, val_per_class: int, splits: tuple[str, ...] | None = None
) -> Iterator[tuple[str, str, np.random.Generator]]:
    """Every image of a demo dataset: (path relative to the root, label, the generator that draws it).

    File names come from the same generator as the pixels, so :func:`demo_files` can list a
    dataset without drawing it (the workflow declares every image as an output).
    """
    for split in splits or _SPLITS[ds]:
        n = train_per_class if _SPLIT_CODE[split] == 0 else val_per_class
        if ds == "imagenet-demo":
            for k, wnid in enumerate(IMAGENET_DEMO_CLASSES):
                for i in range(n):
                    rng = np.random.default_rng([seed, _DATASET_CODE[ds], _SPLIT_CODE[split], k, i])
                    yield f"{split}/{wnid}/{wnid}_{i}.JPEG", wnid, rng
        else:
            for species in INAT_DEMO_SPECIES:
                dir_name = species["image_dir_name"]
                for i in range(n):
                    rng = np.random.default_rng(
                        [seed, _DATASET_CODE[ds], _SPLIT_CODE[split], species["id"], i]
                    )
                    name = str(uuid.UUID(bytes=rng.bytes(16), version=4))
                    yield f"{split}/{dir_name}/{name}.jpg", dir_name, rng


def planted_owners(
    kind: str, seed: int, train_per_class: int, val_per_class: int, image_size: int, splits: tuple[str, ...]
) -> Iterator[tuple[str, list[Concept], np.ndarray]]:
    """Replays the drawing of a demo dataset's ``splits``: per image, its path relative to the root, its
    concepts and its pixel owners (:func:`render_with_owners`): the planted objects' masks, exactly as
    drawn (the same generators as :func:`make_imagenet_demo` / :func:`make_inat_demo`)."""
    for rel, label, rng in _plan(kind, seed, train_per_class, val_per_class, splits):
        concepts = concepts_for(kind, label)
        yield rel, concepts, render_with_owners(concepts, image_size, rng)[1]


def demo_files(kind: str, seed: int, train_per_class: int, val_per_class: int) -> list[str]:
    """Every file a demo dataset holds (images, and the iNat JSON), relative to its root, without drawing it."""
    if kind not in _SPLITS:
        raise ValueError(f"unknown demo dataset kind {kind!r}; one of {sorted(_SPLITS)}")
    files = [rel for rel, _, _ in _plan(kind, seed, train_per_class, val_per_class)]
    if kind == "inat-demo":
        files += [f"{split}.json" for split in _SPLITS[kind]]
    else:
        files.append(MULTILABELS_NAME)
    return files


def _make_demo(
    ds: str,
    root: Path,
    seed: int,
    train_per_class: int,
    val_per_class: int,
    image_size: int,
    write_index: Callable[[Path, list[tuple[str, str]]], None] | None = None,
) -> None:
    """Draw every image of demo dataset ``ds`` (see :func:`_plan`) into ``root``, atomically."""

    def build(tmp: Path) -> None:
        drawn = []
        for rel, label, rng in _plan(ds, seed, train_per_class, val_per_class):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            _save_jpeg(render_image(concepts_for(ds, label), image_size, rng), tmp / rel)
            drawn.append((rel, label))
        if write_index is not None:
            write_index(tmp, drawn)

    marker = {
        "dataset": ds,
        "seed": seed,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "image_size": image_size,
    }
    _build_atomically(Path(root), marker, build)


def make_imagenet_demo(
    root: Path, seed: int, train_per_class: int = 40, val_per_class: int = 10, image_size: int = 112
) -> None:
    """Write ``root/{train,val}/<wnid>/<wnid>_<i>.JPEG`` for :data:`IMAGENET_DEMO_CLASSES`, and
    ``root/val_multilabels.json``: the classes visible in each val image, as ImageNet-1K class indices in
    the format of the ReaL labels (:mod:`vitsae.analysis.cooccurrence`). A demo image shows its own class
    only (the motif is a pattern, not a class), so no two demo classes co-occur: the co-occurrence
    control runs and finds nothing."""

    def write_multilabels(tmp: Path, drawn: list[tuple[str, str]]) -> None:
        from vitsae.data.manifest import imagenet_wnids

        index = {w: i for i, w in enumerate(imagenet_wnids())}
        val = sorted((rel, label) for rel, label in drawn if rel.startswith("val/"))
        (tmp / MULTILABELS_NAME).write_text(json.dumps([[index[label]] for _, label in val]))

    _make_demo("imagenet-demo", root, seed, train_per_class, val_per_class, image_size, write_multilabels)


def make_inat_demo(
    root: Path, seed: int, train_per_class: int = 30, val_per_class: int = 10, image_size: int = 112
) -> None:
    """Write iNat2021's layout for :data:`INAT_DEMO_SPECIES`: image folders plus COCO-style JSON."""

    def write_json(tmp: Path, drawn: list[tuple[str, str]]) -> None:
        categories = [dict(s) for s in INAT_DEMO_SPECIES]
        for split in _SPLITS["inat-demo"]:
            ids = [i for i, (rel, _) in enumerate(drawn) if rel.startswith(f"{split}/")]
            coco = {
                "info": {"description": f"vitsae synthetic demo in iNat2021 layout ({split})", "seed": seed},
                "images": [
                    {"id": i, "file_name": drawn[i][0], "width": image_size, "height": image_size}
                    for i in ids
                ],
                "annotations": [{"id": i, "image_id": i, "category_id": _INAT_IDS[drawn[i][1]]} for i in ids],
                "categories": categories,
            }
            (tmp / f"{split}.json").write_text(json.dumps(coco))

    _make_demo("inat-demo", root, seed, train_per_class, val_per_class, image_size, write_json)
