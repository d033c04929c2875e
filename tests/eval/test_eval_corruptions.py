"""ImageNet-C protocol: generated corruptions, CE / mCE normalisation, known answers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from eval_nets import BrightnessClassifier, MeanBins, circular_net

from zoo.eval._corrupt import COMMON, corrupt
from zoo.eval.corruptions import CorruptionResult, corruption_errors, normalise

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def _images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def test_identity_corruption_gives_the_clean_error() -> None:
    net = circular_net(classes=3)
    labels = torch.tensor([0, 1, 2, 0])
    out = corruption_errors(net, [(_images(), labels)], mean=MEAN, std=STD, corruptions=["identity"])
    assert out.reference == "label" and 0 < out.clean_error < 1  # a non-trivial clean error
    assert out.errors["identity"] == [out.clean_error] * 5


def test_model_against_itself_is_mce_100_and_constant_model_never_errs_unlabelled() -> None:
    net = MeanBins()
    names = ["brightness", "contrast"]
    res = corruption_errors(net, [(_images(), None)], mean=MEAN, std=STD, corruptions=names, severities=[3, 5])
    assert res.reference == "clean_prediction" and res.clean_error == 0.0
    by_model = {"a": res, "b": copy.deepcopy(res)}
    normalise(by_model, None)  # the first model is the reference
    for r in by_model.values():
        defined = [v for v in r.ce.values() if v is not None]
        assert defined and all(v == pytest.approx(100.0) for v in defined) and r.mce == pytest.approx(100.0)
    constant = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4))
    torch.nn.init.zeros_(constant[1].weight)
    out = corruption_errors(constant, [(_images(), None)], mean=MEAN, std=STD, corruptions=names)
    assert out.overall_error == 0.0


def _errors(fog: list[float], clean: float) -> CorruptionResult:
    """A corruption result with these fog errors (per severity) and clean error; the rest is filler."""
    return CorruptionResult(
        clean_error=clean, clean_error_ci95=[clean, clean], errors={"fog": fog}, mean_error={"fog": sum(fog) / 2},
        error_ci95={"fog": [0.0, 1.0]}, overall_error=sum(fog) / 2, overall_error_ci95=[0.0, 1.0],
        reference="label", n=1, n_eff=1, corruptions=["fog"], severities=[1, 2], per_image={"index": [0]},
    )  # fmt: skip


def test_ce_is_the_ratio_of_error_sums_and_relative_subtracts_clean() -> None:
    a = _errors([0.2, 0.4], 0.1)
    b = _errors([0.1, 0.2], 0.05)
    results = {"a": a, "b": b}
    normalise(results, "a")
    assert b.ce["fog"] == pytest.approx(100 * 0.3 / 0.6) and b.mce == pytest.approx(50.0)
    assert b.relative_ce["fog"] == pytest.approx(100 * (0.3 - 0.1) / (0.6 - 0.2))
    with pytest.raises(ValueError, match="only for the released ImageNet-C"):
        normalise(results, "alexnet_published")
    with pytest.raises(ValueError, match="not an evaluated model"):
        normalise(results, "c")


def test_corruptions_are_seeded_per_image_and_leave_numpy_alone() -> None:
    image = (np.random.default_rng(0).uniform(size=(40, 48, 3)) * 255).astype(np.uint8)
    state = np.random.get_state()
    for name in COMMON:
        out = corrupt(image, name, 2, seed=1, index=7)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert np.array_equal(out, corrupt(image, name, 2, seed=1, index=7)), name
    assert np.array_equal(np.random.get_state()[1], state[1])  # the global numpy state is restored
    assert not np.array_equal(
        corrupt(image, "gaussian_noise", 2, index=7), corrupt(image, "gaussian_noise", 2, index=8)
    )
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(image, "rain", 1)


def test_errors_need_unnormalised_images() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corruption_errors(BrightnessClassifier(), [(_images() - 2, None)], mean=MEAN, std=STD, corruptions=["fog"])


def test_reads_the_imagenet_c_folder_layout(tmp_path) -> None:
    from PIL import Image
    from torchvision import transforms

    from zoo.eval.corruptions import ALEXNET_ERRORS, imagenet_c_errors

    def write(folder, value: float) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8, 3), round(value * 255), dtype=np.uint8)).save(folder / "x.png")

    # BrightnessClassifier(4): class = brightness bin; class folders 0 and 1 (sorted = labels 0 and 1)
    write(tmp_path / "fog" / "1" / "0", 0.1)  # bin 0: right
    write(tmp_path / "fog" / "1" / "1", 0.9)  # bin 3: wrong
    write(tmp_path / "fog" / "2" / "0", 0.1)
    write(tmp_path / "fog" / "2" / "1", 0.3)  # bin 1: right
    clean = [(torch.stack([torch.full((3, 8, 8), 0.1), torch.full((3, 8, 8), 0.3)]), torch.tensor([0, 1]))]
    out = imagenet_c_errors(
        BrightnessClassifier(4), tmp_path, transforms.ToTensor(), corruptions=["fog"], severities=[1, 2],
        clean_batches=clean,
    )  # fmt: skip
    assert out.errors["fog"] == [0.5, 0.0] and out.clean_error == 0.0 and out.source == str(tmp_path)
    results = {"m": out}
    normalise(results, "alexnet_published")
    assert out.ce["fog"] == pytest.approx(100 * 0.25 / ALEXNET_ERRORS["fog"])
    with pytest.raises(FileNotFoundError, match="missing ImageNet-C folder"):
        imagenet_c_errors(BrightnessClassifier(4), tmp_path, transforms.ToTensor(), corruptions=["snow"])
