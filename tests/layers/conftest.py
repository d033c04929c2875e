"""Shared set-up of the layer tests: tiny tensors, so one thread per module (no oversubscription)."""

from support.threads import one_thread_per_module  # noqa: F401 (autouse fixture)
