"""Autouse fixture (import it into a test module): forget TorchScript's compiled types after each test.

Every ``torch.fx`` graph module has its own Python class, so scripting one compiles new types that torch keeps in its
global registry for the life of the process (about 50 MB per model here); a run that scripts every registered model
would grow by several GB. PyTorch's own test suite clears the same state between tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def fresh_torchscript() -> Iterator[None]:
    yield
    torch._C._jit_clear_class_registry()
    torch.jit._recursive.concrete_type_store = torch.jit._recursive.ConcreteTypeStore()
    torch.jit._state._clear_class_state()
