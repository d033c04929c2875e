"""What a run leaves for people: CSV/JSON metric logs, PNG learning curves and the twin comparison table."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.weights.io import atomic_path, atomic_write

__all__ = ["COLUMNS", "comparison_rows", "format_table", "plot_comparison", "plot_curves", "write_metrics"]

COLUMNS = (
    "epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
    "consistency", "consistency_low", "consistency_high", "shifted_top1", "epoch_seconds",
)  # fmt: skip


def write_metrics(run_dir: Path, history: Sequence[dict[str, Any]], summary: dict[str, Any]) -> None:
    """``metrics.csv`` (one row per epoch) and ``metrics.json`` (history + summary), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    atomic_write(run_dir / "metrics.csv", buf.getvalue())
    atomic_write(run_dir / "metrics.json", json.dumps({"summary": summary, "history": list(history)}, indent=2) + "\n")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _curve_axes(axes: Sequence[Any], history: Sequence[dict[str, Any]], label: str, color: str | None = None) -> None:
    epochs = [h["epoch"] for h in history]

    def series(key: str) -> list[float]:
        return [h.get(key, math.nan) if h.get(key) is not None else math.nan for h in history]

    axes[0].plot(epochs, series("train_loss"), "--", color=color, label=f"{label} train")
    axes[0].plot(epochs, series("val_loss"), "-o", color=color, label=f"{label} val")
    axes[1].plot(epochs, series("train_top1"), "--", color=color, label=f"{label} train")
    axes[1].plot(epochs, series("val_top1"), "-o", color=color, label=f"{label} val")
    axes[2].plot(epochs, series("consistency"), "-o", color=color, label=label)
    axes[2].fill_between(epochs, series("consistency_low"), series("consistency_high"), color=color, alpha=0.2)
    axes[0].set_yscale("log")
    for ax, title in zip(axes, ("loss (log scale)", "top-1 accuracy (%)", "shift consistency (%), 95% CI")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)


def plot_curves(path: Path, history: Sequence[dict[str, Any]], title: str) -> None:
    """Loss, accuracy and consistency against the epoch (one model)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    _curve_axes(axes, history, "model")
    fig.suptitle(title, y=1.02)
    _save(fig, path)
    plt.close(fig)


def plot_comparison(path: Path, runs: Sequence[dict[str, Any]], title: str) -> None:
    """Curves of several runs overlaid (``runs``: dicts with ``name`` and ``history``)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for run, color in zip(runs, ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        _curve_axes(axes, run["history"], run["name"], color)
    fig.suptitle(title, y=1.02)
    _save(fig, path)
    plt.close(fig)


def comparison_rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run from its summary: final held-out accuracy and consistency."""
    rows = []
    for run in runs:
        last = run["history"][-1] if run["history"] else {}
        rows.append({
            "model": run["name"],
            "anti-aliased": "yes" if run["antialiased"] else "no",
            "init": run["init"],
            "epochs": last.get("epoch", 0),
            "val top-1 (%)": last.get("val_top1"),
            "consistency (%)": last.get("consistency"),
            "95% CI": (last.get("consistency_low"), last.get("consistency_high")),
            "train time (s)": run["train_seconds"],
        })  # fmt: skip
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if not math.isnan(value) else "-"
    if isinstance(value, tuple):
        return "-" if value[0] is None else f"[{value[0]:.1f}, {value[1]:.1f}]"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], markdown: bool = False) -> str:
    """Rows as an aligned text table (or a Markdown table)."""
    if not rows:
        return ""
    header = list(rows[0])
    cells = [[_cell(r[h]) for h in header] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells])
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*c) for c in cells)])
