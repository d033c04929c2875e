"""zoo.stats against hand-computed answers: Student t across seeds, cluster-aware Wilson, McNemar exact,
paired t and the paired bootstrap; and the fine-tuning report tables built on them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zoo.stats import mcnemar_exact, mean_ci, paired_bootstrap, paired_t, proportion_ci, t_interval, wilson_interval
from zoo.train.report import comparison_rows, mcnemar_pooled, paired_comparison, paired_lines


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


def test_mcnemar_pooled_hand_computed():
    # 5 items right for x only, 1 for y only: p = 2 * P(B(6, 1/2) <= 1) = 2 * 7 / 64
    x = [1] * 5 + [0] + [1] * 10 + [0] * 4
    y = [0] * 5 + [1] + [1] * 10 + [0] * 4
    res = mcnemar_pooled(x, y)
    assert (res["x_only"], res["y_only"], res["n"]) == (5, 1, 20)
    assert res["p"] == pytest.approx(14 / 64)
    assert mcnemar_pooled([1, 0], [1, 0])["p"] == 1.0


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


def test_mean_interval_is_student_t_not_z_at_small_n() -> None:
    values = np.arange(8.0)  # mean 3.5, sd 2.44949; t(7, 0.975) = 2.364624
    mean, _low, high = mean_ci(values)
    assert mean == pytest.approx(3.5)
    assert high - mean == pytest.approx(2.364624 * 2.44949 / np.sqrt(8), rel=1e-5)  # z would give 1.697


def test_one_observation_has_no_interval() -> None:
    _, low, high = mean_ci(np.array([0.3]))
    assert np.isnan(low) and np.isnan(high)


def test_clusters_are_the_units_of_the_interval() -> None:
    rng = np.random.default_rng(0)
    photo_means = rng.normal(size=5)
    values = np.repeat(photo_means, 6)  # 6 identical views of each of 5 photos
    groups = np.repeat(np.arange(5), 6).tolist()
    clustered = mean_ci(values, groups=groups)
    assert np.allclose(clustered, mean_ci(photo_means))  # 5 independent units, not 30
    naive = mean_ci(values)
    assert naive[2] - naive[1] < clustered[2] - clustered[1]


def test_all_zero_sample_is_not_a_zero_width_interval() -> None:
    out = proportion_ci(np.zeros(8), np.full(8, 5.0))  # 0 of 40 pooled pairs
    assert out["p"] == 0.0 and out["ci95"][0] == 0.0
    assert out["ci95"][1] == pytest.approx(wilson_interval(0, 40)[1]) and out["ci95"][1] > 0.05


def test_design_effect_of_duplicated_views() -> None:
    outcome = np.repeat([1, 0, 1, 1, 0, 1, 0, 1, 1, 1], 4).astype(float)  # 10 photos x 4 identical views
    groups = np.repeat(np.arange(10), 4).tolist()
    clustered = proportion_ci(outcome, np.ones(40), groups)
    assert clustered["deff"] == pytest.approx(4.0 * 10 / 9, rel=1e-6)  # 4 copies, G/(G-1) small-sample factor
    assert clustered["ci95"][1] - clustered["ci95"][0] > proportion_ci(outcome, np.ones(40))["ci95"][1] - 0.7


def test_mcnemar_exact_known_values() -> None:
    a = np.array([0] * 5 + [1] * 10, dtype=bool)
    b = np.array([1] * 5 + [1] * 10, dtype=bool)  # 5 discordant, all favour B
    assert mcnemar_exact(a, b) == {"a_only": 0, "b_only": 5, "p": pytest.approx(2 * 0.5**5)}
    a = np.array([1] + [0] * 9, dtype=bool)
    b = ~a  # 1 vs 9 discordant: p = 2 * (1 + 10) / 1024
    assert mcnemar_exact(a, b)["p"] == pytest.approx(22 / 1024)
    assert mcnemar_exact(a, a)["p"] == 1.0


def test_paired_bootstrap() -> None:
    d = np.linspace(0.1, 0.3, 12)
    out = paired_bootstrap(d, rounds=999)
    assert out["diff"] == pytest.approx(0.2) and out["ci95"][0] > 0.1
    assert out["p"] == pytest.approx(2 / 2**12)  # exact sign-flip: only all-plus and all-minus are as extreme
    assert paired_bootstrap(np.array([-0.5, -0.4]))["p"] == pytest.approx(0.5)  # 2 photos cannot be significant
    assert paired_bootstrap(np.zeros(12))["p"] == 1.0
    assert np.isnan(paired_bootstrap(d, groups=[0] * 12)["p"])  # one cluster: nothing to resample
