"""The report's figures, from plain tables (matplotlib's Agg canvas through ``Figure``: no pyplot, no display).

:mod:`hwnas.report` decides what is plotted; these functions only draw. Every legend is placed outside
the axes (:func:`legend_outside`), so that it never hides a point; :func:`legend_labels` says what a
figure's legend lists, which is what the report's captions are made from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

KIND_COLORS = {"start": "black", "expansion": "tab:blue", "bottleneck": "tab:green", "head": "tab:purple"}


def legend_outside(ax) -> None:
    """The legend to the right of the axes, outside the data (the saved PNG is cropped to include it)."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def legend_labels(fig: Figure) -> list[str]:
    """The labels of every legend of ``fig``: what is drawn, in the words of the legend."""
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


def short_name(name: str) -> str:
    """A plot label: ``mobilenetv3_large_075`` → ``V3-Large ×0.75``, ``mnasnet_a1`` → ``MnasNet-A1``."""
    m = re.fullmatch(r"(.*?)_(0\d\d|1\d\d)", name)
    base, width = (m[1], f" ×{int(m[2]) / 100:g}") if m else (name, "")
    base = base.replace("mobilenetv3_", "V3-").replace("mobilenetv2", "MobileNetV2").replace("mnasnet_", "MnasNet-")
    return re.sub(r"-(\w)", lambda c: "-" + c[1].upper(), base) + width


def accuracy_latency(trials: pd.DataFrame, front: pd.DataFrame, refs: pd.DataFrame,
                     found: tuple[float, float, str] | None, target_ms: float | None, xlabel: str) -> Figure:
    """Trials, the Pareto front, references (named) and the found model on one pair of axes.

    Every table has ``x_ms`` and ``accuracy`` columns (``refs`` also ``name``); ``found`` is
    (latency, accuracy, label). The target is drawn only if it is near the points.
    """
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    ax.scatter(trials["x_ms"], trials["accuracy"], s=14, color="#8fa9c0", label=f"trials ({len(trials)})")
    if len(front):
        ax.plot(front["x_ms"], front["accuracy"], "-o", color="tab:orange", ms=5, label="Pareto front")
    if len(refs):
        ax.scatter(refs["x_ms"], refs["accuracy"], marker="D", s=36, color="black", label="references (same proxy)")
        for x, y, name in zip(refs["x_ms"], refs["accuracy"], refs["name"]):
            ax.annotate(short_name(name), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    if found is not None:
        ax.scatter([found[0]], [found[1]], marker="*", s=220, color="tab:red", zorder=5, label=found[2])
    if target_ms is not None and target_ms <= ax.get_xlim()[1] * 1.5:
        ax.axvline(target_ms, color="gray", ls="--", lw=1, label=f"target {target_ms:.3g} ms")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out accuracy (proxy)")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    return fig


def rewards(series: Sequence[tuple[str, pd.DataFrame]]) -> Figure:
    """Reward per trial (points) and best-so-far reward (a step line), one colour per (label, table).

    Each table has ``number`` and ``reward`` columns, sorted by ``number``.
    """
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    for i, (label, t) in enumerate(series):
        ax.scatter(t["number"], t["reward"], s=10, alpha=0.35, color=f"C{i}")
        ax.step(t["number"], t["reward"].cummax(), where="post", color=f"C{i}", label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("reward (points) and best so far (line)")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    return fig


def latency_error(pairs: pd.DataFrame) -> Figure:
    """Predicted against measured latency (``architecture``, ``measured_ms``, ``predicted_ms``), y = x, ±10 %."""
    fig = Figure(figsize=(5.2, 4.6))
    ax = fig.subplots()
    is_ref = pairs["architecture"].str.startswith("reference")
    ax.scatter(pairs.loc[~is_ref, "measured_ms"], pairs.loc[~is_ref, "predicted_ms"], s=20, label="trials")
    if is_ref.any():
        ax.scatter(pairs.loc[is_ref, "measured_ms"], pairs.loc[is_ref, "predicted_ms"], marker="D", s=24,
                   color="black", label="references")
    hi = float(max(pairs["measured_ms"].max(), pairs["predicted_ms"].max())) * 1.05
    xs = np.array([0.0, hi])
    ax.plot(xs, xs, color="gray", lw=1, label="predicted = measured")
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="gray", alpha=0.15, label="±10 %")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.grid(alpha=0.3)
    legend_outside(ax)
    return fig


def trajectory(chosen: pd.DataFrame, baseline: tuple[float | None, float | None, str] | None) -> Figure:
    """NetAdapt: latency (top) and accuracy (bottom) per iteration, points coloured by proposal kind.

    ``chosen`` has iteration, kind, accuracy, latency_pred_ms and latency_measured_ms columns;
    ``baseline`` is (latency, accuracy, label) of the width-multiplier baseline, drawn as lines.
    """
    fig = Figure(figsize=(7.5, 5.6))
    ax_lat, ax_acc = fig.subplots(2, 1, sharex=True)
    it = chosen["iteration"]
    if chosen["latency_pred_ms"].notna().any():
        ax_lat.plot(it, chosen["latency_pred_ms"], "-", color="gray", lw=1, label="predicted")
    if chosen["latency_measured_ms"].notna().any():
        ax_lat.plot(it, chosen["latency_measured_ms"], "--", color="gray", lw=1, label="measured")
    ax_acc.plot(it, chosen["accuracy"], "-", color="gray", lw=1)
    latency = chosen["latency_measured_ms"].fillna(chosen["latency_pred_ms"])
    for kind, color in KIND_COLORS.items():
        sel = chosen["kind"] == kind
        if sel.any():
            ax_lat.scatter(it[sel], latency[sel], color=color, s=30, zorder=3, label=kind)
            ax_acc.scatter(it[sel], chosen.loc[sel, "accuracy"], color=color, s=30, zorder=3)
    if baseline is not None:
        base_latency, base_accuracy, label = baseline
        if base_latency is not None:
            ax_lat.axhline(base_latency, color="tab:red", ls=":", lw=1, label=label)
        if base_accuracy is not None:
            ax_acc.axhline(base_accuracy, color="tab:red", ls=":", lw=1, label=label)
    ax_lat.set_ylabel("latency (ms)")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_xlabel("iteration")
    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_lat, ax_acc):
        ax.grid(alpha=0.3)
    legend_outside(ax_lat)
    return fig
