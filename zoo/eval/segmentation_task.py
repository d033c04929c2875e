"""``zoo eval --task segmentation``: mIoU and dense shift consistency of segmentation models, with the paired
comparison between them; ``results.json``, ``results.md`` and ``results.png`` in the output folder.

Data: ``digits`` (the embedded pasted-digits canvases, 11 classes) or a folder of ``images/`` + ``masks/``
(``zoo.data.segmentation``). Inputs are fed as RGB in [0, 1] without normalisation, as ``zoo finetune`` with
``task: segmentation`` trains them. Metrics are computed by ``zoo.eval.segmentation``; every model after the
first is compared with the first on the same images (per-image differences, bootstrap interval, sign-flip p).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from zoo.eval.segmentation import evaluate_segmentation, paired_segmentation, random_shifts

__all__ = [
    "SEG_DEFAULTS",
    "SegData",
    "evaluate_models",
    "format_table",
    "load_segmentation_data",
    "load_segmentation_models",
    "plot_results",
    "run_segmentation_eval",
    "write_results",
]

DIGITS_CLASSES = 11
# settings of the segmentation task (KEY=VALUE on the command line)
SEG_DEFAULTS: dict[str, Any] = {
    "count": 128,  # pasted-digits canvases (data=digits)
    "size": 64,  # their side in pixels
    "num_classes": None,  # default: 11 for digits, else the model's / the largest mask id + 1
    "ignore_index": 255,
    "shifts": 5,  # random circular shifts per image
    "max_shift": 8,  # their largest offset in pixels
    "rounds": 1000,  # bootstrap rounds
}


@dataclass
class SegData:
    """Evaluation images: ``pairs`` of ``(image (3, H, W), mask (H, W))``, the class count and a description."""

    pairs: list[tuple[Tensor, Tensor]]
    num_classes: int | None
    description: str
    max_id: int = field(default=-1)

    def batches(self, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Consecutive images of one size, at most ``batch_size`` per batch."""
        group: list[tuple[Tensor, Tensor]] = []
        for pair in self.pairs:
            if group and (len(group) == batch_size or pair[0].shape != group[0][0].shape):
                yield torch.stack([g[0] for g in group]), torch.stack([g[1] for g in group])
                group = []
            group.append(pair)
        if group:
            yield torch.stack([g[0] for g in group]), torch.stack([g[1] for g in group])


def load_segmentation_data(
    data: str | None,
    *,
    count: int = 128,
    size: int = 64,
    seed: int = 0,
    limit: int | None = None,
    num_classes: int | None = None,
    ignore_index: int = 255,
) -> SegData:
    """``digits`` (or ``None``/``embedded``): ``count`` pasted-digits canvases (seed ``1000 + seed``, never the
    training canvases of the demo); otherwise a segmentation folder. ``limit`` keeps the first N images."""
    from zoo.data.segmentation import SegmentationFolder, pasted_digits

    if data in (None, "digits", "embedded"):
        n = min(count, limit) if limit else count
        if num_classes is not None and num_classes != DIGITS_CLASSES:
            raise ValueError(f"num_classes={num_classes}: the pasted digits have {DIGITS_CLASSES} classes")
        images, masks = pasted_digits(n, size=size, seed=1000 + seed)
        desc = f"{n} pasted-digits canvases {size}x{size} (seed {1000 + seed}), {DIGITS_CLASSES} classes"
        return SegData(list(zip(images, masks)), DIGITS_CLASSES, desc, DIGITS_CLASSES - 1)
    root = Path(data)
    if not root.exists():
        raise FileNotFoundError(f"--data {data}: no such folder (give digits or a folder with images/ and masks/)")
    folder = SegmentationFolder(root, num_classes, ignore_index)
    if limit:
        folder.pairs = folder.pairs[:limit]
    pairs = [folder[i] for i in range(len(folder))]
    ids = [int(m[m != ignore_index].max()) for _, m in pairs if bool((m != ignore_index).any())]
    max_id = max(ids, default=-1)
    return SegData(pairs, num_classes, f"{len(pairs)} image(s) of {root}", max_id)


def _classes_of(module: nn.Module) -> int | None:
    value = getattr(module, "num_classes", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def load_checkpoint(name: str, path: str | Path) -> nn.Module:
    """A ``unet_*`` model from a ``zoo finetune`` run folder (``zoo.create(name, pretrained=DIR)``) or from a
    ``.safetensors`` / ``.pt`` state dict (the class count is read from the head's weight)."""
    import zoo
    from zoo.weights.errors import WeightsUnavailableError
    from zoo.weights.io import load_state_dict_file

    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"--weights {path}: no config.json (give a zoo finetune run folder or a file)")
        try:
            return zoo.create(name, pretrained=path)
        except WeightsUnavailableError as err:
            raise ValueError(f"--weights: {err}") from None
    state = load_state_dict_file(path)
    head = state.get("head.weight")
    if head is None:
        raise ValueError(f"--weights {path} is not a unet_* state dict (no head.weight)")
    model = zoo.create(name, num_classes=int(head.shape[0]))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise ValueError(f"--weights {path} does not fit {name}: {first}") from None
    return model


def load_segmentation_models(
    names: Sequence[str],
    weights: Mapping[str, str] | None,
    num_classes: int | None,
    pretrained: str = "auto",
    init_seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, nn.Module]:
    """Zoo ``unet_*`` names, each from its checkpoint in ``weights`` or randomly initialised (with a notice;
    ``pretrained="required"`` refuses that). ``num_classes`` is the class count of the data (or ``None``)."""
    import zoo

    weights = dict(weights or {})
    stray = sorted(set(weights) - set(names))
    if stray:
        raise ValueError(f"--weights given for {stray}, which are not in --models ({', '.join(names)})")
    models: dict[str, nn.Module] = {}
    for name in names:
        torch.manual_seed(init_seed)
        if name in weights:
            models[name] = load_checkpoint(name, weights[name])
            continue
        if pretrained == "required":
            raise ValueError(
                f"{name}: --pretrained required, but segmentation models have no published weights; "
                f"give a checkpoint with --weights {name}=DIR"
            )
        if num_classes is None:
            raise ValueError(f"{name} without --weights needs the class count: num_classes=C")
        log(f"NOTE {name}: no --weights, RANDOM INIT (seed {init_seed}); figures say nothing about a trained model")
        models[name] = zoo.create(name, num_classes=num_classes)
    return models


def _check_classes(models: Mapping[str, nn.Module], data: SegData) -> int:
    """The class count shared by the models and the masks; ``ValueError`` naming the mismatch."""
    counts = {name: _classes_of(m) for name, m in models.items()}
    known = {c for c in counts.values() if c is not None}
    if len(known) > 1:
        raise ValueError(
            f"class count mismatch between the models: {', '.join(f'{n}: {c}' for n, c in counts.items())}"
        )
    model_c = known.pop() if known else None
    if data.num_classes is not None and model_c is not None and data.num_classes != model_c:
        raise ValueError(
            f"class count mismatch: the models predict {model_c} classes, the data has "
            f"{data.num_classes} (set num_classes={model_c} or give matching checkpoints)"
        )
    classes = data.num_classes or model_c or data.max_id + 1
    if data.max_id >= classes:
        raise ValueError(
            f"class count mismatch: the masks hold class id {data.max_id}, the models predict "
            f"{classes} classes (ids 0..{classes - 1}; 255 = ignored)"
        )
    return classes


@torch.no_grad()
def evaluate_models(
    models: Mapping[str, nn.Module],
    data: SegData,
    *,
    shifts: Sequence[tuple[int, int]],
    batch_size: int = 32,
    rounds: int = 1000,
    ignore_index: int = 255,
    progress: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Every model on the same images, and each later model against the first (``"paired"``)."""
    from tqdm.auto import tqdm

    if not models:
        raise ValueError("no models to evaluate")
    classes = _check_classes(models, data)
    dev = torch.device(device or "cpu")
    results: dict[str, Any] = {}
    for name, module in tqdm(models.items(), desc="models", disable=not progress or len(models) < 2):
        module = module.to(dev).eval()
        batches = ((x.to(dev), y.to(dev)) for x, y in data.batches(batch_size))
        res = evaluate_segmentation(module, batches, classes, shifts, ignore_index, progress, rounds)
        results[name] = res
    base = next(iter(results))
    paired = {name: paired_segmentation(results[base], res, rounds) for name, res in results.items() if name != base}
    return {"num_classes": classes, "baseline": base, "models": results, "paired": paired}


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _interval(value: float, ci: Sequence[float]) -> str:
    return f"{_pct(value)} [{_pct(ci[0])}, {_pct(ci[1])}]"


def _diff(pair: Mapping[str, Any]) -> str:
    lo, hi = pair["ci95"]
    return f"{100 * pair['diff']:+.1f} [{_pct(lo)}, {_pct(hi)}] (p={pair['p']:.3f})"


def format_table(report: Mapping[str, Any]) -> str:
    """Markdown table: mIoU and dense consistency (%, 95% CI), and the paired differences to the baseline."""
    base = report["baseline"]
    rows = [
        f"| model | mIoU % [95% CI] | dense consistency % [95% CI] | per-image IoU vs {base} | consistency vs {base} |",
        "|---|---|---|---|---|",
    ]
    for name, res in report["models"].items():
        pair = report["paired"].get(name)
        cells = (_diff(pair["iou"]), _diff(pair["consistency"])) if pair else ("-", "-")
        rows.append(
            f"| {name} | {_interval(res.miou, res.miou_ci95)} | "
            f"{_interval(res.consistency, res.consistency_ci95)} | {cells[0]} | {cells[1]} |"
        )
    return "\n".join(rows)


def plot_results(report: Mapping[str, Any], path: str | Path) -> Path:
    """Bar chart of mIoU and dense consistency with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zoo.io import atomic_path

    results = report["models"]
    names = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(9, 1.2 + 0.5 * len(names)))
    for ax, key, title in zip(axes, ("miou", "consistency"), ("mIoU (%)", "dense shift consistency (%)")):
        vals = [100 * results[n][key] for n in names]
        err = [
            [max(0.0, 100 * (results[n][key] - results[n][f"{key}_ci95"][0])) for n in names],
            [max(0.0, 100 * (results[n][f"{key}_ci95"][1] - results[n][key])) for n in names],
        ]
        err = [[0.0 if math.isnan(v) else v for v in side] for side in err]
        ax.barh(names, vals, xerr=err, color="tab:blue", capsize=3)
        ax.set_title(title)
        ax.invert_yaxis()
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return path


def write_results(report: dict[str, Any], out_dir: str | Path, notes: Sequence[str] = ()) -> str:
    """``results.json``, ``results.md`` (table + notes) and ``results.png`` in ``out_dir``; returns the table."""
    from zoo.io import atomic_write, write_json

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} is an existing file; give a directory (it is created if missing)")
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(report)
    write_json(out / "results.json", report)
    atomic_write(out / "results.md", "\n".join([table, "", *(f"- {n}" for n in notes), ""]))
    plot_results(report, out / "results.png")
    return table


def run_segmentation_eval(
    models: Mapping[str, nn.Module],
    data: SegData,
    out_dir: str | Path,
    *,
    shifts: int = 5,
    max_shift: int = 8,
    seed: int = 0,
    batch_size: int = 32,
    rounds: int = 1000,
    ignore_index: int = 255,
    progress: bool = True,
    device: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Evaluate, print the table and write the outputs (the body of ``zoo eval --task segmentation``)."""
    if shifts < 1 or max_shift < 1:
        raise ValueError(f"shifts and max_shift must be >= 1, got shifts={shifts}, max_shift={max_shift}")
    offsets = random_shifts(shifts, max_shift, seed)
    report = evaluate_models(
        models,
        data,
        shifts=offsets,
        batch_size=batch_size,
        rounds=rounds,
        ignore_index=ignore_index,
        progress=progress,
        device=device,
    )
    report["data"] = data.description
    notes = [
        f"data: {data.description}",
        f"dense consistency: {shifts} circular shifts up to {max_shift} px (seed {seed}): {offsets}; "
        "95% CI Student t over images",
        "mIoU 95% CI: percentile bootstrap over images; paired: per-image difference to the first model, "
        "bootstrap 95% CI and sign-flip p",
    ]
    report["notes"] = notes
    table = write_results(report, out_dir, notes)
    log(table)
    for note in notes:
        log(f"  {note}")
    log(f"wrote {Path(out_dir) / 'results.json'}, results.md and results.png")
    return report


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    from zoo.config import parse_override

    settings = dict(SEG_DEFAULTS)
    for item in [*args.overrides, *(args.set or [])]:
        if "=" not in item:
            raise ValueError(f"override {item!r} must be KEY=VALUE, e.g. shifts=4")
        key, value = parse_override(item)
        if key not in SEG_DEFAULTS:
            raise ValueError(f"unknown setting {key!r} for --task segmentation; valid: {', '.join(SEG_DEFAULTS)}")
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
        settings[key] = value
    return settings


def cli(args: argparse.Namespace, weights: Mapping[str, str], log: Callable[[str], None] = print) -> int:
    """``zoo eval --task segmentation`` (called by ``zoo.cli.eval`` with the parsed arguments)."""
    for option, value in (("--metrics", args.metrics), ("--generator", args.generator), ("--config", args.config)):
        if value:
            raise ValueError(
                f"{option} is for --task classification; --task segmentation takes KEY=VALUE "
                f"settings ({', '.join(SEG_DEFAULTS)})"
            )
    names = [n.strip() for n in (args.models or "").split(",") if n.strip()]
    if not names:
        raise ValueError("give --models A,B,... (unet_* names, e.g. unet_resnet18,unet_resnet18_aa4)")
    s = _settings(args)
    seed = args.seed if args.seed is not None else 0
    data = load_segmentation_data(
        args.data,
        count=s["count"],
        size=s["size"],
        seed=seed,
        limit=args.limit,
        num_classes=s["num_classes"],
        ignore_index=s["ignore_index"],
    )
    log(f"data: {data.description}")
    from zoo.config import pretrained_policy

    policy = pretrained_policy(args.pretrained, "--pretrained")
    classes = data.num_classes or (None if weights else data.max_id + 1 or None)
    models = load_segmentation_models(names, weights, classes, policy, seed, log)
    run_segmentation_eval(
        models,
        data,
        args.out,
        shifts=s["shifts"],
        max_shift=s["max_shift"],
        seed=seed,
        batch_size=args.batch_size or 32,
        rounds=s["rounds"],
        ignore_index=s["ignore_index"],
        progress=not args.no_progress,
        device=args.device,
        log=log,
    )
    return 0
