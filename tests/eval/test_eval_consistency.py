"""Known-answer tests of shift_consistency / diagonal_shift_curve and of the Wilson interval."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_nets import BrightnessClassifier, circular_net

from zoo.eval import diagonal_shift_curve, shift_consistency
from zoo.eval.consistency import shift_offsets
from zoo.stats import wilson_interval


def _images(n: int, size: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_wilson_interval_known_values() -> None:
    # 8/10 successes: textbook Wilson score interval (z = 1.96) is (0.4902, 0.9433)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0 and wilson_interval(0, 10)[0] == 0.0
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_circular_net_is_fully_consistent_under_circular_shifts() -> None:
    net = circular_net()
    out = shift_consistency(net, [(_images(12), None)], protocol="circular", max_shift=8, seed=3)
    assert out.consistency == 100.0 and out.n == 12 and out.agree == 12
    assert out.ci95[1] == 100.0 and 70.0 < out.ci95[0] < 100.0
    assert "top1" not in out and "top1_rolled" not in out


def _brightness_images() -> torch.Tensor:
    """Images whose crop mean depends on the crop position: a bright square in a corner region."""
    gen = torch.Generator().manual_seed(5)
    images = torch.rand(40, 1, 12, 12, generator=gen) * 0.3
    images[:, :, :4, :4] += torch.rand(40, 1, 1, 1, generator=gen) * 3.0
    return images.expand(-1, 3, -1, -1).contiguous()


@pytest.mark.parametrize("protocol", ["crop", "circular"])
def test_brightness_model_consistency_matches_hand_computation(protocol: str) -> None:
    images, max_shift, bins = _brightness_images(), 4, 4
    expected_agree = 0
    for i, img in enumerate(images.numpy()):
        classes = []
        for dh, dw in shift_offsets(protocol, max_shift, 11, i):
            if protocol == "crop":
                view = img[:, dh : dh + 12 - max_shift, dw : dw + 12 - max_shift]
            else:
                view = img  # a circular shift keeps every pixel: same mean
            classes.append(int(np.argmin(np.abs(view.mean() - (np.arange(bins) + 0.5) / bins))))
        expected_agree += classes[0] == classes[1]
    if protocol == "circular":
        assert expected_agree == len(images)
    else:
        assert 0 < expected_agree < len(images)  # the set is built so that the crop protocol is not trivial
    for batch in (1, 7, 40):  # the figure does not depend on the batch size
        batches = [(images[k : k + batch], None) for k in range(0, len(images), batch)]
        out = shift_consistency(BrightnessClassifier(bins), batches, protocol=protocol, max_shift=max_shift, seed=11)
        assert out.agree == expected_agree
        assert out.consistency == pytest.approx(100.0 * expected_agree / len(images))
        low, high = wilson_interval(expected_agree, len(images))
        assert out.ci95 == pytest.approx([100 * low, 100 * high])


def test_offsets_are_seeded_per_image_and_in_range() -> None:
    a = np.stack([shift_offsets("crop", 32, 0, i) for i in range(300)])
    assert a.min() == 0 and a.max() == 32
    c = np.stack([shift_offsets("circular", 32, 0, i) for i in range(300)])
    assert c.min() == -32 and c.max() == 31
    assert (shift_offsets("crop", 32, 0, 5) == shift_offsets("crop", 32, 0, 5)).all()
    assert not all((shift_offsets("crop", 32, 1, i) == shift_offsets("crop", 32, 0, i)).all() for i in range(10))


def test_accuracy_from_labels() -> None:
    net = BrightnessClassifier(4)
    images = torch.full((6, 3, 16, 16), 0.6)  # mean 0.6 -> bin 2; second-nearest bin centre is 0.625 (bin 2)...
    labels = torch.tensor([2, 2, 2, 1, 3, 0])  # nearest bins: 2 (0.625), then 1 (0.375) / 3 (0.875)
    out = shift_consistency(net, [(images, labels)], protocol="crop", max_shift=4)
    assert out.top1_crops == pytest.approx(50.0)  # named for what it is: the accuracy of the shifted crops
    assert all(type(out[k]) is float for k in ("consistency", "top1_crops", "top5_crops"))  # plain, picklable
    assert out.top5_crops == pytest.approx(100.0)  # 4 classes: top-5 = all classes
    assert "top1" not in out
    rolled = shift_consistency(net, [(images, labels)], protocol="circular", max_shift=4)
    assert rolled.top1_rolled == pytest.approx(50.0) and "top1_crops" not in rolled


def test_errors_and_mode_restore() -> None:
    net = circular_net()
    net.train()
    shift_consistency(net, [(_images(2), None)], protocol="circular", max_shift=4)
    assert net.training
    with pytest.raises(ValueError, match="unknown protocol"):
        shift_consistency(net, [(_images(2), None)], protocol="diag")
    with pytest.raises(ValueError, match="max_shift"):
        shift_consistency(net, [(_images(2, size=16), None)], protocol="crop", max_shift=16)
    with pytest.raises(ValueError, match="labels must be class indices"):
        shift_consistency(net, [(_images(2), torch.tensor([0, 9]))], protocol="crop", max_shift=4)
    with pytest.raises(ValueError, match="float tensor"):
        shift_consistency(net, [(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), None)])


def test_diagonal_curve_of_invariant_model_is_flat() -> None:
    images = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    # a model of the crop mean: for a constant image every crop is identical
    flat = diagonal_shift_curve(BrightnessClassifier(4), [(torch.full((2, 3, 20, 20), 0.3), None)], max_shift=6)
    assert flat.shifts == list(range(7)) and flat.agree == [100.0] * 7
    assert max(flat.prob) - min(flat.prob) == 0.0
    labelled = diagonal_shift_curve(circular_net(), [(images, torch.tensor([0, 1, 2]))], max_shift=4)
    assert labelled.reference == "label" and labelled.n == 3 and len(labelled.prob) == 5
    assert all(lo <= p <= hi for p, lo, hi in zip(labelled.prob, *labelled.prob_ci95))


class BrightestRow(torch.nn.Module):
    """Class = which quarter of the rows holds the brightest pixel of channel 0 (position-dependent)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x[:, 0].amax(dim=2)  # (N, H)
        quarter = rows.argmax(dim=1) * 4 // x.shape[-2]
        return torch.nn.functional.one_hot(quarter, 4).float()


def test_circular_consistency_known_answer_needs_the_roll() -> None:
    images = _images(60, size=16, seed=2)
    expected = 0
    unrolled_agree = 0
    for i, img in enumerate(images):
        classes, plain = [], []
        for dh, dw in shift_offsets("circular", 8, 4, i):
            view = torch.roll(img, (int(dh), int(dw)), dims=(-2, -1))
            classes.append(int(BrightestRow()(view[None]).argmax()))
            plain.append(int(BrightestRow()(img[None]).argmax()))
        expected += classes[0] == classes[1]
        unrolled_agree += plain[0] == plain[1]
    assert unrolled_agree == 60 and 10 < expected < 50  # a stand-in that skips the roll would report 100%
    out = shift_consistency(BrightestRow(), [(images, None)], protocol="circular", max_shift=8, seed=4)
    assert out.agree == expected


class Corners(torch.nn.Module):
    """Logits from the crop's top-left, bottom-right and mean pixel: any wrong crop geometry changes them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 5 * torch.stack([x[:, 0, 0, 0], x[:, 1, -1, -1], x[:, 2].mean((1, 2))], dim=1)


def test_diagonal_curve_known_answer_checks_the_geometry() -> None:
    images = _images(3, size=20, seed=7)
    labels = torch.tensor([0, 1, 2])
    out = diagonal_shift_curve(Corners(), [(images, labels)], max_shift=6)
    h = 20 - 6
    expected = np.zeros((3, 7))
    for k, img in enumerate(images):
        for d in range(7):
            crop = img[:, d : d + h, d : d + h]  # the (d, d) crop of side H - max_shift
            expected[k, d] = float(Corners()(crop[None]).softmax(1)[0, labels[k]])
    assert np.allclose(out.prob, expected.mean(0), atol=1e-6)
    wrong = np.zeros((3, 7))  # e.g. crops at (d, 0): the curve must differ
    for k, img in enumerate(images):
        for d in range(7):
            wrong[k, d] = float(Corners()(img[None, :, d : d + h, 0:h]).softmax(1)[0, labels[k]])
    assert not np.allclose(out.prob, wrong.mean(0), atol=1e-3)


class OffsetRecorder(torch.nn.Module):
    """Logits that encode nothing; records the crop offsets from pixel values (channel 0 = row, 1 = col)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += [(int(a), int(b)) for a, b in zip(x[:, 0, 0, 0], x[:, 1, 0, 0])]
        return torch.zeros(x.shape[0], 3)


def test_official_procedure_offsets_per_batch_in_0_to_31_and_five_passes() -> None:
    ys, xs = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    image = torch.stack([ys, xs, torch.zeros_like(ys)])
    batches = [(image.expand(4, -1, -1, -1).clone(), None, torch.arange(4) + 4 * b) for b in range(3)]
    rec = OffsetRecorder()
    out = shift_consistency(rec, batches, protocol="crop", max_shift=32, procedure="official", seed=1)
    assert out.procedure == "official" and out.passes == 5 and out.n == 12
    assert len(rec.seen) == 5 * 3 * 2 * 4  # passes x batches x 2 views x images
    assert max(max(o) for o in rec.seen) <= 31 and min(min(o) for o in rec.seen) >= 0
    for call in range(0, len(rec.seen), 4):  # one offset pair per batch: all 4 images share it
        assert len(set(rec.seen[call : call + 4])) == 1
    assert out.consistency == 100.0  # constant logits always agree
    with pytest.raises(ValueError, match="crop protocol of the release"):
        shift_consistency(rec, batches, protocol="circular", procedure="official")


def test_clean_accuracy_on_the_unshifted_image() -> None:
    from zoo.eval.clean import clean_accuracy

    net = BrightnessClassifier(4)
    images = torch.stack([torch.full((3, 8, 8), v) for v in (0.1, 0.3, 0.6, 0.9, 0.9)])
    labels = torch.tensor([0, 1, 2, 3, 0])  # the last is wrong (bin 3); its top-5 (all 4 classes) is right
    out = clean_accuracy(net, [(images, labels)])
    assert out.top1 == pytest.approx(80.0) and out.top5 == pytest.approx(100.0)
    assert out.top1_ci95[0] < 80.0 < out.top1_ci95[1] and out.n == 5
    unlabelled = clean_accuracy(net, [(images, None)])
    assert unlabelled.top1 is None and "no labels" in unlabelled.reason
