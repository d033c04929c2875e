"""The across-seed statistics and the paired tests, against hand-computed answers."""

from __future__ import annotations

import math

import pytest

from zoo.train.report import comparison_rows, paired_comparison, paired_lines
from zoo.train.stats import mcnemar_exact, paired_t, t_interval


def test_t_interval_hand_computed():
    # mean 3, sd sqrt(14/3), se sd/2, t(0.975, 3) = 3.182446305...
    ci = t_interval([1.0, 2.0, 3.0, 6.0])
    half = 3.182446305284263 * math.sqrt(14 / 3) / 2
    assert ci["mean"] == pytest.approx(3.0)
    assert ci["sd"] == pytest.approx(math.sqrt(14 / 3))
    assert (ci["low"], ci["high"]) == pytest.approx((3.0 - half, 3.0 + half), rel=1e-9)
    assert half == pytest.approx(3.4374, abs=1e-4)  # wider than the z interval (1.96 -> 2.117)
    one = t_interval([5.0])
    assert one["mean"] == 5.0 and one["low"] is None and one["high"] is None


def test_paired_t_hand_computed():
    # differences 13, 13, 11: mean 37/3, sd 2/sqrt(3), se 2/3, t = 18.5 on 2 df
    # with 2 df the two-sided p is 1 - t / sqrt(t^2 + 2) exactly; t(0.975, 2) = 4.302652729...
    res = paired_t([71.0, 73.0, 70.0], [58.0, 60.0, 59.0])
    assert res["diff"] == pytest.approx(37 / 3)
    assert res["t"] == pytest.approx(18.5)
    assert res["p"] == pytest.approx(1 - 18.5 / math.sqrt(18.5**2 + 2), rel=1e-9)
    half = 4.302652729911275 * (2 / 3)
    assert (res["low"], res["high"]) == pytest.approx((37 / 3 - half, 37 / 3 + half), rel=1e-9)
    # the paired test sees what two unpaired intervals hide: the seeds move both models together
    assert paired_t([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])["p"] == 1.0
    assert paired_t([2.0], [1.0])["p"] is None


def test_mcnemar_exact_hand_computed():
    # 5 items right for x only, 1 for y only: p = 2 * P(B(6, 1/2) <= 1) = 2 * 7 / 64
    x = [1] * 5 + [0] + [1] * 10 + [0] * 4
    y = [0] * 5 + [1] + [1] * 10 + [0] * 4
    res = mcnemar_exact(x, y)
    assert (res["x_only"], res["y_only"], res["n"]) == (5, 1, 20)
    assert res["p"] == pytest.approx(14 / 64)
    assert mcnemar_exact([1, 0], [1, 0])["p"] == 1.0


def _run(name, seed, top1, cons, correct, aa):
    return {
        "name": name,
        "seed": seed,
        "init": "random",
        "antialiased": aa,
        "history": [{"epoch": 2}],
        "train_seconds": 1.0,
        "test": {
            "test_top1": top1,
            "test_consistency": cons,
            "test_consistency_low": cons - 5,
            "test_consistency_high": cons + 5,
            "correct": correct,
        },
    }


def test_comparison_table_uses_the_statistics_across_seeds():
    runs = []
    for seed, (a, b) in enumerate([(71.0, 58.0), (73.0, 60.0), (70.0, 59.0)]):
        runs.append(_run("resnet18_aa4", seed, a, a, [1, 1, 0], True))
        runs.append(_run("resnet18", seed, b, b, [1, 0, 0], False))
    rows = comparison_rows(runs)
    aa = rows[0]
    ci = t_interval([71.0, 73.0, 70.0])
    assert aa["seeds"] == 3 and aa["test top-1 (%)"] == pytest.approx(ci["mean"])
    assert aa["top-1 95% CI"] == pytest.approx((ci["low"], ci["high"]))
    assert aa["consistency 95% CI"] == pytest.approx((ci["low"], ci["high"]))  # t across seeds, not Wilson
    pair = paired_comparison(runs)[0]
    assert (pair["a"], pair["b"], pair["seeds"]) == ("resnet18_aa4", "resnet18", [0, 1, 2])
    assert pair["top1"]["p"] == pytest.approx(1 - 18.5 / math.sqrt(18.5**2 + 2), rel=1e-9)
    # McNemar pools (seed, image) pairs: image 2 is right for the anti-aliased model only, in each seed
    assert (pair["mcnemar_top1"]["x_only"], pair["mcnemar_top1"]["y_only"], pair["mcnemar_top1"]["n"]) == (3, 0, 9)
    assert pair["mcnemar_top1"]["p"] == pytest.approx(2 / 8)
    line = paired_lines([pair])[0]
    assert "top-1 +12.33 pt" in line and "p = 0.00291" in line and "McNemar" in line


def test_one_seed_table_keeps_the_wilson_interval():
    rows = comparison_rows([_run("resnet18_aa4", 0, 90.0, 70.0, [1], True)])
    assert rows[0]["consistency 95% CI"] == (65.0, 75.0) and rows[0]["top-1 95% CI"] == (None, None)
