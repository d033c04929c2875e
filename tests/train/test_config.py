from __future__ import annotations

import pytest

from zoo.train.config import ConfigError, FinetuneConfig, config_keys, load_config, parse_override


def test_defaults_are_valid_and_keys_are_dotted():
    cfg = load_config()
    assert isinstance(cfg, FinetuneConfig)
    keys = config_keys()
    assert "optim.lr" in keys and "data.augment.shift" in keys and "train.epochs" in keys


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  name: resnet34_aa3\noptim:\n  lr: 0.2\ndata:\n  augment:\n    shift: 4\n")
    cfg = load_config(
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
    assert load_config(None, ["optim.lr=1e-4"]).optim.lr == 1e-4  # YAML 1.1 would read a string


def test_keyword_values():
    cfg = load_config(train__epochs=2, optim__name="adamw")
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
    ],
)
def test_bad_overrides_are_clear(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])


def test_unknown_key_in_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  momentun: 0.8\n")
    with pytest.raises(
        ConfigError, match=r"bad.yaml: unknown config key 'optim.momentun'; did you mean optim.momentum"
    ):
        load_config(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_parse_override_yaml_values():
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    assert parse_override("a=null") == ("a", None)
    assert parse_override("a=x=y") == ("a", "x=y")


def test_shipped_digits_config_loads():
    cfg = load_config("configs/finetune/digits.yaml")
    assert cfg.model.twin and cfg.model.name.endswith("_aa4")
    assert cfg.data.augment.shift == 0
