"""The ``vitsae`` command: check a figure's provenance, write its lineage page, plan a run.

* ``vitsae verify PATH...``: recompute every digest along each artifact's lineage (:func:`vitsae.
  provenance.lineage.verify`); prints one line per problem, or ``ok: N artifacts verified``; exit 1 on a
  problem, 2 on an error.
* ``vitsae lineage PATH HTML JSON``: an artifact's lineage as one HTML page and as JSON.
* ``vitsae plan --configfile CONFIG``: stores, disk and GPU hours of a config before anything runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path, PurePath

from vitsae import plan
from vitsae.provenance.lineage import lineage, n_artifacts, verify_lineage
from vitsae.provenance.page import write_lineage


def main(argv: list[str] | None = None) -> int:
    prog = "vitsae" if PurePath(sys.argv[0]).name == "vitsae" else "python -m vitsae.cli"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="recompute the digests along an artifact's lineage")
    v.add_argument("paths", nargs="+", type=Path)
    lin = sub.add_parser("lineage", help="write an artifact's lineage as HTML and JSON")
    lin.add_argument("path", type=Path)
    lin.add_argument("html", type=Path)
    lin.add_argument("json", type=Path)
    plan.add_arguments(
        sub.add_parser("plan", help="print a config's stores, disk and GPU hours before running it")
    )
    args = parser.parse_args(argv)
    if args.command == "plan":
        return plan.run(args)
    try:
        if args.command == "lineage":
            result = write_lineage(args.path, args.html, args.json)
            print(f"wrote {args.html} and {args.json}: {len(result['nodes'])} nodes")
            return 0
        failed = False
        for path in args.paths:
            walked = lineage(path)
            problems = verify_lineage(walked)
            for line in problems:
                print(line)
            if problems:
                failed = True
            else:
                print(f"ok: {n_artifacts(walked)} artifacts verified")
        return 1 if failed else 0
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
