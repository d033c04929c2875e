"""ImageNet-P protocol: flip probability, top-5 distance, mFR normalisation, known answers."""

from __future__ import annotations

import copy

import pytest
import torch
from eval_nets import MeanBins

import zoo.eval.flip as flip
from zoo.eval.flip import PERTURBATIONS, flip_rates, make_sequence, normalise, top5_distance

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _images(n: int = 3, size: int = 40) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(5))


class Constant(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.arange(10.0).expand(x.shape[0], -1)


def test_constant_classifier_never_flips() -> None:
    out = flip_rates(Constant(), [(_images(), None)], mean=MEAN, std=STD, frames=5, size=32)
    assert all(v == 0.0 for v in out.fp.values()) and all(v == 0.0 for v in out.t5d.values())
    assert all(out.fp_ci95[k][1] > 0 for k in PERTURBATIONS)  # never a [0, 0] interval


def test_model_against_itself_is_mfr_100() -> None:
    res = flip_rates(MeanBins(), [(_images(4), None)], mean=MEAN, std=STD, frames=6, size=32)
    assert sum(v > 0 for v in res.fp.values()) >= 3  # flips on several types: FR is defined there
    by_model = {"a": res, "b": copy.deepcopy(res)}
    normalise(by_model, "a")
    for r in by_model.values():
        assert r.mfr == pytest.approx(100.0) and r.mt5d == pytest.approx(100.0)
    with pytest.raises(ValueError, match="not an evaluated model"):
        normalise(by_model, "zzz")


class Parity(torch.nn.Module):
    """Class = parity of the frame number written in the pixels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.mean((1, 2, 3)).round().long() % 2
        return torch.nn.functional.one_hot(t, 6).float()


def test_noise_types_compare_with_the_first_frame_others_with_the_previous(monkeypatch: pytest.MonkeyPatch) -> None:
    def numbered(image, kind, frames, size, rng):  # frame t is the constant t (normalised back by the metric)
        return torch.stack([torch.full((3, size, size), t * STD[0] + MEAN[0]) for t in range(frames)])

    monkeypatch.setattr(flip, "make_sequence", numbered)
    out = flip_rates(Parity(), [(_images(1), None)], mean=MEAN, std=STD, frames=5, size=8)
    assert out.comparison["gaussian_noise"] == "first" and out.comparison["translate"] == "consecutive"
    assert out.fp["gaussian_noise"] == pytest.approx(0.5)  # frames 1, 3 differ from frame 0; 2, 4 do not
    assert out.fp["translate"] == pytest.approx(1.0)  # every consecutive pair differs


def test_top5_distance_known_values() -> None:
    a = torch.tensor([9.0, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    assert top5_distance(a, a) == 0.0
    swapped = a.clone()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert top5_distance(a, swapped) == 2.0  # |0 - 1| + |1 - 0|
    dropped = a.clone()
    dropped[0] = -1.0  # the top class falls to the last rank: |0 - 5| + |1-0| + |2-1| + |3-2| + |4-3|
    assert top5_distance(a, dropped) == 9.0


def test_translation_moves_one_pixel_per_frame() -> None:
    import numpy as np

    image = _images(1, 20)[0]
    seq = make_sequence(image, "translate", 5, 16, np.random.default_rng(0))
    assert seq.shape == (5, 3, 16, 16)
    for t in range(4):
        a, b = seq[t], seq[t + 1]
        moved = [
            torch.equal(a[:, :, 1:], b[:, :, :-1]),
            torch.equal(a[:, :, :-1], b[:, :, 1:]),
            torch.equal(a[:, 1:], b[:, :-1]),
            torch.equal(a[:, :-1], b[:, 1:]),
        ]
        assert sum(moved) == 1
    for kind in PERTURBATIONS:
        frames = make_sequence(image, kind, 4, 16, np.random.default_rng(1))
        assert frames.shape == (4, 3, 16, 16) and float(frames.min()) >= 0 and float(frames.max()) <= 1
