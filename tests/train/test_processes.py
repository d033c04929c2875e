"""Real processes: SIGKILL while a checkpoint is being written, and a 2-process torchrun (gloo) run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from slow_checkpoint import SLOW_RUN, TEST_DELAY_ENV

import zoo
from zoo.train import finetune
from zoo.train.checkpoint import load_train_state
from zoo.weights.io import load_state_dict_file

ZOO = str(Path(sys.executable).parent / "zoo")
RUN = "import sys; from zoo.cli import main; sys.exit(main())"


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _wait_for_line(stream, needle: str, timeout: float) -> str | None:
    """The first line of ``stream`` containing ``needle`` (read in a thread; None after ``timeout`` s)."""
    found: list[str] = []

    def reader():
        for line in stream:
            if needle in line:
                found.append(line)
                return

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    return found[0] if found else None


def test_sigkill_while_writing_checkpoint_keeps_previous_one(tmp_path, tiny_args):
    args = tiny_args(tmp_path, "train.epochs=3")
    with open(tmp_path / "stdout.txt", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SLOW_RUN, "finetune", *args],
            stdout=out, stderr=subprocess.PIPE, text=True, env=_env(**{TEST_DELAY_ENV: "2:120"}),
        )  # fmt: skip
        try:
            line = _wait_for_line(proc.stderr, "[test hook] writing", timeout=180)
            assert line is not None and "for epoch 2" in line, (tmp_path / "stdout.txt").read_text()
            proc.send_signal(signal.SIGKILL)  # a real kill, halfway through writing epoch 2's train_state.pt
            assert proc.wait(timeout=30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    run_dir = tmp_path / "tiny" / "resnet18_aa4"
    partial = list(run_dir.glob(".train_state.pt.*.tmp"))
    assert partial, "the kill should have interrupted a write"
    state = load_train_state(run_dir)  # the previous checkpoint, intact
    assert state["epoch"] == 1 and [h["epoch"] for h in state["history"]] == [1]
    weights = load_state_dict_file(run_dir / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in state["model"].items())
    model = zoo.create("resnet18_aa4", num_classes=10)
    model.load_state_dict(weights)
    # and the run resumes from it to the end
    resumed = finetune(None, tiny_args(tmp_path, "train.epochs=3", f"train.resume={run_dir}"))["resnet18_aa4"]
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert load_train_state(run_dir)["epoch"] == 3
    assert not list(run_dir.glob(".train_state.pt.*.tmp")), "stale temp files are removed on resume"


@pytest.mark.slow
def test_sigkill_at_random_times_never_breaks_the_checkpoint(tmp_path, tiny_args):
    rng = random.Random(0)
    for trial in range(6):
        out = tmp_path / f"t{trial}"
        proc = subprocess.Popen(
            [sys.executable, "-c", RUN, "finetune", *tiny_args(out, "train.epochs=4")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_env(),
        )
        time.sleep(rng.uniform(6.0, 25.0))
        proc.kill()
        proc.wait()
        run_dir = out / "tiny" / "resnet18_aa4"
        if (run_dir / "train_state.pt").exists():
            state = load_train_state(run_dir)
            assert 1 <= state["epoch"] <= 4
        if (run_dir / "model.safetensors").exists():
            zoo.create("resnet18_aa4", num_classes=10).load_state_dict(
                load_state_dict_file(run_dir / "model.safetensors")
            )


def test_torchrun_two_processes_on_cpu(tmp_path, tiny_args):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "--no-python",
        ZOO,
        "finetune",
        *tiny_args(tmp_path, "train.epochs=2"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]  # one run directory: only rank 0 writes
    root = tmp_path / "tiny"
    log = (root / "train.log").read_text()
    assert "2 process(es) on cpu" in log and "2 steps/epoch" in log  # 64 images / 2 ranks / batch 16
    assert proc.stdout.count("epoch 2/2") == 1  # printed once (rank 0)
    run_dir = root / "resnet18_aa4"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["history"][-1]["n"] == 32  # eval shards gathered: every held-out image once
    model = zoo.create("resnet18_aa4", num_classes=10)
    model.load_state_dict(load_state_dict_file(run_dir / "model.safetensors"))
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(2, 3, 32, 32))).all()
    assert load_train_state(run_dir)["epoch"] == 2
