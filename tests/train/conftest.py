"""Shared settings of the fine-tuning tests: tiny digits runs that take a few seconds on a CPU."""

from __future__ import annotations

import pytest
from train_testlib import tiny


@pytest.fixture
def tiny_args():
    return tiny
