"""The latency lookup-table file: one SQLite database per device (stdlib only, no torch).

Format (schema version 2), documented in ``docs/LUT_FORMAT.md``:

* ``meta(name TEXT PRIMARY KEY, value TEXT)`` — ``schema_version``; ``fingerprint`` (JSON of the
  device fingerprint the entries were measured on); ``measure_config`` (JSON); ``created_at``;
  ``overhead_ms`` (latency of a one-node graph, i.e. the fixed cost of one ``run()``);
  ``calibration`` (JSON: scale, per-group factors, io and weight terms, points used, leave-one-out error);
  ``anchor`` (JSON: the reference network of anchored whole-network measurements and its latency).
* ``entries(key TEXT PRIMARY KEY, kind, resolution, in_channels, expand_channels, out_channels,
  kernel_size, stride, se_channels, se_gate, activation, residual, batchnorm, median_ms, p10_ms,
  p90_ms, n_samples, cv, measured_at)`` — ``key`` is the canonical JSON (sorted keys) of the layer
  key; the other key columns repeat it for people and SQL. A block's entry is measured *in context*:
  after its context layer (:func:`context_key`), itself an entry; the block's cost is the difference.
* ``calibration_points(arch_id TEXT PRIMARY KEY, name, resolution, raw_sum_ms, measured_ms, group_ms,
  measured_at)`` — whole networks measured on the device, for fitting the calibration; ``group_ms``
  is JSON: the per-group layer sums, ``io_melems`` and ``mparams``.

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

SCHEMA_VERSION = 2
"""2: block entries measured after a context layer (1: every layer alone; refused, to be rebuilt)."""
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
RIDGE = 0.01  # shrinkage of the per-group factors toward the global scale, relative to the largest diagonal term


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


MPARAMS = "mparams"
"""Key, beside the groups' sums, of the network's weights (millions of parameters)."""

TERMS = (IO_MELEMS, MPARAMS)
"""Features fitted beside the per-group factors, each with one unshrunk coefficient (ms per unit)."""


def layer_params(key: Mapping[str, Any]) -> int:
    """Weights of one layer given as a layer-key dict (convolutions, squeeze-and-excite, linear; BN folded).

    An isolated layer runs again and again with its weights in the core's cache; inside a network
    each layer finds them evicted by the others and loads them again, at a cost that grows with
    their size (measured: the 960→1280→1000 classifier layers take 2.4–3.3× their isolated time).
    """
    kind, cin, cout = key["kind"], int(key["in_channels"]), int(key["out_channels"])
    exp, k, se = int(key["expand_channels"]), int(key["kernel_size"]), int(key.get("se_channels") or 0)
    if kind == "conv":
        return k * k * cin * cout + 2 * cout * se
    if kind == "dsconv":
        return k * k * cin + cin * cout + 2 * cin * se
    if kind == "mbconv":
        return (cin * exp if exp != cin else 0) + k * k * exp + exp * cout + 2 * exp * se
    if kind == "linear":
        return cin * cout
    return 0


CONTEXT_KINDS = ("conv", "dsconv", "mbconv")
MIN_CONTEXT_CHANNELS = 8
"""Layers with fewer input channels (the stem, on the image) see the network's input: measured alone."""


def context_key(key: Mapping[str, Any]) -> dict[str, Any] | None:
    """The layer a block's entry is measured after, as a layer-key dict (None: measured alone).

    A block of a network reads a tensor its predecessor wrote in ONNX Runtime's blocked layout, and
    writes one its successor reads; measured alone it converts its input into that layout and its
    output back, which a whole network does not (and, ``ORT_ENABLE_ALL``, the kernels chosen then
    differ). So a block's entry is the time of (context layer → block), whose context layer is a 1×1
    convolution + BN with the block's input channels and resolution, no activation — what every
    block of these spaces ends with — and the block's cost is that entry minus the context layer's
    own entry. The conversions of the model's input cancel in the difference, those of its output
    telescope along the network (each block's output conversion is the next block's context
    layer's), so the sum over a network keeps only its ends'. Context layers are entries too
    (measured alone); conv blocks with the image as input, pools and linear layers are measured alone.
    """
    if (key["kind"] not in CONTEXT_KINDS or int(key["in_channels"]) < MIN_CONTEXT_CHANNELS
            or is_context_key(key)):
        return None
    return {**key, **context_fields(int(key["in_channels"]), "dilation" in key)}


def context_fields(channels: int, dilation: bool = False) -> dict[str, Any]:
    """The fields a context layer's key overrides in its block's key (the rest, e.g. the resolution, stay)."""
    fields = {"kind": "conv", "expand_channels": channels, "out_channels": channels, "kernel_size": 1, "stride": 1,
              "se_channels": 0, "se_gate": None, "activation": None, "residual": False, "batchnorm": True}
    return {**fields, "dilation": 1} if dilation else fields


def is_context_key(key: Mapping[str, Any]) -> bool:
    """Whether ``key`` is a context layer (no layer of the spaces is a linear 1×1 conv to its own width)."""
    return (key["kind"] == "conv" and key.get("activation") is None and int(key["kernel_size"]) == 1
            and int(key["stride"]) == 1 and int(key["in_channels"]) == int(key["out_channels"])
            and not int(key.get("se_channels") or 0) and not key.get("residual"))


def layer_costs(keys: Sequence[Mapping[str, Any]], entries_ms: Mapping[str, float], overhead_ms: float
                ) -> tuple[float, tuple[float, ...]]:
    """(Σ layer cost + overhead, per-layer cost in ms) of a network's layers from the table's entries.

    ``entries_ms`` maps canonical keys (:func:`canonical_key`) to entry medians; it must hold each
    layer's entry and, for blocks measured in context, their context layer's. A layer's cost is
    ``entry − context entry`` (in context) or ``entry − overhead_ms`` (alone), never below 0.
    """
    costs = []
    for key in keys:
        ctx = context_key(key)
        base = entries_ms[canonical_key(ctx)] if ctx is not None else overhead_ms
        costs.append(max(entries_ms[canonical_key(key)] - base, 0.0))
    return sum(costs) + overhead_ms, tuple(costs)


def network_sums(keys: Sequence[Mapping[str, Any]], layer_ms: Sequence[float]) -> dict[str, float]:
    """The calibration's features of a network: Σ cost per group, ``io_melems`` and ``mparams``."""
    sums = group_sums([k["kind"] for k in keys], layer_ms)
    sums[IO_MELEMS] = io_melems(keys)
    sums[MPARAMS] = sum(layer_params(k) for k in keys) / 1e6
    return sums


def _layer_total(sums: Mapping[str, float]) -> float:
    return sum(sums.get(g, 0.0) for g in GROUPS)


@dataclass(frozen=True)
class Calibration:
    """Whole-network latency ≈ Σ_groups factor_g · Σ_{layers of g} cost + Σ_terms coefficient · term + overhead.

    Layer costs (:func:`layer_costs`) are what each layer takes measured in context, but a whole
    network is not their plain sum: each layer finds its weights evicted from the cache by the
    others (an isolated layer runs with them warm) and the ends of the network convert layouts. So
    each group of layer kinds gets its own factor, fitted by least squares of the relative error
    shrunk toward the global median ratio ``scale`` (which alone is used below
    ``MIN_POINTS_PER_GROUP_FIT`` networks, and for groups absent from the calibration set), and with
    the factors come two unshrunk terms: ``io_ms_per_melem`` · Σ(input + output elements)
    (:func:`io_melems`) and ``ms_per_mparam`` · the weights in millions (:func:`layer_params`),
    each fitted unless a point lacks its sum.
    """

    scale: float = 1.0
    factors: dict | None = None
    n_points: int = 0
    loo_mean_abs_error: float | None = None  # leave-one-out, relative to the measured latency
    loo_max_abs_error: float | None = None
    io_ms_per_melem: float | None = None
    ms_per_mparam: float | None = None

    @property
    def fitted(self) -> bool:
        return self.n_points > 0

    def coefficients(self) -> dict[str, float]:
        """The fitted terms' coefficients, by the key of their sum (:data:`TERMS`)."""
        values = {IO_MELEMS: self.io_ms_per_melem, MPARAMS: self.ms_per_mparam}
        return {t: v for t, v in values.items() if v is not None}

    def predict(self, sums: Mapping[str, float], overhead_ms: float) -> float:
        if self.factors:
            terms = sum(c * sums[t] for t, c in self.coefficients().items())
            return sum(self.factors[g] * sums.get(g, 0.0) for g in GROUPS) + terms + overhead_ms
        return self.scale * _layer_total(sums) + overhead_ms

    def describe(self) -> str:
        """One line for people: what :meth:`predict` applies, and how well it fitted.

        E.g. ``per-kind factors conv 1.083, dsconv 0.912, mbconv 0.874, other 1.000, io -0.312 ms
        per 10⁶ elements, weights +0.050 ms per 10⁶ parameters; 48 whole networks, leave-one-out
        error 3.2% mean, 9.5% max``; with fewer than :data:`MIN_POINTS_PER_GROUP_FIT` networks the
        single ``scale`` is what applies and is shown; ``uncalibrated`` when nothing was fitted.
        """
        if not self.fitted:
            return "uncalibrated"
        if self.factors and len({self.factors[g] for g in GROUPS[:3]}) == 1:
            what = f"one factor {self.factors['conv']:.3f} for every block kind, other {self.factors['other']:.3f}"
        elif self.factors:
            what = "per-kind factors " + ", ".join(f"{g} {self.factors[g]:.3f}" for g in GROUPS if g in self.factors)
        elif self.n_points >= MIN_POINTS_PER_GROUP_FIT:
            what = f"one factor {self.scale:.3f} for every layer kind (the richer models left out networks worse)"
        else:
            what = (f"one factor {self.scale:.3f} for every layer kind (per-kind factors need "
                    f"{MIN_POINTS_PER_GROUP_FIT} networks)")
        if self.factors and self.io_ms_per_melem is not None:
            what += f", io {self.io_ms_per_melem:+.3f} ms per 10⁶ elements"
        if self.factors and self.ms_per_mparam is not None:
            what += f", weights {self.ms_per_mparam:+.3f} ms per 10⁶ parameters"
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


MODELS = ("scale", "shared", "groups")
"""Calibration models, simplest first: one scale; one factor shared by the blocks (conv, dsconv, mbconv)
and one for the rest (pool and linear layers: the head, whose weights a network finds cold) + the
terms; a factor per group + the terms. :func:`fit_calibration` keeps the one with the smallest
leave-one-out error."""
BLOCKS = "blocks"  # the shared model's column: Σ cost of the conv, dsconv and mbconv groups


def fit_model(points: Sequence[tuple[Mapping[str, float], float]], model: str = "groups"
         ) -> tuple[float, dict | None, dict[str, float]]:
    """(global scale, per-group factors or None, term coefficients) of ``model`` (:data:`MODELS`) from
    (sums, measured − overhead) pairs; below :data:`MIN_POINTS_PER_GROUP_FIT` points, the scale alone."""
    scale = statistics.median(y / _layer_total(sums) for sums, y in points)
    if len(points) < MIN_POINTS_PER_GROUP_FIT or model == "scale":
        return scale, None, {}
    terms = tuple(t for t in TERMS if all(t in sums for sums, _ in points))
    groups = GROUPS if model == "groups" else (BLOCKS, "other")
    cols = groups + terms

    def value(sums: Mapping[str, float], c: str) -> float:
        return sum(sums.get(g, 0.0) for g in GROUPS[:3]) if c == BLOCKS else sums.get(c, 0.0)

    # Rows divided by the measured latency: least squares of the *relative* error, which is what
    # the predictor is judged on (a plain fit lets the slowest networks dominate).
    x = [[value(sums, c) / m for c in cols] for sums, m in points]
    y = [1.0] * len(points)
    n = len(cols)
    xtx = [[sum(row[i] * row[j] for row in x) for j in range(n)] for i in range(n)]
    # Ridge toward the global scale: a group the calibration set barely exercises keeps ~scale.
    # The terms are not shrunk (their natural value is not 0 but the cost they stand for).
    lam = RIDGE * max(xtx[i][i] for i in range(len(groups)))
    for i in range(len(groups)):
        xtx[i][i] += lam
    xty = [sum(row[i] * yi for row, yi in zip(x, y)) + (lam * scale if i < len(groups) else 0.0) for i in range(n)]
    solution = _solve(xtx, xty)
    factors = {g: max(solution[GROUPS.index(g) if model == "groups" else int(g == "other")], 0.0) for g in GROUPS}
    return scale, factors, dict(zip(terms, solution[len(groups):]))


def _calibration(scale: float, factors: dict | None, terms: Mapping[str, float], **fit) -> Calibration:
    return Calibration(scale=scale, factors=factors, io_ms_per_melem=terms.get(IO_MELEMS),
                       ms_per_mparam=terms.get(MPARAMS), **fit)


def _loo_errors(points: Sequence[tuple[Mapping[str, float], float]], model: str) -> list[float]:
    errors = []
    for i, (sums, y) in enumerate(points):
        pred = _calibration(*fit_model(points[:i] + points[i + 1:], model)).predict(sums, 0.0)
        errors.append(abs(pred - y) / y)
    return errors


def fit_calibration(points: Sequence[tuple[Mapping[str, float], float]]) -> Calibration:
    """Fit on (group sums [+ io_melems, mparams], measured − overhead) of whole networks.

    From 3 points each model of :data:`MODELS` that the points allow is scored by its leave-one-out
    error and the best is kept (on a tie, the simpler): with few or noisy networks (a busy host) a
    richer model would fit the noise. Errors are relative to ``measured − overhead``, a hair
    stricter than relative to the latency.
    """
    points = [(sums, y) for sums, y in points if y > 0 and _layer_total(sums) > 0]
    if not points:
        raise ValueError("no usable whole-network measurements to calibrate from")
    models = MODELS if len(points) >= MIN_POINTS_PER_GROUP_FIT else MODELS[:1]
    if len(points) < 3:
        return _calibration(*fit_model(points, models[0]), n_points=len(points))
    scored = [(statistics.fmean(e), i, m, e) for i, m in enumerate(models) for e in [_loo_errors(points, m)]]
    loo_mean, _, model, errors = min(scored)
    return _calibration(*fit_model(points, model), n_points=len(points), loo_mean_abs_error=loo_mean,
                        loo_max_abs_error=max(errors))


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
        if version is not None and version[0] == "1":
            raise TableFormatError(
                f"{self.path}: latency table schema 1 (layers measured alone); this version reads schema "
                f"{SCHEMA_VERSION} (blocks measured in context): rebuild it — delete the file and its entries are "
                "measured again on demand (`nas latency build-lut`)"
            )
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
