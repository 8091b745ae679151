"""The ``nas`` command: a thin layer that parses arguments and calls one library function each.

Errors caused by the user's input (a bad spec, a missing dataset, an impossible target, ...) print one
line ``nas: error: ...`` and exit with status 2; ``--debug`` (or ``HWNAS_DEBUG=1``) shows the
traceback instead. People get tables; ``--json`` gives machines the same facts. Ctrl-C prints
``nas: interrupted`` (status 130) and SIGTERM (``kill PID``) ``nas: terminated`` (status 143); both
unwind the same way, so a stopped search or refinement resumes with ``--resume``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Callable, Sequence

from search_spaces import count, references, resolve_arch, walk
from search_spaces.table import arch_rows, format_table


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that the command unwinds exactly as on Ctrl-C (Ray tasks
    cancelled, the local Ray stopped, files whole): ``run_cli`` prints one line and returns 143.
    (Raised inside a Ray call, it comes out as a plain KeyboardInterrupt: ``run_cli`` goes by the
    signal's record, :class:`SigtermHandler`, not by the exception's class.)"""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with "did you mean" for a mistyped choice (a command, ``--searcher``, ``--space``, ...)
    and :class:`HelpFormatter` for itself and its sub-commands (which are made with its class)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def _check_value(self, action: argparse.Action, value) -> None:
        if action.choices is not None and value not in action.choices:
            from search_spaces.suggest import did_you_mean

            known = [str(c) for c in action.choices]
            raise argparse.ArgumentError(action, f"invalid choice: {value!r}{did_you_mean(str(value), known)}; "
                                                 f"choose from {', '.join(known)}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` once, only where there is a default to show (not for unset options or flags)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or action.default == argparse.SUPPRESS \
                or "%(default)" in text or "default" in text:
            return text
        return super()._get_help_string(action)


# Functions that each add one group of sub-commands to the parser (see build_parser).
COMMAND_GROUPS: list[Callable[[argparse._SubParsersAction], None]] = []


def _print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


# ---------------------------------------------------------------------------------------------
# nas arch ...
# ---------------------------------------------------------------------------------------------


def arch_summary(spec) -> dict:
    c = count(spec)
    return {
        "name": spec.name,
        "arch_id": spec.arch_id,
        "resolution": spec.resolution,
        "params": c.params,
        "madds": c.madds,
        "layers": arch_rows(spec),
        "spec": spec.to_dict(),
    }


def cmd_arch_list(args) -> int:
    rows = []
    for name in references.names():
        spec = references.get(name)
        c = count(spec)
        rows.append({"name": name, "arch_id": spec.arch_id, "blocks": len(spec.blocks), "params": c.params,
                     "madds": c.madds})
    if args.json:
        _print_json(rows)
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'name'.ljust(width)}  blocks      params     MAdds  arch_id")
    for r in rows:
        print(f"{r['name'].ljust(width)}  {r['blocks']:>6}  {r['params']:>10,}  {r['madds'] / 1e6:>7.1f}M  "
              f"{r['arch_id']}")
    return 0


def _spec_from_args(args):
    spec = resolve_arch(args.arch)
    changes = {}
    if getattr(args, "resolution", None):
        changes["resolution"] = args.resolution
    if getattr(args, "num_classes", None):
        changes["num_classes"] = args.num_classes
    return spec.replace(**changes) if changes else spec


def cmd_arch_show(args) -> int:
    spec = _spec_from_args(args)
    if args.json:
        _print_json(arch_summary(spec))
        return 0
    title = spec.name or args.arch
    print(f"{title}  (id {spec.arch_id}, {spec.resolution}²×{spec.in_channels} input, {spec.num_classes} classes)")
    print(format_table(spec))
    return 0


def cmd_arch_export(args) -> int:
    from search_spaces.export import export_onnx

    spec = _spec_from_args(args)
    data = export_onnx(spec, args.onnx)
    info = {"onnx": str(args.onnx), "bytes": len(data), "arch_id": spec.arch_id, "resolution": spec.resolution,
            "layers": len(walk(spec))}
    if args.json:
        _print_json(info)
    else:
        print(f"wrote {args.onnx} ({len(data) / 1e6:.1f} MB, {spec.resolution}² input, id {spec.arch_id})")
    return 0


def _add_arch_commands(sub: argparse._SubParsersAction) -> None:
    arch = sub.add_parser("arch", help="inspect and export architectures")
    asub = arch.add_subparsers(dest="arch_command", required=True, metavar="{list,show,export}")

    p = asub.add_parser("list", help="registered reference architectures")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_arch_list)

    for name, func, helptext in (("show", cmd_arch_show, "the paper-style layer table of an architecture"),
                                 ("export", cmd_arch_export, "export an architecture to ONNX")):
        p = asub.add_parser(name, help=helptext)
        p.add_argument("arch", metavar="NAME|FILE.json", help="a registered name (see `nas arch list`) or a spec file")
        p.add_argument("--resolution", type=_positive_int, help="input resolution (default: the spec's)")
        p.add_argument("--num-classes", type=_positive_int, help="number of classes (default: the spec's)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "export":
            p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="where to write the ONNX file")
        p.set_defaults(func=func)


COMMAND_GROUPS.append(_add_arch_commands)


def _add_latency_commands(sub: argparse._SubParsersAction) -> None:
    from hwnas.cli_latency import add_latency_commands

    add_latency_commands(sub)


COMMAND_GROUPS.append(_add_latency_commands)


def _add_search_command(sub: argparse._SubParsersAction) -> None:
    from hwnas.cli_search import add_search_command

    add_search_command(sub)


COMMAND_GROUPS.append(_add_search_command)


def _add_report_command(sub: argparse._SubParsersAction) -> None:
    from hwnas.cli_report import add_report_command

    add_report_command(sub)


COMMAND_GROUPS.append(_add_report_command)


def _add_experiment_commands(sub: argparse._SubParsersAction) -> None:
    from hwnas.cli_experiment import add_experiment_commands

    add_experiment_commands(sub)


COMMAND_GROUPS.append(_add_experiment_commands)


def _add_supernet_commands(sub: argparse._SubParsersAction) -> None:
    from hwnas.cli_supernet import add_supernet_commands

    add_supernet_commands(sub)


COMMAND_GROUPS.append(_add_supernet_commands)


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def add_latency_backend_options(parser) -> None:
    """The latency backend options (``--latency-backend``, ``--threads``, ...) of every command that times
    networks: ``nas search``, ``netadapt refine`` and ``nas latency ...``. :func:`latency_measure_options`
    turns them into :class:`latency.measure.MeasureConfig` fields."""
    from latency.backends import BACKENDS
    from latency.measure import MeasureConfig

    d = MeasureConfig()
    parser.add_argument("--latency-backend", choices=BACKENDS,
                        help="what times the networks: ONNX Runtime on this CPU (ort-cpu, the default), its CUDA or "
                             "TensorRT provider, a benchmark command (--latency-command) or a Ray node that offers the "
                             "device (--latency-node); each has its own table")
    parser.add_argument("--threads", type=_positive_int, default=d.intra_op_threads,
                        help="ONNX Runtime intra-op threads (ort-* and ray-node)")
    parser.add_argument("--latency-command", metavar="TEMPLATE",
                        help="command backend: a command that prints the latency in ms of {onnx} (the model file) "
                             "with input {input_shape}, e.g. 'adb-bench.sh {onnx} {input_shape}'")
    parser.add_argument("--latency-device", metavar="NAME",
                        help="command backend: a name for the target device (names its table)")
    parser.add_argument("--latency-repeats", type=_positive_int,
                        help=f"command backend: runs per measurement, the median counts (default {d.command_repeats})")
    parser.add_argument("--latency-timeout", type=float, metavar="S",
                        help=f"command backend: seconds allowed per run (default {d.command_timeout_s:g})")
    parser.add_argument("--latency-time-cap", type=float, metavar="S",
                        help=f"longest timed phase of one measurement, in seconds (default {d.time_cap_s:g}); less is "
                             "faster and noisier (the confidence interval of each measurement says how much)")
    parser.add_argument("--latency-node", metavar="device=NAME",
                        help="ray-node backend: measure on the Ray node offering the resource latency:NAME "
                             "(one measurement at a time per device)")
    parser.add_argument("--latency-node-timeout", type=float, metavar="S",
                        help=f"ray-node backend: seconds to wait for that node (default {d.node_timeout_s:g})")


def latency_measure_options(args: argparse.Namespace) -> dict:
    """The :class:`latency.measure.MeasureConfig` fields of :func:`add_latency_backend_options`'s options,
    only those that differ from the defaults (so that a default run's ``config.json`` is unchanged).
    Checked here: a bad combination raises ``ValueError`` with one line naming the option."""
    from latency.measure import MeasureConfig

    command, node = getattr(args, "latency_command", None), getattr(args, "latency_node", None)
    if command and node:
        raise ValueError("--latency-command and --latency-node are two backends; give one")
    backend = getattr(args, "latency_backend", None) or ("command" if command else "ray-node" if node else "ort-cpu")
    fields: dict = {"backend": backend, "intra_op_threads": getattr(args, "threads", 1)}
    if backend == "command":
        if not command:
            raise ValueError("--latency-backend command needs --latency-command TEMPLATE (with {onnx})")
        fields.update(command=command, device=getattr(args, "latency_device", None))
    elif command or getattr(args, "latency_device", None):
        raise ValueError(f"--latency-command/--latency-device are for the command backend, not {backend}")
    if backend == "ray-node":
        name, sep, device = (node or "").partition("=")
        if not node:
            raise ValueError("--latency-backend ray-node needs --latency-node device=NAME")
        if name.strip() != "device" or not sep or not device.strip():
            raise ValueError(f"--latency-node: expected device=NAME, got {node!r}")
        fields["device"] = device.strip()
    for option, field in (("latency_repeats", "command_repeats"), ("latency_timeout", "command_timeout_s"),
                          ("latency_node_timeout", "node_timeout_s"), ("latency_time_cap", "time_cap_s")):
        if getattr(args, option, None) is not None:
            fields[field] = getattr(args, option)
    default = MeasureConfig().to_dict()
    try:
        MeasureConfig(**fields)
    except ValueError as e:  # name the option, not the field
        message = str(e)
        for field, option in (("command_timeout_s", "--latency-timeout"), ("command_repeats", "--latency-repeats"),
                              ("node_timeout_s", "--latency-node-timeout"), ("intra_op_threads", "--threads"),
                              ("time_cap_s", "--latency-time-cap"),
                              ("command", "--latency-command"), ("device", "--latency-device/--latency-node")):
            message = message.replace(f"MeasureConfig.{field}=", f"{option} ")
        raise ValueError(message) from None
    return {k: v for k, v in fields.items() if default.get(k) != v}


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="nas",
        description="Hardware-aware neural architecture search (MnasNet-style search, as MobileNetV3 was found).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMAND_GROUPS:
        add(sub)
    return parser


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse, dispatch, and turn any error into one line on stderr (status 2) unless --debug."""
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("HWNAS_DEBUG") == "1"
    sigterm = SigtermHandler.install()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if sigterm is not None and sigterm.received:
            print(f"{parser.prog}: terminated", file=sys.stderr)
            return 143
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - the CLI boundary: one line, never a traceback dump
        if debug:
            raise
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kind = "" if isinstance(e, (ValueError, OSError, LookupError)) else f"{type(e).__name__}: "
        print(f"{parser.prog}: error: {kind}{message}", file=sys.stderr)
        return 2
    finally:
        if sigterm is not None:
            sigterm.restore()


class SigtermHandler:
    """SIGTERM raises :class:`Terminated` (once: a second one while unwinding is ignored) and is recorded
    in :attr:`received`. :class:`evaluation.execution.RayPool` keeps this handler when Ray starts (Ray
    installs its own, which exits with status 1 after a native stack dump)."""

    def __init__(self):
        self.received = False
        self.previous = signal.signal(signal.SIGTERM, self)

    @classmethod
    def install(cls) -> SigtermHandler | None:
        """The handler, installed; None outside the main thread (where signals cannot be handled)."""
        return cls() if threading.current_thread() is threading.main_thread() else None

    def __call__(self, signum, frame) -> None:
        if not self.received:
            self.received = True
            raise Terminated()

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
