"""One intra-op thread for small-tensor tests on a shared 2-core machine (faster and fairer).

Import a fixture into a test module or conftest to make it active there (both are ``autouse``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

__all__ = ["one_thread", "one_thread_per_module", "single_thread"]


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(1)``; restore the previous count after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Each test of the importing module runs on one thread."""
    with single_thread():
        yield


@pytest.fixture(autouse=True, scope="module")
def one_thread_per_module() -> Iterator[None]:
    """The importing module's tests run on one thread (set once per module)."""
    with single_thread():
        yield
