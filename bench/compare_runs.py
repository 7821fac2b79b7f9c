"""Compare the outputs of two runs of the DAG, file by file: which are byte-identical, which differ, and for
PDFs whether they differ only in the order of their objects (same streams, same text).

Used to check that a change to the code's structure changed no result:
``python bench/compare_runs.py RUN_A RUN_B`` with two working directories of the same config. Provenance
records, lineage pages, the RO-Crate, logs and benchmarks are left out: they hold times, hosts and the
names of the modules that ran. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

LEFT_OUT = ("results/logs", "results/benchmarks", "results/provenance", "results/.state")


def outputs(root: Path) -> dict[str, Path]:
    out = {}
    for p in (root / "results").rglob("*"):
        rel = p.relative_to(root).as_posix()
        record = p.name.endswith(".prov.json") or p.name == ".snakemake_timestamp"
        if p.is_file() and not record and not rel.startswith(LEFT_OUT):
            out[rel] = p
    return out


def pdf_content(path: Path) -> tuple[list[str], str]:
    """The sorted digests of every stream of a PDF and its text: equal for two PDFs that differ only in
    the order (and numbering) of their objects."""
    import pypdf

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    reader = pypdf.PdfReader(str(path))
    digests = []
    for num in range(1, int(reader.trailer["/Size"])):
        try:
            obj = reader.get_object(num)
        except Exception:  # noqa: BLE001, S112 - free or compressed-away object numbers
            continue
        if hasattr(obj, "get_data"):
            digests.append(hashlib.sha256(obj.get_data()).hexdigest())
    return sorted(digests), "".join(page.extract_text() for page in reader.pages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args()
    fa, fb = outputs(args.a), outputs(args.b)
    common = sorted(set(fa) & set(fb))
    identical, reordered, differ = 0, [], []
    for rel in common:
        if fa[rel].read_bytes() == fb[rel].read_bytes():
            identical += 1
        elif rel.endswith(".pdf") and pdf_content(fa[rel]) == pdf_content(fb[rel]):
            reordered.append(rel)
        else:
            differ.append(rel)
    only_a, only_b = sorted(set(fa) - set(fb)), sorted(set(fb) - set(fa))
    print(f"{len(common)} outputs in both runs: {identical} byte-identical, {len(reordered)} PDFs with the same "
          f"streams and text in another object order, {len(differ)} different")  # fmt: skip
    for rel in reordered:
        print(f"  same content, other object order: {rel}")
    for rel in differ:
        print(f"  DIFFERENT: {rel}")
    for rel in only_a:
        print(f"  only in {args.a}: {rel}")
    for rel in only_b:
        print(f"  only in {args.b}: {rel}")
    print(json.dumps({"outputs": len(common), "identical": identical, "pdf_reordered": len(reordered),
                      "different": len(differ), "only_a": len(only_a), "only_b": len(only_b)}))  # fmt: skip


if __name__ == "__main__":
    main()
