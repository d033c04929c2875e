"""What a run leaves for people: CSV/JSON metric logs, PNG learning curves and the twin comparison table."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.io import atomic_path, atomic_write

__all__ = [
    "COLUMNS",
    "comparison_rows",
    "format_table",
    "paired_comparison",
    "plot_comparison",
    "plot_curves",
    "seed_rows",
    "write_metrics",
]

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
    """Curves of several runs overlaid (``runs``: dicts with ``name``, ``history``, ``seed``): one colour per model."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    palette = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    colors = {name: palette[k % len(palette)] for k, name in enumerate(dict.fromkeys(r["name"] for r in runs))}
    several = len(runs) > len(colors)
    for run in runs:
        label = f"{run['name']} seed {run.get('seed', 0)}" if several else run["name"]
        _curve_axes(axes, run["history"], label, colors[run["name"]])
    fig.suptitle(title, y=1.02)
    _save(fig, path)
    plt.close(fig)


def seed_rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per trained model and seed: the selected epoch on the validation and the test split."""
    rows = []
    for run in runs:
        test, best = run.get("test") or {}, run.get("best") or {}
        rows.append({
            "model": run["name"],
            "seed": run.get("seed", 0),
            "init": run["init"],
            "epochs": run["history"][-1]["epoch"] if run["history"] else 0,
            "selected epoch": best.get("epoch"),
            "val top-1 (%)": best.get("val_top1"),
            "test top-1 (%)": test.get("test_top1"),
            "test consistency (%)": test.get("test_consistency"),
            "95% CI (Wilson)": (test.get("test_consistency_low"), test.get("test_consistency_high")),
            "train time (s)": run["train_seconds"],
        })  # fmt: skip
    return rows


def _by_model(runs: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run["name"], []).append(run)
    for group in groups.values():
        group.sort(key=lambda r: r.get("seed", 0))
    return groups


def _values(group: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [r["test"][key] for r in group if (r.get("test") or {}).get(key) is not None]


def comparison_rows(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model: test top-1 and consistency, mean over seeds with a Student-t 95% interval.

    With one seed the consistency interval is the Wilson interval over the test images instead.
    """
    from zoo.stats import t_interval

    rows = []
    for name, group in _by_model(runs).items():
        top1, cons = _values(group, "test_top1"), _values(group, "test_consistency")
        t1 = t_interval(top1) if top1 else {"mean": None, "low": None, "high": None}
        tc = t_interval(cons) if cons else {"mean": None, "low": None, "high": None}
        if len(group) == 1 and cons:
            test = group[0]["test"]
            tc = {**tc, "low": test["test_consistency_low"], "high": test["test_consistency_high"]}
        inits = sorted({r["init"].split(",")[0] for r in group})
        rows.append({
            "model": name,
            "anti-aliased": "yes" if group[0]["antialiased"] else "no",
            "init": " / ".join(inits),
            "seeds": len(group),
            "epochs": max((r["history"][-1]["epoch"] for r in group if r["history"]), default=0),
            "test top-1 (%)": t1["mean"],
            "top-1 95% CI": (t1["low"], t1["high"]),
            "consistency (%)": tc["mean"],
            "consistency 95% CI": (tc["low"], tc["high"]),
            "train time (s)": sum(r["train_seconds"] for r in group),
        })  # fmt: skip
    return rows


def mcnemar_pooled(x_correct: Sequence[bool], y_correct: Sequence[bool]) -> dict[str, Any]:
    """McNemar's exact test (:func:`zoo.stats.mcnemar_exact`) as the report records it.

    ``{"x_only", "y_only", "n", "p"}``: items right for ``x`` only, for ``y`` only, the number of pairs and
    the two-sided exact p-value (1 when no pair is discordant).
    """
    from zoo.stats import mcnemar_exact

    test = mcnemar_exact(x_correct, y_correct)
    return {"x_only": test["a_only"], "y_only": test["b_only"], "n": len(x_correct), "p": test["p"]}


def paired_comparison(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each later model against the first (the anti-aliased one of a twin run), paired by seed.

    Paired t over seeds of test top-1 and consistency (first minus other), and McNemar's exact test of
    test top-1 on the per-image predictions pooled over seeds (pairs: same seed, same image).
    """
    from zoo.stats import paired_t

    groups = _by_model(runs)
    names = list(groups)
    out = []
    for other in names[1:]:
        by_seed = {r.get("seed", 0): r for r in groups[other] if r.get("test")}
        firsts = [r for r in groups[names[0]] if r.get("test") and r.get("seed", 0) in by_seed]
        pairs = [(r, by_seed[r.get("seed", 0)]) for r in firsts]
        entry: dict[str, Any] = {"a": names[0], "b": other, "seeds": [r.get("seed", 0) for r, _ in pairs]}
        for key, label in (("test_top1", "top1"), ("test_consistency", "consistency")):
            x = [r["test"].get(key) for r, _ in pairs]
            y = [s["test"].get(key) for _, s in pairs]
            if pairs and None not in x and None not in y:
                entry[label] = paired_t(x, y)
        xc = [c for r, _ in pairs for c in r["test"].get("correct", [])]
        yc = [c for _, s in pairs for c in s["test"].get("correct", [])]
        if xc and len(xc) == len(yc):
            entry["mcnemar_top1"] = mcnemar_pooled(xc, yc)
        out.append(entry)
    return out


def _num(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def paired_lines(pairs: Sequence[dict[str, Any]]) -> list[str]:
    """The paired comparison as sentences (one per pair of models)."""
    lines = []
    for e in pairs:
        parts = []
        for label in ("top1", "consistency"):
            t = e.get(label)
            if t is None:
                continue
            ci = f" [{_num(t['low'], sign=True)}, {_num(t['high'], sign=True)}]" if t["low"] is not None else ""
            p = f", p = {t['p']:.3g}" if t["p"] is not None else " (one seed: no test)"
            parts.append(f"{'top-1' if label == 'top1' else 'consistency'} {_num(t['diff'], sign=True)} pt{ci}{p}")
        text = f"{e['a']} - {e['b']}, paired over {len(e['seeds'])} seed(s) (mean difference, 95% CI, paired t): "
        text += "; ".join(parts) if parts else "-"
        m = e.get("mcnemar_top1")
        if m:
            text += (
                f". McNemar exact on {m['n']} pooled test predictions: {m['x_only']} right only for {e['a']}, "
                f"{m['y_only']} only for {e['b']}, p = {m['p']:.3g}"
            )
        lines.append(text)
    return lines


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
