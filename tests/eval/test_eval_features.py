"""Internal feature distance: known answers on circular networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_nets import Subsample, blur, circular_net

from zoo.eval.features import feature_distance, fourier_shift


def _batches() -> list:
    return [(torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), None)]


def test_stride_one_circular_net_has_zero_distance_everywhere() -> None:
    out = feature_distance(circular_net(), _batches(), layers=["1", "3"], shifts=4)
    assert out.n == 2 and out.shifts == [0, 1, 2, 3]
    for layer in ("1", "3"):
        heat = np.array(out.layers[layer].heatmap, dtype=float)
        assert out.layers[layer].stride == 1
        assert heat.shape == (4, 4) and np.nanmax(heat) < 1e-9


def _off_grid(net: torch.nn.Module) -> tuple[np.ndarray, dict]:
    out = feature_distance(net, _batches(), layers=["4"], shifts=4)
    v = out.layers["4"]
    return np.array(v.heatmap, dtype=float), v


def test_subsampling_breaks_equivariance_off_the_stride_grid_and_blur_reduces_it() -> None:
    heat, v = _off_grid(circular_net(Subsample()))
    assert v.stride == 2
    even = (np.arange(4)[:, None] % 2 == 0) & (np.arange(4)[None] % 2 == 0)
    assert heat[even].max() < 1e-9  # whole feature pixels: exact equivariance
    assert heat[~even].min() > 1e-3  # any odd shift: aliasing
    plain = v.extension.mean_off_grid
    blur2 = _off_grid(circular_net(blur(2)))[1].extension.mean_off_grid
    blur4 = _off_grid(circular_net(blur(4)))[1].extension.mean_off_grid
    assert blur4 < blur2 < plain


def test_skip_mode_leaves_fractional_shifts_out() -> None:
    out = feature_distance(circular_net(Subsample()), _batches(), layers=["4"], shifts=4, fractional="skip")
    heat = out.layers["4"].heatmap
    assert heat[1][0] is None and heat[0][1] is None and heat[2][2] == pytest.approx(0.0, abs=1e-9)


def test_fourier_shift_matches_roll_on_integers_and_composes() -> None:
    x = torch.randn(2, 8, 8, dtype=torch.float64)
    assert torch.allclose(fourier_shift(x, 3, -2), torch.roll(x, (3, -2), dims=(-2, -1)), atol=1e-10)
    half_twice = fourier_shift(fourier_shift(x, 0.5, 0), 0.5, 0)
    # two half shifts = one whole shift, except for the Nyquist row which a real half-shift cannot keep
    spectrum_err = (torch.fft.fft2(half_twice) - torch.fft.fft2(torch.roll(x, 1, dims=-2))).abs()
    spectrum_err[:, 4, :] = 0
    assert spectrum_err.max() < 1e-9


def test_zoo_model_default_layers_and_errors() -> None:
    import zoo

    model = zoo.create("resnet18_aa4", num_classes=4)
    out = feature_distance(model, [(torch.randn(1, 3, 64, 64), None)], shifts=2)
    assert [v.stride for v in out.layers.values()] == [2, 4, 8, 16, 32]
    with pytest.raises(ValueError, match="no module named 'nope'"):
        feature_distance(model, _batches(), layers=["nope"])
    with pytest.raises(ValueError, match="no feature_info"):
        feature_distance(circular_net(), _batches())
    with pytest.raises(ValueError, match="integer stride"):
        feature_distance(circular_net(Subsample()), [(torch.randn(1, 3, 15, 15), None)], layers=["4"], shifts=2)


class LowPassSubsample(torch.nn.Module):
    """An ideal FFT low-pass (|f| < 1/4 cycles/px) followed by stride-2 subsampling: the subsampled map is
    exactly band-limited, so an input shift by an odd number of pixels moves it by exactly half a sample."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None].abs()
        fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :].abs()
        keep = ((fy < 0.25) & (fx < 0.25)).to(torch.complex128)
        low = torch.fft.ifft2(torch.fft.fft2(x.double()) * keep).real
        return low[..., ::2, ::2]


def _low_pass_net() -> torch.nn.Sequential:
    return torch.nn.Sequential(LowPassSubsample(), torch.nn.Identity())


def test_off_grid_extension_is_zero_for_a_band_limited_network() -> None:
    batches = [(torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64), None)]
    out = feature_distance(_low_pass_net(), batches, layers=["1"], shifts=4)
    v = out.layers["1"]
    assert v.stride == 2 and v.mean < 1e-12  # on grid: exact
    assert v.extension.mean_off_grid < 1e-10  # off grid: the Fourier reference is exact here


def test_an_integer_roll_reference_fails_the_band_limited_check(monkeypatch: pytest.MonkeyPatch) -> None:
    import zoo.eval.features as features

    def integer_roll(x, dh, dw, spectrum=None):  # a stand-in that rounds the fractional shift
        return torch.roll(x, (round(dh), round(dw)), dims=(-2, -1))

    monkeypatch.setattr(features, "fourier_shift", integer_roll)
    batches = [(torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64), None)]
    out = features.feature_distance(_low_pass_net(), batches, layers=["1"], shifts=4)
    assert out.layers["1"].extension.mean_off_grid > 1e-3


def test_headline_is_the_on_grid_mean_and_every_layer_has_on_grid_cells() -> None:
    _heat, v = _off_grid(circular_net(Subsample()))
    assert v.mean < 1e-9 < v.extension.mean_off_grid  # Zhang's figure: exact equivariance on the grid
    import zoo

    model = zoo.create("resnet18", num_classes=4)
    out = feature_distance(model, [(torch.randn(1, 3, 64, 64), None)], shifts=2, on_grid=1)
    for name, layer in out.layers.items():
        assert layer.on_grid_cells >= 3 and layer.mean is not None, name  # stride 32 > shifts too
    assert [32, 32] in out.on_grid_shifts and [0, 32] in out.on_grid_shifts
    assert out.layers["layer4"].mean == pytest.approx(out.per_image["layer4"][0])


def test_a_layer_without_on_grid_shift_is_null_with_a_reason() -> None:
    net = circular_net(torch.nn.Sequential(Subsample(), Subsample()))
    out = feature_distance(net, _batches(), layers=["4"], shifts=2, on_grid=0)
    v = out.layers["4"]
    assert v.stride == 4 and v.mean is None and "no on-grid shift" in v.reason
