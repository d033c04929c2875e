"""zoo.config: the one pretrained-weights vocabulary (old spellings kept, with a message) and overrides."""

from __future__ import annotations

import pytest

from zoo import config as zoo_config
from zoo.config import PRETRAINED_POLICIES, ConfigError, parse_override, pretrained_policy
from zoo.train.config import load_finetune_config


@pytest.fixture(autouse=True)
def _fresh_messages(monkeypatch):
    monkeypatch.setattr(zoo_config, "_SAID", set())  # each test sees the once-per-process message


def test_policies_pass_unchanged_and_silently(capsys) -> None:
    for policy in PRETRAINED_POLICIES:
        assert pretrained_policy(policy) == policy
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(("old", "new"), [(True, "required"), (False, "none"), ("true", "required"), ("False", "none")])
def test_old_spellings_map_with_a_deprecation_message(capsys, old, new) -> None:
    assert pretrained_policy(old, "model.pretrained") == new
    err = capsys.readouterr().err
    assert "deprecated" in err and f"model.pretrained={new}" in err


def test_sources_only_where_allowed() -> None:
    assert pretrained_policy("hf-hub:org/repo", allow_source=True) == "hf-hub:org/repo"
    with pytest.raises(ConfigError, match="must be one of auto, required, none"):
        pretrained_policy("yes", "--pretrained")


def test_finetune_config_speaks_the_same_vocabulary(capsys) -> None:
    assert load_finetune_config(None, ["model.pretrained=false"]).model.pretrained is False  # kept; read as none
    assert "model.pretrained=none" in capsys.readouterr().err
    assert load_finetune_config(None, ["model.pretrained=required"]).model.pretrained == "required"


def test_eval_cli_accepts_the_old_finetune_spelling(capsys) -> None:
    import argparse

    from zoo.cli.eval import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["eval", "--pretrained", "false"])
    assert pretrained_policy(args.pretrained, "--pretrained") == "none"
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "--pretrained", "maybe"])


def test_parse_override_reads_yaml_values() -> None:
    assert parse_override("optim.lr=0.1") == ("optim.lr", 0.1)
    assert parse_override("features.layers=[a, b]") == ("features.layers", ["a", "b"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("epochs")


def test_eval_overrides_are_key_value_like_finetune_and_set_still_works(capsys) -> None:
    import argparse

    from zoo.cli.eval import _overrides, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    new = parser.parse_args(["eval", "features.shifts=4", "consistency.protocols=[crop]", "--limit", "3"])
    old = ["--set", "features.shifts=4", "--set", "consistency.protocols=[crop]", "--limit", "3"]
    old = parser.parse_args(["eval", *old])
    expected = {"features": {"shifts": 4}, "consistency": {"protocols": ["crop"]}, "limit": 3}
    assert _overrides(new) == expected and "deprecated" not in capsys.readouterr().err
    assert _overrides(old) == expected and "deprecated: --set KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(ValueError, match="must be KEY=VALUE"):
        _overrides(parser.parse_args(["eval", "--set", "features"]))
