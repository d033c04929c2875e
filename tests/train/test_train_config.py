from __future__ import annotations

import re

import pytest

from zoo.train.config import ConfigError, FinetuneConfig, config_keys, load_finetune_config, parse_override


def test_defaults_are_valid_and_keys_are_dotted():
    cfg = load_finetune_config()
    assert isinstance(cfg, FinetuneConfig)
    keys = config_keys()
    assert "optim.lr" in keys and "data.augment.shift" in keys and "train.epochs" in keys


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  name: resnet34_aa3\noptim:\n  lr: 0.2\ndata:\n  augment:\n    shift: 4\n")
    cfg = load_finetune_config(
        path, ["optim.lr=0.01", "epochs=7", "model.pretrained=false", "data.mean=[0.5, 0.5, 0.5]", "data.std=[1,1,1]"]
    )
    assert cfg.model.name == "resnet34_aa3"
    assert cfg.optim.lr == 0.01  # override beats the file
    assert cfg.train.epochs == 7  # bare key unique across sections
    assert cfg.data.augment.shift == 4
    assert cfg.model.pretrained is False
    assert cfg.data.mean == [0.5, 0.5, 0.5]
    assert cfg.output.name == "run"  # run folder named after the config file


def test_float_in_exponent_form():
    assert load_finetune_config(None, ["optim.lr=1e-4"]).optim.lr == 1e-4  # YAML 1.1 would read a string


def test_keyword_values():
    cfg = load_finetune_config(train__epochs=2, optim__name="adamw")
    assert (cfg.train.epochs, cfg.optim.name) == (2, "adamw")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=0.1", "did you mean optim.lr"),
        ("trian.epochs=3", "did you mean train.epochs"),
        ("learning_rate=1", "unknown config key 'learning_rate'"),
        ("seed=1", "ambiguous"),
        ("train.epochs=three", "train.epochs must be an integer"),
        ("train.epochs=0", "train.epochs must be an integer >= 1"),
        ("optim.name=adam", "optim.name must be one of sgd, adamw"),
        ("model.mode=probe", "model.mode must be one of full, linear_probe"),
        ("data.eval_fraction=1.5", "data.eval_fraction must be in (0, 1)"),
        ("epochs", "must look like key=value"),
        ("data.source=imagefolder", "needs data.path"),
        # numbers that make no sense (NaN passed `lr <= 0`; the others were not checked at all)
        ("optim.lr=.nan", "optim.lr must be a finite number, got nan"),
        ("optim.lr=nan", "optim.lr must be a finite number, got nan"),
        ("optim.lr=-0.1", "optim.lr must be > 0, got -0.1"),
        ("optim.lr=inf", "optim.lr must be a finite number"),
        ("optim.momentum=1.5", "optim.momentum must be in [0, 1), got 1.5"),
        ("optim.weight_decay=-1", "optim.weight_decay must be >= 0"),
        ("optim.min_lr=1", "optim.min_lr must be in [0, 0.05]"),
        ("optim.warmup_start_factor=0", "optim.warmup_start_factor must be in (0, 1]"),
        ("optim.grad_clip=-1", "optim.grad_clip must be > 0"),
        ("optim.betas=[0.9]", "optim.betas must be two numbers in [0, 1)"),
        ("model.drop_rate=1.0", "model.drop_rate must be in [0, 1), got 1.0"),
        ("data.val_fraction=0", "data.val_fraction must be in (0, 1)"),
        ("data.augment.rrc_scale_min=0", "data.augment.rrc_scale_min must be in (0, 1]"),
        ("data.augment.color_jitter=-0.5", "data.augment.color_jitter must be >= 0"),
        ("train.seeds=0", "train.seeds must be an integer >= 1"),
    ],
)
def test_bad_overrides_are_clear(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_finetune_config(None, [override])


def test_std_and_mean_are_finite_and_std_positive():
    with pytest.raises(ConfigError, match=r"data.std values must be > 0"):
        load_finetune_config(None, ["data.mean=[0.5, 0.5, 0.5]", "data.std=[1, 0, 1]"])
    with pytest.raises(ConfigError, match=r"data.mean must be a finite number"):
        load_finetune_config(None, ["data.mean=[0.5, .nan, 0.5]", "data.std=[1, 1, 1]"])


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  momentun: 0.8\n")
    with pytest.raises(
        ConfigError, match=r"bad.yaml: unknown config key 'optim.momentun'; did you mean optim.momentum"
    ):
        load_finetune_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_finetune_config(tmp_path / "nope.yaml")


def test_parse_override_yaml_values():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a=null") == ("a", None)
    assert parse_override("a=x=y") == ("a", "x=y")


def test_shipped_digits_config_loads():
    cfg = load_finetune_config("configs/finetune/digits.yaml")
    assert cfg.model.twin and cfg.model.name.endswith("_aa4")
    assert cfg.data.augment.shift == 0
    assert cfg.train.seeds == 3 and not cfg.model.allow_init_mismatch
