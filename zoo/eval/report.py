"""Write evaluation results: ``results.json``, one CSV and one PNG per metric (atomic writes)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from zoo.eval.results import Result
from zoo.io import atomic_write, jsonable

if TYPE_CHECKING:
    from zoo.eval.compare import PairComparison

__all__ = ["ci_columns", "comparison_rows", "keyed", "markdown_report", "write_report"]

Row = dict[str, Any]
R = TypeVar("R", bound=Result)


def ci_columns(ci: Any, k: int | None = None, prefix: str = "") -> Row:
    """The ``{prefix}ci95_low`` / ``{prefix}ci95_high`` columns of a ``[low, high]`` interval (of a curve: at ``k``)."""
    low, high = ci
    if k is not None:
        low, high = low[k], high[k]
    return {f"{prefix}ci95_low": low, f"{prefix}ci95_high": high}


def keyed(key: str, columns: Callable[[R], Row]) -> Callable[[str, Mapping[str, R]], Iterator[Row]]:
    """The ``rows`` of a result keyed by protocol or setting: one row per entry, its key in column ``key``."""

    def rows(model: str, r: Mapping[str, R]) -> Iterator[Row]:
        for name, v in r.items():
            yield {"model": model, key: name, **columns(v)}

    return rows


def _csv(rows: list[Row]) -> str:
    """The rows as CSV; the columns are every row's keys in first-seen order (a row without one leaves it empty,
    e.g. ``top1_crops`` on the circular protocol's row)."""
    buf = io.StringIO()
    columns = list(dict.fromkeys(key for row in rows for key in row))
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def comparison_rows(comparison: dict[str, dict[str, PairComparison]]) -> list[Row]:
    """One row per (pair of models, quantity): B vs A, the means, the difference, its 95% CI and p."""
    return [
        {
            "comparison": pair,
            "quantity": label,
            "a": v.a,
            "b": v.b,
            "diff": v.diff,
            **ci_columns(v.ci95),
            "p": v.p,
            "test": v.test,
            "n": v.n,
            "n_eff": v.n_eff,
        }
        for pair, items in comparison.items()
        for label, v in items.items()
    ]


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def markdown_report(results: dict[str, Any]) -> str:
    """A short Markdown report: each model's headlines and the paired comparison table."""
    from zoo.eval.registry import METRICS

    lines = ["# zoo eval report", "", f"Data: {results['data']['source']} ({results['data']['images']} images)", ""]
    for model, entry in results["models"].items():
        lines += [f"## {model}", "", f"weights: {entry['weights']}", ""]
        for name, value in entry.items():
            metric = METRICS.get(name)
            if metric is not None and metric.headline is not None:
                lines.append(f"- **{name}**: {metric.headline(value)}")
        lines.append("")
    rows = comparison_rows(results.get("comparison", {}))
    if rows:
        header = "| B vs A | quantity | A | B | difference B - A | 95% CI | p | test |"
        lines += ["## Paired comparison (B vs A)", "", header, "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            lines.append(
                f"| {r['comparison']} | {r['quantity']} | {_fmt(r['a'])} | {_fmt(r['b'])} | {_fmt(r['diff'])} | "
                f"[{_fmt(r['ci95_low'])}, {_fmt(r['ci95_high'])}] | {_fmt(r['p'], 3)} | {r['test']} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_report(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write ``results.json``, ``<metric>.csv`` and ``<metric>.png`` (where a plot exists), ``comparison.csv``,
    ``comparison.png`` and ``report.md`` to ``out_dir``."""
    from zoo.eval.plots import plot_comparison
    from zoo.eval.registry import METRICS

    out_dir = Path(out_dir)
    written = [atomic_write(out_dir / "results.json", json.dumps(jsonable(results), indent=2, allow_nan=False))]
    per_metric: dict[str, dict[str, Any]] = {}  # metric -> {model: its result}
    for model, entry in results["models"].items():
        for metric, value in entry.items():
            if metric in METRICS:
                per_metric.setdefault(metric, {})[model] = value
    for name, by_model in per_metric.items():
        metric = METRICS[name]
        rows = [row for model, r in by_model.items() for row in metric.rows(model, r)] if metric.rows else []
        if rows:
            written.append(atomic_write(out_dir / f"{name}.csv", _csv(rows)))
        if metric.plot is not None:
            written.append(metric.plot(by_model, out_dir / f"{name}.png"))
    rows = comparison_rows(results.get("comparison", {}))
    if rows:
        written.append(atomic_write(out_dir / "comparison.csv", _csv(rows)))
        written.append(plot_comparison(results["comparison"], out_dir / "comparison.png"))
    written.append(atomic_write(out_dir / "report.md", markdown_report(results)))
    return written
