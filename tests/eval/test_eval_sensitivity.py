"""Azulay & Weiss 1-pixel sensitivity: frames geometry and known answers."""

from __future__ import annotations

import pytest
import torch
from eval_nets import circular_net

from zoo.eval.sensitivity import FrameSpec, frame_sensitivity, inpaint_background, make_frames, shift_sensitivity


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
        assert out.p_change == 0.0 and out.mac == 0.0 and out.pairs == 6


def test_frames_move_by_one_pixel() -> None:
    image = torch.rand(3, 20, 20)
    crop = make_frames(image, FrameSpec("crop", 4, canvas=16))
    assert crop.shape == (4, 3, 16, 16) and torch.equal(crop[1][:, :-1, :-1], crop[0][:, 1:, 1:])
    black = make_frames(image, FrameSpec("black", 4, canvas=20, embed_size=10), (0.0, 0.0, 0.0))
    assert torch.equal(black[1], torch.roll(black[0], (1, 1), dims=(-2, -1)))  # moved on a black canvas
    scale = make_frames(image, FrameSpec("scale", 3, canvas=20, embed_size=10), (-1.0, -1.0, -1.0))
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
        make_frames(torch.rand(3, 16, 16), FrameSpec("black", 8, embed_size=12))
    with pytest.raises(ValueError, match="unknown protocol"):
        FrameSpec("zoom", 4)


def test_no_change_at_all_still_has_an_upper_bound() -> None:
    images = torch.full((4, 3, 32, 32), -0.4)
    out = shift_sensitivity(circular_net(), [(images, None)], protocol="crop", frames=6, canvas=24)
    assert out.p_change == 0.0 and out.p_change_ci95[0] == 0.0
    assert out.p_change_ci95[1] > 0.1  # Wilson on the 20 pooled pairs, not a [0, 0] interval


def test_black_mean_canvas_is_zero_in_normalised_space() -> None:
    image = torch.randn(3, 32, 32)
    frames = make_frames(image, FrameSpec("black_mean", 3, canvas=32, embed_size=16), (-2.0, -2.0, -2.0))
    assert frames[0, :, 0, 0].abs().max() == 0.0 and frames[0, :, -1, -1].abs().max() == 0.0
    black = make_frames(image, FrameSpec("black", 3, canvas=32, embed_size=16), (-2.0, -2.0, -2.0))
    assert (black[0, :, 0, 0] == -2.0).all()


def test_inpainting_fills_the_whole_canvas_from_the_border() -> None:
    canvas = torch.zeros(3, 128, 128)
    known = torch.zeros(1, 128, 128, dtype=torch.bool)
    canvas[0, 48:80, 48:64] = 1.0  # left half of the pasted image red
    canvas[2, 48:80, 64:80] = 1.0  # right half blue
    known[:, 48:80, 48:80] = True
    fill = inpaint_background(canvas, known, iterations=20)
    left, right = fill[:, 64, 0], fill[:, 64, -1]  # far corners of the canvas, 48 px from the image
    assert left[0] > 0.8 and left[2] < 0.2  # the red border reaches the left edge
    assert right[2] > 0.8 and right[0] < 0.2


def test_bad_settings_fail_before_any_image_is_read() -> None:
    def batches():
        raise AssertionError("the settings must be checked before the data is read")
        yield

    with pytest.raises(ValueError, match="need at least 2 frames"):
        shift_sensitivity(torch.nn.Identity(), batches(), protocol="crop", frames=1)
