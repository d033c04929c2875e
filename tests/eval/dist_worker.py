"""Worker of test_eval_distributed: evaluates tiny nets on an image folder, in 1 or N processes.

Usage: python dist_worker.py DATA_DIR OUT_DIR  (under torchrun, every rank runs it; rank 0 writes).
"""

from __future__ import annotations

import sys

import torch
from eval_nets import PositionalBias, Subsample, circular_net

from zoo.distributed import setup
from zoo.eval.runner import EvalModel, load_eval_config, run_eval


def main(data: str, out: str) -> None:
    torch.set_num_threads(1)
    group = setup("cpu")
    config = load_eval_config(
        overrides={
            "data": data,
            "resize": 32,
            "crop": 32,
            "batch_size": 3,  # shards of 5 and 4 images: batches differ from the 1-process run
            "metrics": ["consistency", "diagonal", "features", "sensitivity", "deformation", "generation"],
            "consistency": {"max_shift": 8},
            "diagonal": {"max_shift": 4, "limit": None},
            "features": {"size": 16, "shifts": 3, "layers": ["1", "4"], "limit": None},
            "sensitivity": {
                "protocols": ["crop", "black"],
                "frames": 3,
                "canvas": 24,
                "embed_sizes": [12],
                "limit": None,
            },
            "deformation": {"size": 16, "strengths": [1.0, 2.0], "layers": ["1"], "bootstrap": 100, "limit": None},
            "generation": {"size": 16, "max_shift": 4, "limit": None},
        }
    )
    models = [
        EvalModel("plain", circular_net(Subsample(), channels=6, classes=7)),
        EvalModel("biased", PositionalBias(torch.linspace(-1, 1, 16 * 16).reshape(1, 16, 16)), kind="generator"),
    ]
    run_eval(models, config, out_dir=out, progress=False)
    group.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
