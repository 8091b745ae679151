"""The public Python API: the names a user imports, in one place (see docs/API.md for an example).

Everything the ``nas`` and ``netadapt`` commands do is a library call with a configuration dataclass;
the commands only parse options into these. The names below are stable: they keep their meaning and
signature across minor versions (new keyword arguments and new dataclass fields may be added, with
defaults). Anything not listed here (and every ``_name``) is internal.

    from hwnas.api import SearchConfig, EvalConfig, run_search, RefineConfig, run_refine, write_report
"""

from __future__ import annotations

from evaluation.evaluate import EvalConfig, load_weights
from evaluation.supernet import SupernetOutcome, SupernetRecipe, score_subnet, train_supernet
from hwnas.experiment import ExperimentConfig, run_experiment
from hwnas.report import write_report
from hwnas.table3 import table_rows
from nas.search import SearchConfig, SearchOutcome, run_search
from netadapt.refine import RefineConfig, RefineOutcome, run_refine
from search_spaces import ArchSpec, count, load, references, resolve_arch
from search_spaces.builder import build_model
from search_spaces.export import export_onnx
from search_spaces.spaces import get_space

__all__ = [
    "ArchSpec", "EvalConfig", "ExperimentConfig", "RefineConfig", "RefineOutcome", "SearchConfig", "SearchOutcome",
    "build_model", "count", "export_onnx", "get_space", "load", "load_weights", "references", "resolve_arch",
    "run_experiment", "run_refine", "run_search", "table_rows", "write_report",
    "SupernetOutcome", "SupernetRecipe", "score_subnet", "train_supernet",
]
