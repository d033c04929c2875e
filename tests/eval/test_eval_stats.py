"""Intervals and paired tests: Student t, cluster-aware Wilson, McNemar exact, paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.eval._stats import mcnemar_exact, mean_ci, paired_bootstrap, proportion_ci, wilson_interval


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
