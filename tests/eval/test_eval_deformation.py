"""Deformation sensitivity (Ruderman et al.), TPS fields and filter smoothness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_nets import circular_net

from zoo.eval.deformation import deform, deformation_sensitivity, filter_smoothness, tps_field


def _batches(n: int = 4) -> list:
    return [(torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(2)), None)]


def test_identity_deformation_has_zero_sensitivity() -> None:
    out = deformation_sensitivity(circular_net(), _batches(), strengths=[0.0, 2.0], layers=["1", "3"], bootstrap=50)
    assert out.n == 4 and out.pairs == 2
    for name in ("1", "3", "output"):
        assert out.layers[name].sensitivity[0] == 0.0
        assert out.layers[name].sensitivity[1] > 0.0
        assert out.layers[name].pair > 0.0


def test_tps_field_interpolates_controls_and_affine_maps() -> None:
    rng = np.random.default_rng(0)
    controls = rng.uniform(-2, 2, size=(4, 4, 2))
    field = tps_field(controls, 10, 13)
    ys, xs = np.linspace(0, 9, 4), np.linspace(0, 12, 4)
    assert field[:, 0, 0] == pytest.approx(controls[0, 0])  # corners are control points on the pixel grid
    assert field[:, 9, 12] == pytest.approx(controls[3, 3])
    # a constant displacement is reproduced exactly everywhere (affine part of the spline)
    const = tps_field(np.full((3, 3, 2), 1.5), 8, 8)
    assert np.allclose(const, 1.5)
    assert ys[1] > 0 and xs[1] > 0


def test_deform_zero_is_exact_and_integer_moves_shift() -> None:
    image = torch.rand(3, 9, 9)
    assert torch.equal(deform(image, np.zeros((2, 9, 9))), image)
    moved = deform(image, np.stack([np.ones((9, 9)), np.zeros((9, 9))]))  # out(y, x) = in(y + 1, x)
    assert torch.allclose(moved[:, :-1], image[:, 1:])


def test_filter_smoothness_known_values() -> None:
    conv = torch.nn.Conv2d(1, 2, 3, bias=False)
    with torch.no_grad():
        conv.weight[0] = 0.7  # constant filter: no variation
        conv.weight[1] = torch.tensor([[1.0, -1, 1], [-1, 1, -1], [1, -1, 1]])  # checkerboard: TV 24, L1 9
    out = filter_smoothness(torch.nn.Sequential(conv, torch.nn.Conv2d(2, 2, 1)))
    assert list(out.layers) == ["0"] and out.filters == 2
    assert out.mean == pytest.approx((0.0 + 24 / 9) / 2)
    with pytest.raises(ValueError, match="no Conv2d"):
        filter_smoothness(torch.nn.Linear(2, 2))


def test_pairs_of_one_source_are_not_random_pairs() -> None:
    batches = _batches(4)
    with pytest.raises(ValueError, match="two views of one source"):
        deformation_sensitivity(
            circular_net(), batches, strengths=[1.0], layers=["1"], groups={i: "p" for i in range(4)}
        )
    out = deformation_sensitivity(
        circular_net(), batches, strengths=[1.0], layers=["1"], groups={0: "a", 1: "b", 2: "c", 3: "c"}, bootstrap=50
    )
    assert out.pairs == 1 and out.same_source_pairs == 1  # (2, 3) shows one photo twice


def test_bootstrap_resamples_numerator_and_denominator_together() -> None:
    from zoo.eval.deformation import _bootstrap_ratio

    rng = np.random.default_rng(0)
    den = rng.uniform(0.1, 2.0, size=(20, 1))  # one pair each: its images' numerators are 0.5 x its denominator
    num = np.repeat(0.5 * den, 2, axis=0)[:, :, None]  # (40 images, 1 layer, 1 strength)
    low, high = _bootstrap_ratio(num, den, np.repeat(np.arange(20), 2), np.arange(20), 500, 0)
    assert low[0, 0] == pytest.approx(0.5) and high[0, 0] == pytest.approx(0.5)  # independent draws would be wide


def test_embedded_order_pairs_distinct_photos() -> None:
    from zoo.eval.data import EmbeddedSource, image_order

    source = EmbeddedSource()
    order = image_order(source, seed=0, limit=16)
    photos = [source.group(i) for i in order]
    assert all(photos[2 * j] != photos[2 * j + 1] for j in range(8)) and len(set(photos)) == 16
