"""The latency lookup-table file: one SQLite database per device (stdlib only, no torch).

Format (schema version 1), documented in ``docs/LUT_FORMAT.md``:

* ``meta(name TEXT PRIMARY KEY, value TEXT)`` — ``schema_version``; ``fingerprint`` (JSON of the
  device fingerprint the entries were measured on); ``measure_config`` (JSON); ``created_at``;
  ``overhead_ms`` (latency of a one-node graph, i.e. the fixed cost of one ``run()``);
  ``calibration`` (JSON: scale, offset_ms, points used, leave-one-out error).
* ``entries(key TEXT PRIMARY KEY, kind, resolution, in_channels, expand_channels, out_channels,
  kernel_size, stride, se_channels, se_gate, activation, residual, batchnorm, median_ms, p10_ms,
  p90_ms, n_samples, cv, measured_at)`` — ``key`` is the canonical JSON (sorted keys) of the layer
  key; the other key columns repeat it for people and SQL.
* ``calibration_points(arch_id TEXT PRIMARY KEY, name, resolution, raw_sum_ms, measured_ms,
  measured_at)`` — whole networks measured on the device, for fitting the calibration.

The file can be copied to another machine and read there; writes are transactions, so a killed
process leaves the table as it was before the interrupted write. This module deliberately imports
only the standard library so that it runs on a device with nothing but Python, numpy and
onnxruntime (see ``latency/device_lut.py``).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import statistics
import time
from contextlib import closing
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

SCHEMA_VERSION = 1
KEY_COLUMNS = (
    "kind", "resolution", "in_channels", "expand_channels", "out_channels", "kernel_size", "stride",
    "se_channels", "se_gate", "activation", "residual", "batchnorm",
)
VALUE_COLUMNS = ("median_ms", "p10_ms", "p90_ms", "n_samples", "cv", "measured_at")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    {", ".join(f"{c}" for c in KEY_COLUMNS)},
    median_ms REAL NOT NULL, p10_ms REAL, p90_ms REAL, n_samples INTEGER, cv REAL, measured_at TEXT
);
CREATE TABLE IF NOT EXISTS calibration_points (
    arch_id TEXT PRIMARY KEY, name TEXT, resolution INTEGER,
    raw_sum_ms REAL NOT NULL, measured_ms REAL NOT NULL, measured_at TEXT
);
"""


@dataclass(frozen=True)
class Calibration:
    """Whole-network latency ≈ scale · Σ(entry − overhead) + overhead."""

    scale: float = 1.0
    n_points: int = 0
    loo_mean_abs_error: float | None = None  # leave-one-out, relative
    loo_max_abs_error: float | None = None

    @property
    def fitted(self) -> bool:
        return self.n_points > 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Calibration":
        return cls(**d) if d else cls()


def fit_scale(pairs: Sequence[tuple[float, float]]) -> Calibration:
    """Median of measured/raw ratios, with leave-one-out relative errors when ≥ 3 points."""
    ratios = [m / r for r, m in pairs]
    scale = statistics.median(ratios)
    loo_mean = loo_max = None
    if len(pairs) >= 3:
        errors = []
        for i, (r, m) in enumerate(pairs):
            s = statistics.median(ratios[:i] + ratios[i + 1:])
            errors.append(abs(s * r - m) / m)
        loo_mean, loo_max = statistics.fmean(errors), max(errors)
    return Calibration(scale=scale, n_points=len(pairs), loo_mean_abs_error=loo_mean, loo_max_abs_error=loo_max)


def raw_sum_ms(entries_ms: Sequence[float], overhead_ms: float) -> tuple[float, tuple[float, ...]]:
    """Σ(entry − overhead) + overhead: each isolated entry paid one ``run()`` call's fixed cost."""
    layer_ms = tuple(max(e - overhead_ms, 0.0) for e in entries_ms)
    return sum(layer_ms) + overhead_ms, layer_ms


class TableFormatError(ValueError):
    """The file is not a latency table of a version this code reads."""


def canonical_key(key: Mapping[str, Any]) -> str:
    return json.dumps(dict(key), sort_keys=True, separators=(",", ":"))


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class TableStore:
    """Read and write one table file. Every method opens its own short transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        conn.execute("PRAGMA busy_timeout = 60000")
        return conn

    # -- creation and metadata ------------------------------------------------------------------
    def create(self, fingerprint: Mapping[str, Any], measure_config: Mapping[str, Any]) -> None:
        """Create the file (and its folder) if missing; an existing file is left as it is."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn:
            conn.executescript(_SCHEMA)  # idempotent (IF NOT EXISTS)
            conn.execute("BEGIN IMMEDIATE")
            existing = dict(conn.execute("SELECT name, value FROM meta").fetchall())
            if not existing:
                rows = {
                    "schema_version": str(SCHEMA_VERSION),
                    "fingerprint": json.dumps(dict(fingerprint), sort_keys=True),
                    "measure_config": json.dumps(dict(measure_config), sort_keys=True),
                    "created_at": json.dumps(now()),
                }
                conn.executemany("INSERT INTO meta VALUES (?, ?)", rows.items())
            conn.execute("COMMIT")
        self.check()

    def check(self) -> None:
        """Raise :class:`TableFormatError` unless this is a table of a readable version."""
        if not self.path.exists():
            raise TableFormatError(f"{self.path}: no such latency table")
        try:
            with closing(self._connect()) as conn:
                version = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
        except sqlite3.DatabaseError as e:
            raise TableFormatError(f"{self.path}: not a latency table ({e})") from None
        if version is None or version[0] != str(SCHEMA_VERSION):
            raise TableFormatError(
                f"{self.path}: latency table schema {version[0] if version else 'missing'}; "
                f"this version reads schema {SCHEMA_VERSION}"
            )

    def meta(self, name: str) -> Any:
        with closing(self._connect()) as conn:
            row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        return json.loads(row[0])

    def set_meta(self, name: str, value: Any) -> None:
        with closing(self._connect()) as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, json.dumps(value, sort_keys=True)))

    # -- entries ---------------------------------------------------------------------------------
    def get_many(self, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
        keys = list(keys)
        out: dict[str, dict[str, Any]] = {}
        with closing(self._connect()) as conn:
            for i in range(0, len(keys), 500):
                chunk = keys[i:i + 500]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(
                    f"SELECT key, {', '.join(VALUE_COLUMNS)} FROM entries WHERE key IN ({marks})", chunk
                ):
                    out[row[0]] = dict(zip(VALUE_COLUMNS, row[1:]))
        return out

    def put(self, key: Mapping[str, Any], values: Mapping[str, Any]) -> None:
        cols = ("key",) + KEY_COLUMNS + VALUE_COLUMNS
        row = [canonical_key(key)] + [key.get(c) for c in KEY_COLUMNS]
        row += [values.get(c) for c in VALUE_COLUMNS[:-1]] + [values.get("measured_at") or now()]
        with closing(self._connect()) as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO entries ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", row
            )

    def count(self) -> int:
        with closing(self._connect()) as conn:
            return conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def all_entries(self) -> list[tuple[str, dict[str, Any]]]:
        with closing(self._connect()) as conn:
            rows = conn.execute(f"SELECT key, {', '.join(VALUE_COLUMNS)} FROM entries ORDER BY key").fetchall()
        return [(r[0], dict(zip(VALUE_COLUMNS, r[1:]))) for r in rows]

    def merge_from(self, other: "TableStore") -> int:
        """Copy entries and calibration points of ``other`` (same device) into this table."""
        with closing(self._connect()) as conn:
            conn.execute("ATTACH DATABASE ? AS other", (str(other.path),))
            conn.execute("BEGIN IMMEDIATE")
            before = conn.total_changes
            conn.execute("INSERT OR REPLACE INTO entries SELECT * FROM other.entries")
            conn.execute("INSERT OR REPLACE INTO calibration_points SELECT * FROM other.calibration_points")
            conn.execute("COMMIT")
            changed = conn.total_changes - before
            conn.execute("DETACH DATABASE other")
        return changed

    # -- calibration points ------------------------------------------------------------------------
    def put_point(self, arch_id: str, name: str, resolution: int, raw_sum_ms: float, measured_ms: float) -> None:
        with closing(self._connect()) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO calibration_points VALUES (?, ?, ?, ?, ?, ?)",
                (arch_id, name, resolution, raw_sum_ms, measured_ms, now()),
            )

    def points(self) -> list[dict[str, Any]]:
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT arch_id, name, resolution, raw_sum_ms, measured_ms, measured_at "
                "FROM calibration_points ORDER BY arch_id"
            ).fetchall()
        cols = ("arch_id", "name", "resolution", "raw_sum_ms", "measured_ms", "measured_at")
        return [dict(zip(cols, r)) for r in rows]
