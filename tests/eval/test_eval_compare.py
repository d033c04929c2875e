"""Paired comparison of two models on the same images."""

from __future__ import annotations

import pytest

from zoo.eval.compare import compare_models, compare_pair


def test_binary_pair_uses_mcnemar_and_b_minus_a() -> None:
    a = {i: 1.0 if i < 10 else 0.0 for i in range(20)}
    b = {i: 1.0 if i < 16 else 0.0 for i in range(20)}  # B right on 6 more, never worse
    out = compare_pair(a, b, "binary", rounds=500)
    assert out.diff == pytest.approx(0.3) and out.test == "McNemar exact"
    assert (out.a_only, out.b_only) == (0, 6) and out.p == pytest.approx(2 * 0.5**6)
    assert out.ci95[0] > 0


def test_every_pair_of_models_in_order() -> None:
    per_model = {m: {"q": ("continuous", {i: float(k * i) for i in range(6)})} for k, m in enumerate("ABC")}
    out = compare_models(per_model, rounds=200)
    assert list(out) == ["B vs A", "C vs A", "C vs B"]
    assert out["C vs A"]["q"].diff == pytest.approx(2 * 2.5)
    with pytest.raises(ValueError, match="share no evaluated image"):
        compare_pair({0: 1.0}, {1: 1.0}, "continuous")
