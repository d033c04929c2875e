"""Benchmark output: JSON, markdown tables (with the issue's targets checked) and a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path

from zoo.benchmark.cases import FRESH_COPY
from zoo.io import atomic_write

# The issues' targets (CPU, 2 threads, 224 px, fp32, batch 8, default eager mode unless said).
MODEL_TARGETS: list[dict] = [  # inference: zoo / torchvision
    {"arch": "resnet18", "max_ratio": 1.40},
    {"arch": "resnet50", "max_ratio": 1.15},
]
TRAIN_TARGETS: list[dict] = [  # training step, NCHW: zoo / torchvision
    {"arch": "resnet18", "max_ratio": 1.35},
    {"arch": "resnet50", "max_ratio": 1.20},
]
TRAIN_VS_OFFICIAL = 1.05  # training step: zoo / official in every layout (5% noise)
LAYER_FLOOR_TARGET = 3.0  # BlurPool2d, x the copy-bound floor (forward: fastest mode; forward+backward: fast)
MEMORY_TARGET = 0.90  # zoo training-step peak / official


def _layout(cl: bool) -> str:
    return "channels_last" if cl else "NCHW"


def _precision(r: dict) -> str:
    return r.get("precision", "fp32")


def model_table(rows: list[dict]) -> str:
    lines = [
        "| model | task | batch | precision | layout | torchvision ms | zoo `_aa4` | official | timm blur |",
        "|---|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        res = r["results"]
        cells = [f"{res[s]['median_ms']:.1f} ms ({res[s]['ratio']:.2f}x)" for s in ("zoo", "official", "timm")]
        lines.append(
            f"| {r['arch']} | {r['task']} | {r['batch']} | {_precision(r)} | {_layout(r['channels_last'])} | "
            f"{res['torchvision']['median_ms']:.1f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


_LAYER_LABELS = {FRESH_COPY: "copy into a new tensor (x.clone())"}


def layer_table(rows: list[dict]) -> str:
    lines = [
        "| layer | task | input | layout | implementation | ms | x floor | x official |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        head = f"| {r['layer']} | {r.get('task', 'forward')} | {'x'.join(map(str, r['shape']))} | "
        head += f"{_layout(r['channels_last'])} | "
        lines.append(head + f"copy-bound floor | {r['floor_ms']:.2f} | 1.00 | |")
        for name, v in r["results"].items():
            if name != "copy":
                label = _LAYER_LABELS.get(name, name)
                lines.append(head + f"{label} | {v['median_ms']:.2f} | {v['x_floor']:.2f} | {v['x_official']:.2f} |")
    return "\n".join(lines)


# key: (name in the targets, column header); the RSS peak is shown but not checked (it moves between runs)
MEMORY_KEYS = {
    "peak_allocated_mb": ("training peak", "training-step peak allocated MB"),
    "peak_rss_mb": ("training RSS peak", "RSS peak MB"),
    "saved_activations_mb": ("saved activations", "saved activations MB"),
}
MEMORY_TARGET_KEYS = ("peak_allocated_mb", "saved_activations_mb")


def _vs_official(rows: list[dict], key: str) -> dict[int, float]:
    official = {r["arch"]: r.get(key) for r in rows if r["source"] == "official"}
    return {i: r[key] / official[r["arch"]] for i, r in enumerate(rows) if r.get(key) and official.get(r["arch"])}


def memory_table(rows: list[dict]) -> str:
    lines = [
        "| model | source | " + " | ".join(f"{header} | x official" for _, header in MEMORY_KEYS.values()) + " |",
        "|---|---|" + "---:|---:|" * len(MEMORY_KEYS),
    ]
    ratios = {key: _vs_official(rows, key) for key in MEMORY_KEYS}
    for i, r in enumerate(rows):
        cells = []
        for key in MEMORY_KEYS:
            value, ratio = r.get(key), ratios[key].get(i)
            cells += [f"{value:.0f}" if value is not None else "", f"{ratio:.2f}" if ratio is not None else ""]
        lines.append(f"| {r['model']} | {r['source']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _check(target: str, value: float, limit: float) -> dict:
    return dict(target=target, value=value, ok=value <= limit)


def _model_checks(rows: list[dict]) -> list[dict]:
    checks = []
    for r in rows:
        if r["batch"] != 8 or _precision(r) != "fp32":
            continue
        res, zoo, layout = r["results"], r["names"]["zoo"], _layout(r["channels_last"])
        targets = MODEL_TARGETS if r["task"] == "inference" else TRAIN_TARGETS
        for t in targets:
            if t["arch"] == r["arch"] and not r["channels_last"]:
                what = "inference" if r["task"] == "inference" else "training step"
                name = f"{zoo} {what} <= {t['max_ratio']}x torchvision (b8, NCHW)"
                checks.append(_check(name, res["zoo"]["ratio"], t["max_ratio"]))
        if r["task"] == "train":
            name = f"{zoo} training step <= {TRAIN_VS_OFFICIAL}x official (b8, {layout})"
            checks.append(_check(name, res["zoo"]["ratio"] / res["official"]["ratio"], TRAIN_VS_OFFICIAL))
    return checks


def check_targets(result: dict) -> list[dict]:
    """The issues' targets that this run can evaluate, each with the measured value and pass/fail."""
    checks = _model_checks(result["models"])
    blur = [r for r in result["layers"] if r["layer"].startswith("BlurPool2d")]
    forward = [r for r in blur if r.get("task", "forward") == "forward"]
    if forward:
        best = min(
            (v["x_floor"], name, _layout(r["channels_last"]))
            for r in forward
            for name, v in r["results"].items()
            if name.startswith("zoo")
        )
        name = f"BlurPool2d forward, fastest mode <= {LAYER_FLOOR_TARGET}x floor ({best[1]}, {best[2]})"
        checks.append(_check(name, best[0], LAYER_FLOOR_TARGET))
    for r in blur:
        if not r["channels_last"] and "zoo[fast]" in r["results"]:
            task = r.get("task", "forward")
            if task == "forward+backward":
                name = f"BlurPool2d forward+backward, fast, NCHW <= {LAYER_FLOOR_TARGET}x floor"
                checks.append(_check(name, r["results"]["zoo[fast]"]["x_floor"], LAYER_FLOOR_TARGET))
            name = f"BlurPool2d {task}, fast, NCHW no slower than official"
            checks.append(_check(name, r["results"]["zoo[fast]"]["x_official"], 1.0))
    for key in MEMORY_TARGET_KEYS:
        what, ratios = MEMORY_KEYS[key][0], _vs_official(result["memory"], key)
        for i, r in enumerate(result["memory"]):
            if r["source"] == "zoo" and i in ratios:
                checks.append(_check(f"{r['model']} {what} <= {MEMORY_TARGET}x official", ratios[i], MEMORY_TARGET))
    return checks


def _device(env: dict) -> str:
    device = env.get("device", "cpu")
    return f"{device} ({env['processor']})" if device == "cpu" and env.get("processor") else device


def markdown(result: dict) -> str:
    cfg, env = result["config"], result["env"]
    parts = [
        f"Benchmark: torch {env['torch']}, {_device(env)}, {env['threads']} threads, "
        f"{'/'.join(cfg.get('precisions', ['fp32']))}, {cfg['image_size']} px, "
        f"{cfg['repeats']} interleaved repeats (layers {cfg['layer_repeats']}); ratios are medians of paired "
        "per-round ratios (models: to torchvision; layers: to the copy-bound floor and to the official layer; "
        "the forward+backward floor is twice the forward one: read x and write y, then read dy and write dx).",
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
    labels = [
        f"{r['arch']} {r['task'][:5]} b{r['batch']}{'' if _precision(r) == 'fp32' else ' bf16'}"
        f"{' CL' if r['channels_last'] else ''}"
        for r in rows
    ]
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
