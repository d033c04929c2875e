"""Two processes under torchrun (gloo, CPU) give the same figures as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

WORKER = Path(__file__).with_name("dist_worker.py")


def _run(cmd: list[str], cwd: Path) -> None:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": f"{WORKER.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def test_two_processes_match_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = tmp_path / "images"
    data.mkdir()
    for k in range(9):  # odd count: the last deformation pair is incomplete in both runs
        Image.fromarray(rng.integers(0, 256, size=(40, 36, 3), dtype=np.uint8)).save(data / f"{k}.png")
    _run([sys.executable, str(WORKER), str(data), str(tmp_path / "one")], tmp_path)
    _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(WORKER),
            str(data),
            str(tmp_path / "two"),
        ],
        tmp_path,
    )
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert one["data"]["world_size"] == 1 and two["data"]["world_size"] == 2
    assert one["models"]["plain"]["consistency"]["crop"]["n"] == 9
    assert one["models"] == two["models"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
