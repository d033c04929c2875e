"""The segmentation training step: it learns a pointwise task, and refuses mismatched sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.train.segmentation import segmentation_loss, train_segmentation


def test_loss_decreases_on_a_pointwise_task() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 3, 8, 8)
    y = (x[:, 0] > 0).long()
    model = nn.Conv2d(3, 2, 1)
    losses = train_segmentation(model, x, y, epochs=5, batch_size=16, lr=0.1, progress=False)
    assert losses[-1] < 0.5 * losses[0]


def test_size_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="differ in size"):
        segmentation_loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 3, 4, dtype=torch.long))


# ------------------------------------------------------------------ zoo finetune with task: segmentation

TINY_SEG = ["limit_train=8", "limit_eval=4", "image_size=32", "decoder_channels=16", "batch_size=4",
            "segmentation.shifts=1", "output.progress=false", "output.plots=false"]  # fmt: skip
SEG_CONFIG = "configs/finetune/digits_segmentation.yaml"


def _weights(run_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model.safetensors"))


def test_finetune_segmentation_resume_matches_an_uninterrupted_run(tmp_path) -> None:
    import json

    from zoo.eval.segmentation_task import load_checkpoint
    from zoo.train.run import finetune

    torch.set_num_threads(1)
    full = finetune(SEG_CONFIG, [*TINY_SEG, "epochs=2", f"output.dir={tmp_path / 'a'}"])
    name = "unet_resnet18_aa4"
    assert set(full.report["models"]) == {name}
    saved = json.loads((full.root / "results.json").read_text())
    assert 0.0 <= saved["models"][name]["miou"] <= 1.0 and (full.root / "results.md").is_file()
    first = finetune(SEG_CONFIG, [*TINY_SEG, "epochs=1", f"output.dir={tmp_path / 'b'}"])
    resumed = finetune(
        SEG_CONFIG, [*TINY_SEG, "epochs=2", f"output.dir={tmp_path / 'b'}", f"train.resume={first.root}"]
    )
    assert resumed.root == first.root
    a, b = _weights(full.root / name), _weights(first.root / name)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((first.root / name / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert resumed.report["models"][name]["miou"] == full.report["models"][name]["miou"]
    model = load_checkpoint(name, first.root / name)  # the checkpoint reloads to the trained weights
    assert all(torch.equal(v, a[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"has trained every model for train\.epochs=2"):
        finetune(SEG_CONFIG, [*TINY_SEG, "epochs=2", f"train.resume={first.root}"])


def test_finetune_segmentation_on_a_folder(tmp_path) -> None:
    from support.seg_fixtures import make_seg_folder

    from zoo.train.run import finetune

    torch.set_num_threads(1)
    data = make_seg_folder(tmp_path / "data", count=8, classes=3)
    over = [*TINY_SEG, "epochs=1", "data.source=imagefolder", f"data.path={data}", f"output.dir={tmp_path / 'r'}"]
    result = finetune(SEG_CONFIG, over)
    assert result.report["num_classes"] == 3 and result.report["models"]["unet_resnet18_aa4"]["n"] == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.name=resnet18_aa4", "task=segmentation trains unet_\\* models"),
        ("data.source=hf", "task=segmentation reads data.source=digits or imagefolder"),
        ("segmentation.num_classes=4", "the pasted digits have 11"),
        ("train.seeds=2", "one seed per model"),
    ],
)
def test_finetune_segmentation_bad_input(tmp_path, override: str, message: str) -> None:
    from zoo.train.run import finetune

    extra = ["data.hf_name=x"] if override == "data.source=hf" else []
    with pytest.raises(ValueError, match=message):
        finetune(SEG_CONFIG, [*TINY_SEG, override, *extra, f"output.dir={tmp_path}"])
    assert not any(tmp_path.iterdir())  # nothing written


def test_twin_of_a_unet_is_the_unet_on_the_baseline_encoder() -> None:
    from zoo.train.config import load_finetune_config
    from zoo.train.segmentation import model_names

    cfg = load_finetune_config(SEG_CONFIG, ["model.twin=true"])
    assert model_names(cfg) == ["unet_resnet18_aa4", "unet_resnet18"]
    cfg.model.name = "unet_resnet18"
    with pytest.raises(ValueError, match="needs an anti-aliased model"):
        model_names(cfg)
