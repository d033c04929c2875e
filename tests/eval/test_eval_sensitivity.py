"""Azulay & Weiss 1-pixel sensitivity: frames geometry and known answers."""

from __future__ import annotations

import pytest
import torch
from eval_nets import circular_net

from zoo.eval.sensitivity import frame_sensitivity, inpaint_background, make_frames, shift_sensitivity


def test_identical_frames_never_change() -> None:
    frame = torch.randn(1, 3, 16, 16)
    assert frame_sensitivity(circular_net(), frame.expand(6, -1, -1, -1)) == (0.0, 0.0)


def test_constant_image_gives_zero_sensitivity_for_every_protocol() -> None:
    images = torch.full((2, 3, 32, 32), -0.4)  # the same value as the background, so every frame is identical
    for protocol in ("crop", "black", "inpaint", "scale"):
        out = shift_sensitivity(
            circular_net(),
            [(images, None)],
            protocol=protocol,
            frames=4,
            canvas=24,
            embed_size=12,
            mean=(0.4, 0.4, 0.4),
            std=(1.0, 1.0, 1.0),
        )
        assert out["p_change"] == 0.0 and out["mac"] == 0.0 and out["pairs"] == 6


def test_frames_move_by_one_pixel() -> None:
    image = torch.rand(3, 20, 20)
    crop = make_frames(image, "crop", 4, canvas=16)
    assert crop.shape == (4, 3, 16, 16) and torch.equal(crop[1][:, :-1, :-1], crop[0][:, 1:, 1:])
    black = make_frames(image, "black", 4, canvas=20, embed_size=10, background=(0.0, 0.0, 0.0))
    assert torch.equal(black[1], torch.roll(black[0], (1, 1), dims=(-2, -1)))  # moved on a black canvas
    scale = make_frames(image, "scale", 3, canvas=20, embed_size=10, background=(-1.0, -1.0, -1.0))
    sizes = [int((f[0] != -1.0).any(0).sum()) for f in scale]
    assert sizes == [10, 11, 12]


def test_inpaint_keeps_known_pixels_and_fills_the_rest() -> None:
    canvas = torch.zeros(1, 12, 12)
    known = torch.zeros(1, 12, 12, dtype=torch.bool)
    canvas[:, 4:8, 4:8], known[:, 4:8, 4:8] = 1.0, True
    filled = inpaint_background(canvas, known, iterations=20)
    assert torch.equal(filled[known], canvas[known])
    assert filled[~known].min() > 0.5  # the border colour (1.0) has spread, nothing is left black


def test_bad_geometry_is_reported() -> None:
    with pytest.raises(ValueError, match="valid embed sizes"):
        make_frames(torch.rand(3, 16, 16), "black", 8, embed_size=12)
    with pytest.raises(ValueError, match="unknown protocol"):
        make_frames(torch.rand(3, 16, 16), "zoom", 4)
