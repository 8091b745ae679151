"""The latency lookup-table file: one SQLite database per device (stdlib only, no torch).

Format (schema version 1), documented in ``docs/LUT_FORMAT.md``:

* ``meta(name TEXT PRIMARY KEY, value TEXT)`` — ``schema_version``; ``fingerprint`` (JSON of the
  device fingerprint the entries were measured on); ``measure_config`` (JSON); ``created_at``;
  ``overhead_ms`` (latency of a one-node graph, i.e. the fixed cost of one ``run()``);
  ``calibration`` (JSON: scale, per-group factors, io term, points used, leave-one-out error);
  ``anchor`` (JSON: the reference network of anchored whole-network measurements and its latency).
* ``entries(key TEXT PRIMARY KEY, kind, resolution, in_channels, expand_channels, out_channels,
  kernel_size, stride, se_channels, se_gate, activation, residual, batchnorm, median_ms, p10_ms,
  p90_ms, n_samples, cv, measured_at)`` — ``key`` is the canonical JSON (sorted keys) of the layer
  key; the other key columns repeat it for people and SQL.
* ``calibration_points(arch_id TEXT PRIMARY KEY, name, resolution, raw_sum_ms, measured_ms, group_ms,
  measured_at)`` — whole networks measured on the device, for fitting the calibration; ``group_ms``
  is JSON: the per-group layer sums and ``io_melems``.

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
from dataclasses import dataclass
from pathlib import Path
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
    raw_sum_ms REAL NOT NULL, measured_ms REAL NOT NULL, group_ms TEXT NOT NULL, measured_at TEXT
);
"""


def _schema_columns() -> dict[str, list[str]]:
    """Column names of each table of :data:`_SCHEMA`, in order (read from SQLite, not repeated here)."""
    with closing(sqlite3.connect(":memory:")) as conn:
        conn.executescript(_SCHEMA)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid")]
        return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}


SCHEMA_COLUMNS = _schema_columns()


GROUPS = ("conv", "dsconv", "mbconv", "other")
"""Layer kinds with their own calibration factor (pool and linear layers share "other")."""

# Below this many whole networks only the global scale is fitted (4 factors need data).
MIN_POINTS_PER_GROUP_FIT = 8


def group_of(kind: str) -> str:
    return kind if kind in GROUPS else "other"


def group_sums(kinds: Sequence[str], layer_ms: Sequence[float]) -> dict[str, float]:
    """Σ layer latency (overhead removed) per calibration group."""
    sums = dict.fromkeys(GROUPS, 0.0)
    for kind, ms in zip(kinds, layer_ms):
        sums[group_of(kind)] += ms
    return sums


IO_MELEMS = "io_melems"
"""Key, beside the groups' sums, of Σ over layers of input + output tensor elements (millions)."""


def io_melems(keys: Iterable[Mapping[str, Any]]) -> float:
    """Σ (input + output elements) / 1e6 over layers given as layer-key dicts.

    Each layer measured alone converts its input to ONNX Runtime's blocked NCHWc layout and its
    output back; inside a whole network most of those copies do not happen. Their cost grows with
    the tensors' sizes, which this feature carries into the calibration.
    """
    total = 0
    for k in keys:
        r = int(k["resolution"])
        r_out = 1 if k["kind"] == "pool" else -(-r // int(k["stride"]))
        total += int(k["in_channels"]) * r * r + int(k["out_channels"]) * r_out * r_out
    return total / 1e6


def _layer_total(sums: Mapping[str, float]) -> float:
    return sum(sums.get(g, 0.0) for g in GROUPS)


@dataclass(frozen=True)
class Calibration:
    """Whole-network latency ≈ Σ_groups factor_g · Σ_{layers of g}(entry − overhead) + overhead.

    Layers measured in isolation are not equally biased: with ``ORT_ENABLE_ALL`` each isolated layer
    pays layout conversions that a whole network mostly avoids, and how much depends on the operator
    (measured here: conv-heavy networks run *slower* than the sum of their layers, MBConv-heavy ones
    faster). So each group of layer kinds gets its own factor, fitted by least squares of the relative
    error shrunk toward the global median ratio ``scale`` (which alone is used below
    ``MIN_POINTS_PER_GROUP_FIT`` networks, and for groups absent from the calibration set). With the
    factors comes one term
    ``io_ms_per_melem · Σ(input + output elements)`` (:func:`io_melems`; negative: the layout copies
    a whole network avoids grow with the tensors), fitted unless a point lacks that sum (older files).
    """

    scale: float = 1.0
    factors: dict | None = None
    n_points: int = 0
    loo_mean_abs_error: float | None = None  # leave-one-out, relative to the measured latency
    loo_max_abs_error: float | None = None
    io_ms_per_melem: float | None = None

    @property
    def fitted(self) -> bool:
        return self.n_points > 0

    def predict(self, sums: Mapping[str, float], overhead_ms: float) -> float:
        if self.factors:
            io = self.io_ms_per_melem * sums[IO_MELEMS] if self.io_ms_per_melem is not None else 0.0
            return sum(self.factors[g] * sums.get(g, 0.0) for g in GROUPS) + io + overhead_ms
        return self.scale * _layer_total(sums) + overhead_ms

    def describe(self) -> str:
        """One line for people: what :meth:`predict` applies, and how well it fitted.

        E.g. ``per-kind factors conv 1.083, dsconv 0.912, mbconv 0.874, other 1.000, io -0.312 ms
        per 10⁶ elements; 48 whole networks, leave-one-out error 3.2% mean, 9.5% max``; with
        fewer than :data:`MIN_POINTS_PER_GROUP_FIT` networks the single ``scale`` is what applies
        and is shown; ``uncalibrated`` when nothing was fitted.
        """
        if not self.fitted:
            return "uncalibrated"
        if self.factors:
            what = "per-kind factors " + ", ".join(f"{g} {self.factors[g]:.3f}" for g in GROUPS if g in self.factors)
            if self.io_ms_per_melem is not None:
                what += f", io {self.io_ms_per_melem:+.3f} ms per 10⁶ elements"
        else:
            what = (f"one factor {self.scale:.3f} for every layer kind (per-kind factors need "
                    f"{MIN_POINTS_PER_GROUP_FIT} networks)")
        fit = f"{self.n_points} whole network{'' if self.n_points == 1 else 's'}"
        if self.loo_mean_abs_error is not None:
            fit += f", leave-one-out error {self.loo_mean_abs_error:.1%} mean"
            if self.loo_max_abs_error is not None:
                fit += f", {self.loo_max_abs_error:.1%} max"
        return f"{what}; {fit}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Calibration":
        return cls(**d) if d else cls()


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (the system is 4×4 and well conditioned)."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(m[r][col]))
        m[col], m[pivot] = m[pivot], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            for c in range(col, n + 1):
                m[r][c] -= f * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def _fit(points: Sequence[tuple[Mapping[str, float], float]]) -> tuple[float, dict | None, float | None]:
    """(global scale, per-group factors or None, io term or None) from (sums, measured − overhead) pairs."""
    scale = statistics.median(y / _layer_total(sums) for sums, y in points)
    if len(points) < MIN_POINTS_PER_GROUP_FIT:
        return scale, None, None
    with_io = all(IO_MELEMS in sums for sums, _ in points)
    cols = GROUPS + ((IO_MELEMS,) if with_io else ())
    # Rows divided by the measured latency: least squares of the *relative* error, which is what
    # the predictor is judged on (a plain fit lets the slowest networks dominate).
    x = [[sums.get(c, 0.0) / m for c in cols] for sums, m in points]
    y = [1.0] * len(points)
    n = len(cols)
    xtx = [[sum(row[i] * row[j] for row in x) for j in range(n)] for i in range(n)]
    # Ridge toward the global scale: a group the calibration set barely exercises keeps ~scale.
    # The io term is not shrunk (its natural value is not 0 but the cost of the copies).
    lam = 0.01 * max(xtx[i][i] for i in range(len(GROUPS)))
    for i in range(len(GROUPS)):
        xtx[i][i] += lam
    xty = [sum(row[i] * yi for row, yi in zip(x, y)) + (lam * scale if i < len(GROUPS) else 0.0) for i in range(n)]
    solution = _solve(xtx, xty)
    factors = {g: max(f, 0.0) for g, f in zip(GROUPS, solution)}
    return scale, factors, (solution[-1] if with_io else None)


def fit_calibration(points: Sequence[tuple[Mapping[str, float], float]]) -> Calibration:
    """Fit on (group sums [+ io_melems], measured − overhead) of whole networks; leave-one-out errors from 3 points.

    Errors are relative to ``measured − overhead``, a hair stricter than relative to the latency.
    """
    points = [(sums, y) for sums, y in points if y > 0 and _layer_total(sums) > 0]
    if not points:
        raise ValueError("no usable whole-network measurements to calibrate from")
    scale, factors, io = _fit(points)
    loo_mean = loo_max = None
    if len(points) >= 3:
        errors = []
        for i, (sums, y) in enumerate(points):
            s, f, c = _fit(points[:i] + points[i + 1:])
            pred = Calibration(scale=s, factors=f, io_ms_per_melem=c).predict(sums, 0.0)
            errors.append(abs(pred - y) / y)
        loo_mean, loo_max = statistics.fmean(errors), max(errors)
    return Calibration(scale=scale, factors=factors, n_points=len(points), loo_mean_abs_error=loo_mean,
                       loo_max_abs_error=loo_max, io_ms_per_melem=io)


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
                columns = {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in SCHEMA_COLUMNS}
        except sqlite3.DatabaseError as e:
            raise TableFormatError(f"{self.path}: not a latency table ({e})") from None
        if version is None or version[0] != str(SCHEMA_VERSION):
            raise TableFormatError(
                f"{self.path}: latency table schema {version[0] if version else 'missing'}; "
                f"this version reads schema {SCHEMA_VERSION}"
            )
        for table, expected in SCHEMA_COLUMNS.items():  # an older development layout of the same version
            have = columns[table]
            if not have:
                raise TableFormatError(f"{self.path}: table {table} is missing; not a latency table of this version")
            if have != expected:
                parts = []
                if missing := [c for c in expected if c not in have]:
                    parts.append(f"missing {', '.join(missing)}")
                if unexpected := [c for c in have if c not in expected]:
                    parts.append(f"unexpected {', '.join(unexpected)}")
                detail = "; ".join(parts) or "the same columns in another order"
                raise TableFormatError(f"{self.path}: table {table} has columns ({', '.join(have)}), this version "
                                       f"expects ({', '.join(expected)}): {detail}")

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

    # -- calibration points ------------------------------------------------------------------------
    def put_point(self, arch_id: str, name: str, resolution: int, raw_sum_ms: float, measured_ms: float,
                  group_ms: Mapping[str, float]) -> None:
        with closing(self._connect()) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO calibration_points VALUES (?, ?, ?, ?, ?, ?, ?)",
                (arch_id, name, resolution, raw_sum_ms, measured_ms, json.dumps(dict(group_ms)), now()),
            )

    def points(self) -> list[dict[str, Any]]:
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT arch_id, name, resolution, raw_sum_ms, measured_ms, group_ms, measured_at "
                "FROM calibration_points ORDER BY arch_id"
            ).fetchall()
        cols = ("arch_id", "name", "resolution", "raw_sum_ms", "measured_ms", "group_ms", "measured_at")
        points = [dict(zip(cols, r)) for r in rows]
        for p in points:
            p["group_ms"] = json.loads(p["group_ms"])
        return points

    def fit(self) -> Calibration:
        """Refit the calibration on every recorded whole network and store it."""
        overhead = float(self.meta("overhead_ms") or 0.0)
        cal = fit_calibration([(p["group_ms"], p["measured_ms"] - overhead) for p in self.points()])
        self.set_meta("calibration", cal.to_dict())
        return cal
