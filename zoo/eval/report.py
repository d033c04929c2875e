"""Write evaluation results: ``results.json``, one CSV and one PNG per metric (atomic writes)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from zoo.io import atomic_write, jsonable

__all__ = ["TABLES", "comparison_rows", "markdown_report", "write_report"]

Row = dict[str, Any]


def _consistency(model: str, r: dict[str, Any]) -> Iterator[Row]:
    for protocol, v in r.items():
        yield {
            "model": model,
            "protocol": protocol,
            "consistency": v["consistency"],
            "ci95_low": v["ci95"][0],
            "ci95_high": v["ci95"][1],
            "n": v["n"],
            "max_shift": v["max_shift"],
            "seed": v["seed"],
            "n_eff": v.get("n_eff"),
            "procedure": v.get("procedure", "seeded"),
            **{k: v[k] for k in ("top1_crops", "top5_crops", "top1_rolled", "top5_rolled") if k in v},
        }


def _diagonal(model: str, r: dict[str, Any]) -> Iterator[Row]:
    for k, d in enumerate(r["shifts"]):
        yield {
            "model": model,
            "shift": d,
            "prob": r["prob"][k],
            "ci95_low": r["prob_ci95"][0][k],
            "ci95_high": r["prob_ci95"][1][k],
            "agree_pct": r["agree"][k],
            "reference": r["reference"],
            "n": r["n"],
        }


def _features(model: str, r: dict[str, Any]) -> Iterator[Row]:
    for layer, v in r["layers"].items():
        for dh, row in enumerate(v["heatmap"]):
            for dw, value in enumerate(row):
                s = v["stride"]
                yield {
                    "model": model,
                    "layer": layer,
                    "stride": s,
                    "dh": dh,
                    "dw": dw,
                    "distance": value,
                    "on_grid": dh % s == 0 and dw % s == 0,
                    "layer_on_grid_mean": v["mean"],
                    "n": r["n"],
                }


def _sensitivity(model: str, r: dict[str, Any]) -> Iterator[Row]:
    for setting, v in r.items():
        yield {
            "model": model,
            "setting": setting,
            "protocol": v["protocol"],
            "embed_size": v["embed_size"],
            "p_change": v["p_change"],
            "p_change_ci95_low": v["p_change_ci95"][0],
            "p_change_ci95_high": v["p_change_ci95"][1],
            "mac": v["mac"],
            "mac_ci95_low": v["mac_ci95"][0],
            "mac_ci95_high": v["mac_ci95"][1],
            "n": v["n"],
            "pairs": v["pairs"],
        }


def _deformation(model: str, r: dict[str, Any]) -> Iterator[Row]:
    for layer, v in r["layers"].items():
        for k, c in enumerate(r["strengths"]):
            yield {
                "model": model,
                "layer": layer,
                "C": c,
                "sensitivity": v["sensitivity"][k],
                "ci95_low": v["ci95"][0][k],
                "ci95_high": v["ci95"][1][k],
                "deformed": v["deformed"][k],
                "pair": v["pair"],
                "n": r["n"],
                "pairs": r["pairs"],
            }


def _smoothness(model: str, r: dict[str, Any]) -> Iterator[Row]:
    for layer, value in r["layers"].items():
        yield {"model": model, "layer": layer, "tv_over_l1": value}


def _generation(model: str, r: dict[str, Any]) -> Iterator[Row]:
    yield {
        "model": model,
        **{k: r[k] for k in ("psnr", "psnr_mean", "mse", "exact", "n", "max_shift")},
        "mse_ci95_low": r["mse_ci95"][0],
        "mse_ci95_high": r["mse_ci95"][1],
    }


TABLES: dict[str, Callable[[str, dict[str, Any]], Iterator[Row]]] = {
    "consistency": _consistency,
    "diagonal": _diagonal,
    "features": _features,
    "sensitivity": _sensitivity,
    "deformation": _deformation,
    "smoothness": _smoothness,
    "generation": _generation,
}


def _csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def comparison_rows(comparison: dict[str, dict[str, Any]]) -> list[Row]:
    """One row per (pair of models, quantity): B vs A, the means, the difference, its 95% CI and p."""
    return [
        {
            "comparison": pair,
            "quantity": label,
            "a": v["a"],
            "b": v["b"],
            "diff": v["diff"],
            "ci95_low": v["ci95"][0],
            "ci95_high": v["ci95"][1],
            "p": v["p"],
            "test": v["test"],
            "n": v["n"],
            "n_eff": v["n_eff"],
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
    per_metric: dict[str, dict[str, Any]] = {}
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
