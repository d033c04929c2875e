"""Benchmark output: JSON, markdown tables (with the issue's targets checked) and a PNG plot."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

# The targets (CPU, 2 threads, 224 px, fp32, batch 8, default eager mode unless said).
MODEL_TARGETS: list[dict] = [
    {"arch": "resnet18", "max_ratio": 1.40},
    {"arch": "resnet50", "max_ratio": 1.15},
]
LAYER_FLOOR_TARGET = 3.0  # fastest mode of BlurPool2d, x the copy-bound floor
MEMORY_TARGET = 1.10  # zoo training-step peak / official


def atomic_write(path: Path, data: str | bytes) -> Path:
    """Write via a temp file in the same directory and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _layout(cl: bool) -> str:
    return "channels_last" if cl else "NCHW"


def model_table(rows: list[dict]) -> str:
    lines = [
        "| model | task | batch | layout | torchvision ms | zoo `_aa4` | official | timm blur |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        res = r["results"]
        cells = [f"{res[s]['median_ms']:.1f} ms ({res[s]['ratio']:.2f}x)" for s in ("zoo", "official", "timm")]
        lines.append(
            f"| {r['arch']} | {r['task']} | {r['batch']} | {_layout(r['channels_last'])} | "
            f"{res['torchvision']['median_ms']:.1f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def layer_table(rows: list[dict]) -> str:
    lines = [
        "| layer | input | layout | implementation | ms | x floor | x official |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        lines.append(
            f"| {r['layer']} | {shape} | {_layout(r['channels_last'])} | copy-bound floor | "
            f"{r['floor_ms']:.2f} | 1.00 | |"
        )
        for name, v in r["results"].items():
            if name == "copy":
                continue
            lines.append(
                f"| {r['layer']} | {shape} | {_layout(r['channels_last'])} | {name} | {v['median_ms']:.2f} | "
                f"{v['x_floor']:.2f} | {v['x_official']:.2f} |"
            )
    return "\n".join(lines)


def memory_table(rows: list[dict]) -> str:
    lines = ["| model | source | training-step peak MB | x official |", "|---|---|---:|---:|"]
    official = {r["arch"]: r["peak_step_mb"] for r in rows if r["source"] == "official"}
    for r in rows:
        ratio = r["peak_step_mb"] / official[r["arch"]] if official.get(r["arch"]) else float("nan")
        lines.append(f"| {r['model']} | {r['source']} | {r['peak_step_mb']:.0f} | {ratio:.2f} |")
    return "\n".join(lines)


def check_targets(result: dict) -> list[dict]:
    """The issue's targets that this run can evaluate, each with the measured value and pass/fail."""
    checks = []
    for t in MODEL_TARGETS:
        for r in result["models"]:
            if (r["arch"], r["task"], r["batch"], r["channels_last"]) == (t["arch"], "inference", 8, False):
                value = r["results"]["zoo"]["ratio"]
                checks.append(
                    dict(
                        target=f"{r['names']['zoo']} <= {t['max_ratio']}x torchvision (b8, NCHW)",
                        value=value,
                        ok=value <= t["max_ratio"],
                    )
                )
    blur = [r for r in result["layers"] if r["layer"].startswith("BlurPool2d")]
    if blur:
        best = min(
            (v["x_floor"], name, _layout(r["channels_last"]))
            for r in blur
            for name, v in r["results"].items()
            if name.startswith("zoo")
        )
        checks.append(
            dict(
                target=f"BlurPool2d fastest mode <= {LAYER_FLOOR_TARGET}x floor ({best[1]}, {best[2]})",
                value=best[0],
                ok=best[0] <= LAYER_FLOOR_TARGET,
            )
        )
        for r in blur:
            if not r["channels_last"]:
                value = r["results"]["zoo[fast]"]["x_official"]
                checks.append(
                    dict(target="BlurPool2d eager NCHW no slower than official", value=value, ok=value <= 1.0)
                )
    official = {r["arch"]: r["peak_step_mb"] for r in result["memory"] if r["source"] == "official"}
    for r in result["memory"]:
        if r["source"] == "zoo" and official.get(r["arch"]):
            value = r["peak_step_mb"] / official[r["arch"]]
            checks.append(
                dict(
                    target=f"{r['model']} training peak <= {MEMORY_TARGET}x official",
                    value=value,
                    ok=value <= MEMORY_TARGET,
                )
            )
    return checks


def markdown(result: dict) -> str:
    cfg, env = result["config"], result["env"]
    parts = [
        f"Benchmark: torch {env['torch']}, {env['threads']} threads, fp32, {cfg['image_size']} px, "
        f"{cfg['repeats']} interleaved repeats (layers {cfg['layer_repeats']}); ratios are medians of paired "
        "per-round ratios (models: to torchvision; layers: to the copy-bound floor and to the official layer).",
    ]
    if result["models"]:
        parts += ["### Models", model_table(result["models"])]
    if result["layers"]:
        parts += ["### Layers", layer_table(result["layers"])]
    if result["memory"]:
        parts += ["### Training-step peak memory", memory_table(result["memory"])]
    checks = check_targets(result)
    if checks:
        lines = ["| target | measured | met |", "|---|---:|---|"]
        lines += [f"| {c['target']} | {c['value']:.2f} | {'yes' if c['ok'] else 'no'} |" for c in checks]
        parts += ["### Targets", "\n".join(lines)]
    return "\n\n".join(parts) + "\n"


def plot(result: dict, path: Path) -> Path:
    """Bar chart of the model ratios to torchvision."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["models"]
    labels = [f"{r['arch']} {r['task'][:5]} b{r['batch']}{' CL' if r['channels_last'] else ''}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.9), 4))
    width = 0.27
    for i, src in enumerate(("zoo", "official", "timm")):
        ax.bar(
            [j + (i - 1) * width for j in range(len(rows))],
            [r["results"][src]["ratio"] for r in rows],
            width,
            label=src,
        )
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("time / torchvision baseline")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def write_outputs(result: dict, out_dir: Path) -> dict[str, Path]:
    """Write ``benchmark.json``, ``benchmark.md`` and (if there are model rows) ``benchmark.png``."""
    result = dict(result, targets=check_targets(result))
    paths = {
        "json": atomic_write(out_dir / "benchmark.json", json.dumps(result, indent=2)),
        "markdown": atomic_write(out_dir / "benchmark.md", markdown(result)),
    }
    if result["models"]:
        paths["plot"] = plot(result, out_dir / "benchmark.png")
    return paths
