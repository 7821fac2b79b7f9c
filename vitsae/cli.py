"""The ``vitsae`` command: check a figure's provenance, write its lineage page, plan a run, export an SAE.

* ``vitsae verify PATH... [--configfile FILE] [--deep]``: recompute every digest along each artifact's
  lineage (:func:`vitsae.provenance.lineage.verify`), check every record against its own digest and
  its consumers', and each record's config against today's (``--configfile``, else the config files of
  the last Snakemake run in the working directory); ``--deep`` also
  reads every chunk of every activation store in the lineage and checks it against its crc32c. Prints
  one line per problem, or ``ok: N artifacts verified``; exit 1 on a problem, 2 on an error.
* ``vitsae lineage PATH HTML JSON``: an artifact's lineage as one HTML page and as JSON.
* ``vitsae plan --configfile CONFIG``: stores, disk and GPU hours of a config before anything runs.
* ``vitsae export --format saelens SAE_DIR OUT_DIR``: an SAE as a directory SAELens' ``SAE.load_from_disk``
  loads, its input normalisation folded into the weights (:mod:`vitsae.sae.export`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path, PurePath

import yaml
from snakemake.utils import update_config

from vitsae import layout, plan
from vitsae.config import validate
from vitsae.data.store import check_chunks
from vitsae.provenance.lineage import lineage, n_artifacts, resolve, verify_lineage
from vitsae.provenance.page import write_lineage
from vitsae.sae.export import FORMATS, export_saelens


def main(argv: list[str] | None = None) -> int:
    prog = "vitsae" if PurePath(sys.argv[0]).name == "vitsae" else "python -m vitsae.cli"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="recompute the digests along an artifact's lineage")
    v.add_argument("paths", nargs="+", type=Path)
    v.add_argument("--configfile", type=Path, nargs="+", help="today's config (default: the last run's)")
    v.add_argument("--deep", action="store_true", help="also read every store chunk and check its crc32c")
    lin = sub.add_parser("lineage", help="write an artifact's lineage as HTML and JSON")
    lin.add_argument("path", type=Path)
    lin.add_argument("html", type=Path)
    lin.add_argument("json", type=Path)
    plan.add_arguments(
        sub.add_parser("plan", help="print a config's stores, disk and GPU hours before running it")
    )
    exp = sub.add_parser("export", help="write an SAE in another tool's layout (SAELens)")
    exp.add_argument("--format", required=True, choices=FORMATS)
    exp.add_argument("sae_dir", type=Path, help="an SAE directory (sae.safetensors + cfg.json)")
    exp.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "plan":
        return plan.run(args)
    try:
        if args.command == "lineage":
            result = write_lineage(args.path, args.html, args.json)
            print(f"wrote {args.html} and {args.json}: {len(result['nodes'])} nodes")
            return 0
        if args.command == "export":
            print(f"wrote {export_saelens(args.sae_dir, args.out_dir)} and its cfg.json (SAELens layout)")
            return 0
        failed = False
        for path in args.paths:
            walked = lineage(path)
            files = args.configfile or _default_configfiles(Path(walked["workdir"]))
            config = None
            if files:
                print(f"config: comparing each record's config with {' + '.join(map(str, files))}",
                      file=sys.stderr)  # fmt: skip
                config = _resolved_config(files)
            else:
                print(f"config: not compared (no --configfile, and no Snakemake run in {walked['workdir']})",
                      file=sys.stderr)  # fmt: skip
            problems = verify_lineage(walked, config)
            if args.deep:
                problems += _deep(walked)
            for line in problems:
                print(line)
            if problems:
                failed = True
            else:
                print(
                    f"ok: {n_artifacts(walked)} artifacts verified"
                    + (" (every store chunk read)" if args.deep else "")
                )
        return 1 if failed else 0
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _default_configfiles(workdir: Path) -> list[Path]:
    """The config files of the last Snakemake run in ``workdir`` (none if it never ran there)."""
    return layout.remembered_configfiles(workdir) or []


def _resolved_config(files: list[Path]) -> dict:
    """The config as the workflow resolves it: the files merged in order (later keys win, as Snakemake
    merges them), validated with every default filled in."""
    merged: dict = {}
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"config file {f} does not exist")
        update_config(merged, yaml.safe_load(f.read_text()) or {})
    return validate(merged, source=str(files[-1]))


def _deep(walked: dict) -> list[str]:
    """Every chunk of every activation store in the lineage, read and checked against its crc32c."""
    problems, n_chunks = [], 0
    base = Path(walked["workdir"])
    for path, node in walked["nodes"].items():
        full = resolve(base, path)
        if str(node.get("digest", "")).startswith("tree:") and (full / "zarr.json").is_file():
            checked, bad = check_chunks(full)
            n_chunks += checked
            problems += [line.replace(str(full), path, 1) for line in bad]  # as the lineage names it
    print(f"deep: read {n_chunks} store chunks", file=sys.stderr)
    return problems


if __name__ == "__main__":
    sys.exit(main())
