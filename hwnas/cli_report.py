"""``nas report RUN_DIR [RUN_DIR ...]``: write the HTML/Markdown report of run directories (:mod:`hwnas.report`)."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_report(args) -> int:
    from hwnas.report import write_report

    echo = None if args.json else (lambda line: print(line, flush=True))
    path = write_report(args.run_dirs, out_dir=args.out, references=not args.no_references, echo=echo)
    if args.json:
        json.dump({"html": str(path), "markdown": str(path.with_name("report.md")), "out": str(path.parent)},
                  sys.stdout, indent=2)
        print()
    return 0


def add_report_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="HTML/Markdown report of search and NetAdapt run directories",
                       description="Write report.html (self-contained), report.md, the plots as PNG and the tables "
                                   "as CSV for one or more run directories (several: one comparative report).")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="a run directory of `nas search` or `netadapt refine`")
    p.add_argument("--out", metavar="DIR", help="output directory (default: RUN_DIR/report of the first RUN_DIR)")
    p.add_argument("--no-references", action="store_true",
                   help="do not train the reference networks; show only those cached in RUN_DIR/references.csv")
    p.add_argument("--json", action="store_true", help="print only the written paths as JSON")
    p.set_defaults(func=cmd_report)
