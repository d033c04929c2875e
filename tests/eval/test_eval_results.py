"""Typed result records: ``to_dict()`` is what ``results.json`` holds, and records still read as mappings."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
from eval_nets import circular_net, pointwise_generator
from PIL import Image

from zoo.eval.consistency import ConsistencyResult
from zoo.eval.data import FolderSource
from zoo.eval.results import OPTIONAL, Result, optional_with
from zoo.eval.runner import EvalModel, load_eval_config, run_eval
from zoo.io import jsonable


@dataclass(kw_only=True)
class Inner(Result):
    value: float


@dataclass(kw_only=True)
class Outer(Result):
    n: int
    maybe: float | None  # always present, even when None
    layers: dict[str, Inner]
    extra: str | None = field(default=None, metadata=OPTIONAL)
    reference: str | None = field(default=None, metadata=OPTIONAL)
    score: float | None = field(default=None, metadata=optional_with("reference"))


def _outer() -> Outer:
    return Outer(n=3, maybe=None, layers={"a": Inner(value=math.nan), "b": Inner(value=1.0)})


def test_to_dict_drops_unset_optional_fields_and_converts_nested_records() -> None:
    r = _outer()
    d = r.to_dict()
    assert list(d) == ["n", "maybe", "layers"] and d["maybe"] is None
    assert type(d["layers"]["b"]) is dict and d["layers"]["b"] == {"value": 1.0}
    r.extra = "note"
    assert list(r.to_dict()) == ["n", "maybe", "layers", "extra"]
    r.reference = "m"  # a score that belongs to the reference is present once it is set, even as None
    assert list(r.to_dict())[-2:] == ["reference", "score"] and r.to_dict()["score"] is None
    assert jsonable(r) == jsonable(r.to_dict()) and jsonable(r)["layers"]["a"]["value"] is None  # NaN -> null
    assert json.loads(json.dumps(jsonable({"models": {"x": r}}), allow_nan=False))["models"]["x"]["n"] == 3


def test_records_read_as_read_only_mappings() -> None:
    r = _outer()
    assert r["n"] == 3 and r["layers"]["b"]["value"] == 1.0 and r.get("extra") is None
    assert "n" in r and "extra" not in r and "score" not in r and "nope" not in r
    assert list(r.keys()) == ["n", "maybe", "layers"] and len(r) == 3
    assert dict(r.items())["layers"] is r.layers
    with pytest.raises(KeyError, match="Outer has no 'extra'; present: n, maybe, layers"):
        r["extra"]
    with pytest.raises(TypeError):
        r["n"] = 4  # type: ignore[index]


def _check_record(record: Result, stored: dict, where: str) -> None:
    """``stored`` (from ``results.json``) has exactly the record's present fields: every declared field
    that is not optional, and the optional ones that are set; nested records alike."""
    present = []
    for f in dataclasses.fields(record):
        when = f.metadata.get("zoo.eval.present_when", False)  # False: not optional; None: its own value
        if when is False or getattr(record, when or f.name) is not None:
            present.append(f.name)
    assert list(stored) == present == list(record.to_dict()), where
    for name in present:
        value = getattr(record, name)
        if isinstance(value, Result):
            _check_record(value, stored[name], f"{where}.{name}")
        elif isinstance(value, dict) and value and all(isinstance(v, Result) for v in value.values()):
            for k, v in value.items():
                _check_record(v, stored[name][k], f"{where}.{name}[{k}]")


def test_results_json_holds_each_records_fields(tmp_path) -> None:
    over = {
        "metrics": ["clean", "consistency", "diagonal", "features", "sensitivity", "deformation", "smoothness"],
        "limit": 2,
        "resize": 40,
        "crop": 40,
        "consistency": {"max_shift": 8},
        "diagonal": {"max_shift": 2},
        "features": {"size": 16, "shifts": 2, "layers": ["1", "3"]},
        "sensitivity": {"protocols": ["crop", "black"], "frames": 2, "canvas": 32, "embed_sizes": [16]},
        "deformation": {"size": 16, "strengths": [1.0], "bootstrap": 10, "layers": ["1"]},
        "flip": {"size": 16, "frames": 2, "perturbations": ["translate", "brightness"]},
        "corruptions": {"corruptions": ["fog"], "severities": [1], "size": 32},
        "generation": {"size": 16},
        "compare": {"bootstrap": 20},
    }
    over["metrics"] += ["flip", "corruptions", "generation"]
    models = [EvalModel("a", circular_net(seed=0)), EvalModel("b", circular_net(seed=1))]
    models.append(EvalModel("g", pointwise_generator(), kind="generator"))
    res = run_eval(models, load_eval_config(overrides=over), out_dir=tmp_path, progress=False, log=lambda _m: None)
    stored = json.loads((tmp_path / "results.json").read_text())
    checked = 0
    for model, entry in res["models"].items():
        for name, value in entry.items():
            if name in ("weights", "kind"):
                continue
            records = value if not isinstance(value, Result) else {"": value}
            for key, record in records.items():
                assert isinstance(record, Result), (model, name, key)
                _check_record(record, stored["models"][model][name][key] if key else stored["models"][model][name],
                              f"{model}.{name}{key}")  # fmt: skip
                checked += 1
    assert checked == 2 * 11 + 1  # 9 metrics per classifier (consistency: 2 protocols, sensitivity: 2 settings)
    for pair in res["comparison"].values():
        for label, comparison in pair.items():
            _check_record(comparison, stored["comparison"]["b vs a"][label], label)
    crop = res["models"]["a"]["consistency"]["crop"]
    assert isinstance(crop, ConsistencyResult) and "top1_crops" not in stored["models"]["a"]["consistency"]["crop"]
    assert "reference_model" in stored["models"]["b"]["flip"] and "mfr" in stored["models"]["b"]["flip"]


def test_labelled_consistency_csv_has_each_protocols_view_accuracy(tmp_path) -> None:
    """Labelled crop and circular rows carry different optional columns (top1_crops / top1_rolled)."""
    rng = np.random.default_rng(0)
    for label in ("c0", "c1"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(2):
            image = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / "data" / label / f"{i}.png")
    net = circular_net(classes=2)
    net.num_classes = 2  # labels are used when the class counts match
    over = {"metrics": ["consistency"], "resize": 40, "crop": 40, "consistency": {"max_shift": 8}}
    run_eval([EvalModel("a", net)], load_eval_config(overrides=over), source=FolderSource(tmp_path / "data"),
             out_dir=tmp_path / "out", progress=False, log=lambda _m: None)  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "out" / "consistency.csv").open()))
    assert [r["protocol"] for r in rows] == ["crop", "circular"]
    assert rows[0]["top1_crops"] != "" and rows[0]["top1_rolled"] == ""
    assert rows[1]["top1_rolled"] != "" and rows[1]["top1_crops"] == ""
