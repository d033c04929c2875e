"""Adding a metric is one module plus its registration: the toy ``class0`` metric of docs/contributing.md
runs through ``run_eval``, the report files and the paired comparison without any other change."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

from zoo.eval.registry import METRICS
from zoo.stats import wilson_interval


class Constant(nn.Module):
    """Predicts class ``k`` of 3 for every image."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(torch.full((x.shape[0],), self.k), 3).float()


@pytest.fixture
def toy_metric():
    import toy_metric as module  # registers "class0" on import

    METRICS[module.CLASS0.name] = module.CLASS0  # (again, if an earlier test removed it)
    yield module.CLASS0
    METRICS.pop(module.CLASS0.name)


def test_a_registered_metric_runs_reports_and_compares(tmp_path, toy_metric) -> None:
    from zoo.eval.runner import load_eval_config, run_eval

    config = load_eval_config(overrides={"metrics": ["class0"], "limit": 6, "resize": 32, "crop": 32, "shuffle": False})
    lines: list[str] = []
    models = {"zero": Constant(0), "one": Constant(1)}
    res = run_eval(models, config, out_dir=tmp_path, progress=False, log=lines.append)
    zero, one = res["models"]["zero"]["class0"], res["models"]["one"]["class0"]
    assert (zero.share, one.share, zero.n) == (100.0, 0.0, 6)
    # 0 of 6: the Wilson interval [0, z^2 / (6 + z^2)], not [0, 0]
    assert one.ci95 == pytest.approx([0.0, 100.0 * wilson_interval(0, 6)[1]])
    assert any(line.startswith("zero class0: class 0 on 100.0%") for line in lines)
    pair = res["comparison"]["one vs zero"]["class 0"]
    assert pair.test == "McNemar exact" and (pair.a_only, pair.b_only) == (6, 0)
    assert pair.p == pytest.approx(2 * 0.5**6)
    rows = list(csv.DictReader((tmp_path / "class0.csv").open()))
    assert [(r["model"], float(r["share"])) for r in rows] == [("zero", 100.0), ("one", 0.0)]
    assert (tmp_path / "class0.png").stat().st_size > 0
    assert "**class0**: class 0 on 0.0%" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["models"]["one"]["class0"]["share"] == 0.0


def test_an_unregistered_metric_is_a_clear_error() -> None:
    from zoo.eval.runner import load_eval_config

    with pytest.raises(ValueError, match="class0"):
        load_eval_config(overrides={"metrics": ["class0"]})


def test_register_keeps_the_shipped_order_and_puts_a_new_metric_last(toy_metric) -> None:
    import zoo.eval.runner  # noqa: F401  (imports every shipped metric module)
    from zoo.eval.registry import ORDER, register

    clean = METRICS.pop("clean")
    register(clean)  # registered last, listed first (zoo eval's metric list does not depend on import order)
    register(METRICS.pop(toy_metric.name))
    assert list(METRICS) == [*ORDER, "class0"]
