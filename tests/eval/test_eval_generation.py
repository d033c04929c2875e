"""Generation stability: exact equivariance and a worked-out error."""

from __future__ import annotations

import math

import pytest
import torch
from eval_nets import PositionalBias

from zoo.eval._seeding import image_rng
from zoo.eval.generation import generation_stability


def test_circular_conv_generator_is_exactly_stable() -> None:
    torch.manual_seed(0)
    gen = torch.nn.Conv2d(3, 3, 1)  # 1x1 conv: pointwise, so shifts commute exactly
    out = generation_stability(gen, [(torch.rand(4, 3, 12, 12), None)], max_shift=4)
    assert out.mse == 0.0 and out.exact == 4 and math.isinf(out.psnr)


def test_positional_bias_error_is_the_bias_difference() -> None:
    bias = torch.linspace(0, 1, 8 * 8).reshape(1, 1, 8, 8).expand(1, 3, 8, 8).clone()[0]
    images = torch.rand(3, 3, 8, 8)
    out = generation_stability(PositionalBias(bias), [(images, None)], max_shift=3, seed=4)
    expected = []
    for i in range(3):  # roll(x + b) - (roll(x) + b) = roll(b) - b
        dh, dw = (int(v) for v in image_rng(4, "generation", i).integers(-3, 3, 2))
        expected.append(float((torch.roll(bias, (dh, dw), dims=(-2, -1)) - bias).double().pow(2).mean()))
    mse = sum(expected) / 3
    assert out.mse == pytest.approx(mse, rel=1e-6)
    assert out.psnr == pytest.approx(10 * math.log10(1.0 / mse), rel=1e-6)


class RangeProbe(torch.nn.Module):
    """Identity plus a fixed pattern; records the range of the inputs it was given."""

    def __init__(self, bias: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("bias", bias)
        self.low, self.high = math.inf, -math.inf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.low, self.high = min(self.low, float(x.min())), max(self.high, float(x.max()))
        return x + self.bias


def test_generators_get_minus_one_one_inputs_and_data_range_two_by_default() -> None:
    from zoo.eval.generation import generator_range
    from zoo.eval.runner import EvalModel, load_eval_config, run_eval

    config = load_eval_config(overrides={"metrics": ["generation"], "limit": 2, "generation": {"size": 32}})
    assert generator_range(config["generation"]) == (-1.0, 1.0, 2.0)
    bias = torch.linspace(0, 0.5, 32 * 32).reshape(1, 32, 32).expand(3, 32, 32).clone()
    probe = RangeProbe(bias)
    res = run_eval([EvalModel("probe", probe, kind="generator")], config, progress=False, log=lambda _m: None)
    out = res["models"]["probe"]["generation"]
    assert probe.low < -0.5 and probe.high <= 1.0 + 1e-6 and probe.low >= -1.0 - 1e-6  # inputs in [-1, 1]
    assert out.data_range == 2.0 and out.input_range == [-1.0, 1.0]
    assert out.psnr == pytest.approx(10 * math.log10(4.0 / out.mse), rel=1e-9)
    with pytest.raises(ValueError, match="input_range"):
        generator_range({"input_range": [1, 0], "data_range": None})
