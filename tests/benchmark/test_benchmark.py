"""Benchmark logic on known inputs (no timing of real models here)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import pytest

from zoo.benchmark import BenchConfig
from zoo.benchmark.cases import FRESH_COPY, LayerCase, layer_cases
from zoo.benchmark.memory import allocated_peak_mb
from zoo.benchmark.report import check_targets, markdown, write_outputs
from zoo.benchmark.timing import paired_summary, time_interleaved
from zoo.cli.bench import add_arguments, config_from_args


def test_paired_summary_is_median_of_per_round_ratios() -> None:
    times = {"base": [1.0, 2.0, 4.0], "cand": [2.0, 2.0, 2.0]}
    s = paired_summary(times, "base")
    assert s["cand"]["ratio"] == pytest.approx(1.0)  # ratios 2, 1, 0.5 -> median 1
    assert s["cand"]["median_ms"] == pytest.approx(2000.0)
    assert s["base"]["ratio"] == 1.0
    with pytest.raises(KeyError, match="baseline 'nope'"):
        paired_summary(times, "nope")


def test_time_interleaved_calls_each_once_per_round() -> None:
    calls: list[str] = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    times = time_interleaved(fns, repeats=3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert calls[:3] == ["a", "b", "c"] and calls[3:6] == ["a", "b", "c"] and calls[6:9] == ["b", "c", "a"]
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        time_interleaved(fns, repeats=0)


def test_copy_floor_factor() -> None:
    assert LayerCase("x", (1, 1, 4, 4), 2, {}).floor_factor == pytest.approx(0.625)
    assert LayerCase("x", (1, 1, 4, 4), 1, {}).floor_factor == pytest.approx(1.0)
    assert {c.shape for c in layer_cases(quick=False)} == {(16, 256, 56, 56), (8, 64, 112, 112)}


_MEMORY_KEYS = ("source", "model", "peak_allocated_mb", "peak_rss_mb", "saved_activations_mb")


def _fake_result() -> dict:
    res = {s: {"median_ms": 10.0 * r, "ratio": r} for s, r in
           [("torchvision", 1.0), ("zoo", 1.3), ("official", 1.7), ("timm", 1.1)]}  # fmt: skip
    train = {s: {"median_ms": 10.0 * r, "ratio": r} for s, r in
             [("torchvision", 1.0), ("zoo", 1.5), ("official", 1.4), ("timm", 1.1)]}  # fmt: skip
    names = {"torchvision": "resnet18", "zoo": "resnet18_aa4", "official": "resnet18", "timm": "resnetblur18"}
    layer = {"copy": {"median_ms": 1.0, "x_floor": 1.6, "x_official": 0.1},
             "zoo[fast]": {"median_ms": 5.0, "x_floor": 4.0, "x_official": 0.5},
             "zoo[compiled]": {"median_ms": 2.0, "x_floor": 2.5, "x_official": 0.2},
             "official": {"median_ms": 10.0, "x_floor": 16.0, "x_official": 1.0}}  # fmt: skip
    train_layer = {"copy": {"median_ms": 1.0, "x_floor": 0.8, "x_official": 0.1},
                   "zoo[fast]": {"median_ms": 3.0, "x_floor": 2.4, "x_official": 0.7},
                   FRESH_COPY: {"median_ms": 1.5, "x_floor": 1.2, "x_official": 0.4},
                   "official": {"median_ms": 4.0, "x_floor": 3.2, "x_official": 1.0}}  # fmt: skip
    model = dict(arch="resnet18", batch=8, channels_last=False, precision="fp32", names=names)
    layer_row = dict(layer="BlurPool2d(k=4, s=2)", shape=[16, 256, 56, 56], channels_last=False, floor_ms=0.6)
    return {
        "config": BenchConfig().__dict__,
        "env": {"torch": "x", "threads": 2},
        "models": [
            model | dict(task="inference", results=res),
            model | dict(task="train", results=train),
            model | dict(task="train", results=train, precision="bf16"),  # not an issue target: no check
        ],
        "layers": [
            layer_row | dict(task="forward", results=layer),
            layer_row | dict(task="forward+backward", results=train_layer),
        ],
        "memory": [
            dict(zip(_MEMORY_KEYS, values), arch="resnet18")
            for values in [("official", "resnet18", 100.0, 50.0, 40), ("zoo", "resnet18_aa4", 85.0, 60.0, 38)]
        ],
    }


def test_targets_are_checked_against_the_issue() -> None:
    checks = {c["target"]: (round(c["value"], 3), c["ok"]) for c in check_targets(_fake_result())}
    assert checks == {
        "resnet18_aa4 inference <= 1.4x torchvision (b8, NCHW)": (1.3, True),
        "resnet18_aa4 training step <= 1.35x torchvision (b8, NCHW)": (1.5, False),
        "resnet18_aa4 training step <= 1.05x official (b8, NCHW)": (round(1.5 / 1.4, 3), False),
        "BlurPool2d forward, fastest mode <= 3.0x floor (zoo[compiled], NCHW)": (2.5, True),
        "BlurPool2d forward, fast, NCHW no slower than official": (0.5, True),
        "BlurPool2d forward+backward, fast, NCHW <= 3.0x floor": (2.4, True),
        "BlurPool2d forward+backward, fast, NCHW no slower than official": (0.7, True),
        "resnet18_aa4 training peak <= 0.9x official": (0.85, True),
        "resnet18_aa4 saved activations <= 0.9x official": (0.95, False),
    }


def test_outputs_written(tmp_path) -> None:
    paths = write_outputs(_fake_result(), tmp_path)
    data = json.loads(paths["json"].read_text())
    assert len(data["targets"]) == 9
    md = paths["markdown"].read_text()
    assert "| resnet18_aa4 | zoo | 85 | 0.85 | 60 | 1.20 | 38 | 0.95 |" in md  # the RSS peak shown, not checked
    assert "| resnet18 | inference | 8 | fp32 | NCHW | 10.0 | 13.0 ms (1.30x)" in md
    assert "| resnet18 | train | 8 | bf16 | NCHW | 10.0 | 15.0 ms (1.50x)" in md
    assert "| BlurPool2d(k=4, s=2) | forward+backward | 16x256x56x56 | NCHW | zoo[fast] | 3.00 | 2.40 | 0.70 |" in md
    assert "| NCHW | copy into a new tensor (x.clone()) | 1.50 | 1.20 | 0.40 |" in md
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
    assert markdown(_fake_result()).count("| no |") == 3
    assert not list(tmp_path.glob(".*.tmp"))


def test_out_existing_file_is_one_line_error(tmp_path, capsys) -> None:
    from zoo.cli import main

    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    assert main(["bench", "--quick", "--out", str(existing)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"zoo bench: error: --out {existing} is an existing file; give a directory (created if missing)"
    assert existing.read_text() == "keep me"


def test_cli_config_and_validation() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--quick", "--repeats", "2", "--channels-last", "off", "--no-memory"]))
    assert (cfg.archs, cfg.repeats, cfg.channels_last, cfg.memory, cfg.image_size) == (["resnet18"], 2, [False],
                                                                                        False, 112)  # fmt: skip
    cfg = config_from_args(parser.parse_args([]))
    assert (cfg.archs, cfg.batch_sizes, cfg.threads, cfg.image_size) == (["resnet18", "resnet50"], [1, 8], 2, 224)
    assert (cfg.train_batch_sizes, cfg.precisions, cfg.device) == ([8], ["fp32"], "cpu")
    args = ["--device", "cuda", "--precision", "fp32", "bf16", "--batch-sizes", "32", "64", "--train-batch-sizes", "32"]
    cfg = config_from_args(parser.parse_args(args))
    assert (cfg.device, cfg.precisions, cfg.batch_sizes, cfg.train_batch) == ("cuda", ["fp32", "bf16"], [32, 64], 32)
    with pytest.raises(ValueError, match=r"unknown precisions \['fp8'\]; valid: fp32, bf16"):
        BenchConfig(precisions=["fp8"]).validate()
    with pytest.raises(ValueError, match="train_batch_sizes must be a non-empty list"):
        BenchConfig(train_batch_sizes=[]).validate()
    with pytest.raises(ValueError, match=r"unknown archs \['vgg'\]; valid: resnet18, resnet50"):
        BenchConfig(archs=["vgg"]).validate()
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        BenchConfig(repeats=0).validate()


def test_allocated_peak_is_the_high_water_mark_of_live_tensors() -> None:
    """Known answers: 8 MiB then 4 MiB one after the other peak at 8 MiB; both alive at once, 12 MiB."""
    import torch

    mib = 2**20 // 4  # float32 elements per MiB

    def one_after_the_other() -> None:
        torch.ones(8 * mib).sum()
        torch.ones(4 * mib).sum()

    def both_alive() -> None:
        a = torch.ones(8 * mib)
        b = torch.ones(4 * mib)
        (a.sum() + b.sum()).item()

    kept: list = []
    assert allocated_peak_mb(one_after_the_other) == pytest.approx(8.0, abs=0.1)
    assert allocated_peak_mb(both_alive) == pytest.approx(12.0, abs=0.1)
    assert allocated_peak_mb(lambda: kept.append(torch.ones(2 * mib))) == pytest.approx(2.0, abs=0.1)


def test_cpu_name_is_read_from_cpuinfo_and_shown_in_the_report(tmp_path) -> None:
    from zoo.benchmark.run import cpu_name

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\nflags\t: avx512f\n")
    assert cpu_name(str(info)) == "AMD EPYC 9R14"
    assert cpu_name(str(tmp_path / "missing"))  # falls back to platform's name: never empty
    result = _fake_result()
    result["env"] = {"torch": "x", "threads": 2, "device": "cpu", "processor": "AMD EPYC 9R14"}
    assert markdown(result).startswith("Benchmark: torch x, cpu (AMD EPYC 9R14), 2 threads,")
    result["env"] = {"torch": "x", "threads": 2, "device": "NVIDIA H200", "processor": "AMD EPYC 9R14"}
    assert markdown(result).startswith("Benchmark: torch x, NVIDIA H200, 2 threads,")


def test_layer_rows_time_a_fresh_copy_next_to_the_backward() -> None:
    """A real (quick) layer run: the forward+backward rows also time ``x.clone()``, the forward rows do not."""
    from zoo.benchmark.run import bench_layers

    cfg = replace(BenchConfig.quick(), layer_repeats=1, channels_last=[False])
    rows = bench_layers(cfg)
    assert {r["task"] for r in rows} == {"forward", "forward+backward"}
    for r in rows:
        assert (FRESH_COPY in r["results"]) == (r["task"] == "forward+backward")
        assert all(v["median_ms"] > 0 and v["x_floor"] > 0 for v in r["results"].values())
