"""The ``netadapt`` command (NetAdapt refinement: ``netadapt refine --arch found.json``).

Refinement itself is not implemented yet; this entry point exists so that packaging and the CLI layout
are fixed from the start. ``netadapt refine`` currently exits with a one-line explanation.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netadapt",
        description="NetAdapt refinement: shrink a network layer by layer until it meets a latency target.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("refine", help="shrink --arch until it meets the latency target (not available yet)")
    p.add_argument("--arch", required=True, metavar="NAME|FILE.json")
    p.set_defaults(func=_not_yet)
    return parser


def _not_yet(args) -> int:
    raise RuntimeError("netadapt refine is not implemented in this version yet")


def main(argv: Sequence[str] | None = None) -> int:
    from nas.cli import run_cli

    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
