"""``zoo bench``: side-by-side speed and memory benchmark (see ``docs/benchmark.md``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from zoo.cli._command import add_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="short smoke run (resnet18, batch 1, 112 px, few repeats)")
    parser.add_argument("--out", type=Path, default=Path("bench_results"), help="output directory")
    parser.add_argument("--archs", nargs="+", help="model groups (default: resnet18 resnet50)")
    parser.add_argument("--repeats", type=int, help="interleaved model repeats (default 5)")
    parser.add_argument("--layer-repeats", type=int, help="interleaved layer repeats (default 11)")
    parser.add_argument("--threads", type=int, help="torch threads (default 2)")
    parser.add_argument("--image-size", type=int, help="input size in px (default 224)")
    parser.add_argument("--no-memory", action="store_true", help="skip the training-step memory section")
    parser.add_argument("--no-layers", action="store_true", help="skip the layer section")
    parser.add_argument("--no-models", action="store_true", help="skip the whole-model timing section")
    parser.add_argument("--channels-last", choices=("both", "on", "off"), default="both")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="where to run (default cpu)")
    parser.add_argument("--precision", nargs="+", choices=("fp32", "bf16"), help="fp32 and/or bf16 autocast")
    parser.add_argument("--batch-sizes", nargs="+", type=int, help="inference batches (default 1 8)")
    parser.add_argument("--train-batch-sizes", nargs="+", type=int, help="training-step batches (default 8)")


def config_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from zoo.benchmark import BenchConfig

    cfg = BenchConfig.quick() if args.quick else BenchConfig()
    names = ("archs", "repeats", "layer_repeats", "threads", "image_size", "device", "batch_sizes", "train_batch_sizes")
    for name in names:
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.precision is not None:
        cfg.precisions = args.precision
    cfg.memory = cfg.memory and not args.no_memory
    cfg.layers = cfg.layers and not args.no_layers
    cfg.models = cfg.models and not args.no_models
    cfg.channels_last = {"both": [False, True], "on": [True], "off": [False]}[args.channels_last]
    return cfg


def run(args: argparse.Namespace) -> int:
    from zoo.benchmark import run_benchmark
    from zoo.benchmark.report import markdown, write_outputs

    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is an existing file; give a directory (created if missing)")
    result = run_benchmark(config_from_args(args))
    paths = write_outputs(result, args.out)
    print(markdown(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "bench", run, "benchmark zoo vs official vs timm vs torchvision (speed, memory)")
    add_arguments(parser)
