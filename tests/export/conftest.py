"""The export tests share the timm tests' model helpers (``timm_testlib``: small_size, rand_input)."""

from __future__ import annotations

import sys
from pathlib import Path

_TIMM_TESTS = str(Path(__file__).resolve().parents[1] / "timm")
if _TIMM_TESTS not in sys.path:
    sys.path.insert(0, _TIMM_TESTS)
