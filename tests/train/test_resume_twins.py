"""Interrupted twin runs, with real processes and real signals: Ctrl-C prints one line, and
``train.resume`` continues each model from its own state to the table of an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from slow_checkpoint import SLOW_RUN, TEST_DELAY_ENV
from test_processes import _env, _wait_for_line

from zoo.train import finetune
from zoo.train.checkpoint import load_train_state

TWIN = ("model.twin=true", "train.epochs=2")


def _comparison(root):
    """The comparison of a run without its wall-clock figures (what must match an uninterrupted run)."""
    data = json.loads((root / "comparison.json").read_text())
    models = [{k: v for k, v in row.items() if k != "train time (s)"} for row in data["models"]]
    tests = {(r["name"], r["seed"]): r["test"] for r in data["runs"]}
    return models, data["paired"], tests


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    from train_testlib import tiny

    out = tmp_path_factory.mktemp("straight")
    return _comparison(finetune(None, tiny(out, *TWIN)).root)


def _interruptible() -> None:
    """In the child: Ctrl-C's default action, even when this suite runs with SIGINT ignored (a background job
    of a shell without job control): Python turns SIGINT into KeyboardInterrupt only if it is not ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(tmp_path, args, model, sig):
    """Run ``zoo finetune args`` in a process; send ``sig`` while it writes ``model``'s epoch-2 checkpoint.

    Returns (return code, stderr lines other than the test hook's).
    """
    with open(tmp_path / "stdout.txt", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SLOW_RUN, "finetune", *args],
            stdout=out, stderr=subprocess.PIPE, text=True, env=_env(**{TEST_DELAY_ENV: f"2:120:{model}"}),
            preexec_fn=_interruptible,
        )  # fmt: skip
        try:
            line = _wait_for_line(proc.stderr, "[test hook] writing", timeout=240)
            log = (tmp_path / "stdout.txt").read_text()
            assert line is not None and f"{model}/train_state.pt for epoch 2" in line, log
            proc.send_signal(sig)
            rest = proc.stderr.read()
            rc = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return rc, [x for x in rest.splitlines() if x.strip() and not x.startswith("[test hook]")]


def test_ctrl_c_prints_one_line_and_resume_matches_an_uninterrupted_run(tmp_path, tiny_args, straight):
    args = tiny_args(tmp_path, *TWIN)
    rc, lines = _interrupt(tmp_path, args, "resnet18_aa4", signal.SIGINT)
    assert rc == 130, lines
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    root = tmp_path / "tiny"
    assert lines[0].startswith("zoo finetune: interrupted: stopped while training resnet18_aa4; ")
    assert f"saved in {root}: resnet18_aa4 epoch 1/2, resnet18 not started" in lines[0]
    assert "resume with: zoo finetune model.name=resnet18_aa4" in lines[0] and lines[0].endswith(f"train.resume={root}")
    assert load_train_state(root / "resnet18_aa4")["epoch"] == 1  # the write that Ctrl-C interrupted left no trace
    assert not (root / "resnet18").exists()  # killed in the first model: the second never started
    result = finetune(None, tiny_args(tmp_path, *TWIN, f"train.resume={root}"))
    assert [r.name for r in result.runs] == ["resnet18_aa4", "resnet18"]
    assert [h["epoch"] for h in result["resnet18"].history] == [1, 2]  # started fresh
    assert _comparison(root) == straight


def test_killed_in_the_second_model_resumes_it_and_skips_the_first(tmp_path, tiny_args, straight, capsys):
    args = tiny_args(tmp_path, *TWIN)
    rc, _ = _interrupt(tmp_path, args, "resnet18", signal.SIGKILL)
    assert rc == -signal.SIGKILL
    root = tmp_path / "tiny"
    assert load_train_state(root / "resnet18_aa4")["test"]  # finished and tested
    assert load_train_state(root / "resnet18")["epoch"] == 1
    result = finetune(None, tiny_args(tmp_path, *TWIN, f"train.resume={root}"))
    out = capsys.readouterr().out
    assert "[resnet18_aa4] finished before (epoch 2, tested): skipped" in out
    assert "[resnet18] resumed from" in out and "after epoch 1" in out
    assert result["resnet18_aa4"].skipped and not result["resnet18"].skipped
    assert _comparison(root) == straight
    # everything done now: a further resume has nothing to do, and says so
    with pytest.raises(ValueError, match=r"already trained 2 of train.epochs=2 for every model"):
        finetune(None, tiny_args(tmp_path, *TWIN, f"train.resume={root}"))


def test_killed_during_the_first_model_starts_the_second_fresh(tmp_path, tiny_args, straight):
    args = tiny_args(tmp_path, *TWIN)
    rc, _ = _interrupt(tmp_path, args, "resnet18_aa4", signal.SIGKILL)
    assert rc == -signal.SIGKILL
    root = tmp_path / "tiny"
    assert not (root / "resnet18").exists()
    result = finetune(None, tiny_args(tmp_path, *TWIN, f"train.resume={root}"))
    assert result["resnet18_aa4"].init.endswith("resumed at epoch 1") and "resumed" not in result["resnet18"].init
    assert _comparison(root) == straight
