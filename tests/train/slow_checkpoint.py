"""Test-only: make ``train_state.pt`` writes pause halfway so a test can signal the process mid-write.

A test process runs :data:`SLOW_RUN` (``python -c SLOW_RUN finetune ...``) with :data:`TEST_DELAY_ENV` set to
``"EPOCH:SECONDS[:MODEL]"``: from epoch EPOCH on (of model MODEL only, when given), the real checkpoint code
(``zoo.train.checkpoint._write_state``: temp file, fsync, ``os.replace``) runs unchanged, except that the file
it writes the state into pauses for SECONDS after the first half of the bytes and says so on stderr.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

TEST_DELAY_ENV = "ZOO_TRAIN_TEST_SLOW_CHECKPOINT"
SLOW_RUN = (
    f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import slow_checkpoint; "
    "slow_checkpoint.install(); from zoo.cli import main; sys.exit(main())"
)


class _PausingFile:
    """A binary file whose one big write is split in two halves with a pause (and a stderr line) between."""

    def __init__(self, f: Any, message: str, seconds: float) -> None:
        self._f, self._message, self._seconds = f, message, seconds

    def write(self, data: bytes) -> int:
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        print(f"[test hook] {self._message}: paused {self._seconds}s", file=sys.stderr, flush=True)
        time.sleep(self._seconds)
        return self._f.write(data[len(data) // 2 :])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _PausingFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()


def install(spec: str | None = None) -> None:
    """Wrap ``zoo.train.checkpoint._write_state`` as described above (``spec`` defaults to the variable)."""
    import builtins

    from zoo.train import checkpoint

    spec = spec if spec is not None else os.environ.get(TEST_DELAY_ENV)
    if not spec:
        return
    first, seconds, *only = spec.split(":")
    real = checkpoint._write_state

    def write_state(path: Path, state: dict[str, Any]) -> None:
        epoch, model = int(state["epoch"]), str(state.get("fingerprint", {}).get("model"))
        if epoch < int(first) or (only and only[0] != model):
            return real(path, state)
        message = f"writing {path} for epoch {epoch}"

        def pausing_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> _PausingFile:
            f = builtins.open(file, mode, *args, **kwargs)  # noqa: SIM115 (closed by _PausingFile.__exit__)
            return _PausingFile(f, message, float(seconds))

        checkpoint.open = pausing_open  # a module global shadows the builtin inside checkpoint.py
        try:
            return real(path, state)
        finally:
            del checkpoint.open

    checkpoint._write_state = write_state
