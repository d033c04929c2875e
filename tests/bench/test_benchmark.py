"""Benchmark logic on known inputs (no timing of real models here)."""

from __future__ import annotations

import argparse
import json

import pytest

from zoo.benchmark import BenchConfig
from zoo.benchmark.cases import LayerCase, layer_cases
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


def _fake_result() -> dict:
    res = {s: {"median_ms": 10.0 * r, "ratio": r} for s, r in
           [("torchvision", 1.0), ("zoo", 1.3), ("official", 1.7), ("timm", 1.1)]}  # fmt: skip
    names = {"torchvision": "resnet18", "zoo": "resnet18_aa4", "official": "resnet18", "timm": "resnetblur18"}
    layer = {"copy": {"median_ms": 1.0, "x_floor": 1.6, "x_official": 0.1},
             "zoo[fast]": {"median_ms": 5.0, "x_floor": 4.0, "x_official": 0.5},
             "zoo[compiled]": {"median_ms": 2.0, "x_floor": 2.5, "x_official": 0.2},
             "official": {"median_ms": 10.0, "x_floor": 16.0, "x_official": 1.0}}  # fmt: skip
    return {
        "config": BenchConfig().__dict__,
        "env": {"torch": "x", "threads": 2},
        "models": [dict(arch="resnet18", task="inference", batch=8, channels_last=False, results=res, names=names)],
        "layers": [
            dict(
                layer="BlurPool2d(k=4, s=2)", shape=[16, 256, 56, 56], channels_last=False, floor_ms=0.6, results=layer
            )
        ],
        "memory": [
            dict(arch="resnet18", source="official", model="resnet18", peak_step_mb=100.0),
            dict(arch="resnet18", source="zoo", model="resnet18_aa4", peak_step_mb=115.0),
        ],
    }


def test_targets_are_checked_against_the_issue() -> None:
    checks = {c["target"]: (round(c["value"], 3), c["ok"]) for c in check_targets(_fake_result())}
    assert checks["resnet18_aa4 <= 1.4x torchvision (b8, NCHW)"] == (1.3, True)
    assert checks["BlurPool2d fastest mode <= 3.0x floor (zoo[compiled], NCHW)"] == (2.5, True)
    assert checks["BlurPool2d eager NCHW no slower than official"] == (0.5, True)
    assert checks["resnet18_aa4 training peak <= 1.1x official"] == (1.15, False)


def test_outputs_written(tmp_path) -> None:
    paths = write_outputs(_fake_result(), tmp_path)
    data = json.loads(paths["json"].read_text())
    assert len(data["targets"]) == 4
    md = paths["markdown"].read_text()
    assert "| resnet18 | inference | 8 | NCHW | 10.0 | 13.0 ms (1.30x)" in md
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
    assert markdown(_fake_result()).count("| no |") == 1
    assert not list(tmp_path.glob(".*.tmp"))


def test_cli_config_and_validation() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--quick", "--repeats", "2", "--channels-last", "off", "--no-memory"]))
    assert (cfg.archs, cfg.repeats, cfg.channels_last, cfg.memory, cfg.image_size) == (["resnet18"], 2, [False],
                                                                                        False, 112)  # fmt: skip
    cfg = config_from_args(parser.parse_args([]))
    assert (cfg.archs, cfg.batch_sizes, cfg.threads, cfg.image_size) == (["resnet18", "resnet50"], [1, 8], 2, 224)
    with pytest.raises(ValueError, match=r"unknown archs \['vgg'\]; valid: resnet18, resnet50"):
        BenchConfig(archs=["vgg"]).validate()
    with pytest.raises(ValueError, match="repeats must be >= 1"):
        BenchConfig(repeats=0).validate()
