"""Peak memory of one training step, each model measured in a fresh subprocess (CPU) or in process (CUDA).

The child builds the model and runs one warm-up step (allocating optimizer state), then reports
three figures of one more step:

- ``peak_allocated_mb``: the peak of live tensor memory during the step, less what was live when
  it began (activations saved for backward, gradients, workspace): the CPU twin of CUDA's
  ``max_memory_allocated``. It is read from ``torch.profiler``'s memory timeline (every allocation
  and free of torch's CPU allocator, in order), so it does not depend on the allocator's caching
  and is the same in every run. ``tracemalloc`` does not see torch's allocations.
- ``peak_rss_mb``: the kernel's resident-set high-water mark (``VmHWM`` reset through
  ``/proc/self/clear_refs``) less ``VmRSS`` before the step: what the process really took, but it
  moves with glibc's caching of freed blocks by tens of percent between runs. Where
  ``clear_refs`` is not writable it falls back to ``ru_maxrss`` (then it includes the warm-up
  step, which peaks the same).
- ``saved_activations_mb``: the distinct storages autograd saved for backward
  (``saved_tensors_hooks``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

_CHILD = """
import json, sys
from zoo.benchmark.memory import _child_step
print(json.dumps(_child_step(*json.loads(sys.argv[1]))))
"""


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _step_fn(source: str, name: str, batch: int, size: int, channels_last: bool, device: str = "cpu"):  # type: ignore[no-untyped-def]
    """One SGD training step of a freshly built model, as a closure."""
    import torch

    from zoo.benchmark.cases import build_model

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(source, name).train().to(device=device, memory_format=fmt)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(saved: dict[int, int] | None = None) -> None:
        opt.zero_grad(set_to_none=True)
        if saved is None:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        else:
            with torch.autograd.graph.saved_tensors_hooks(_recorder(saved), lambda t: t):
                loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    step.model = model  # type: ignore[attr-defined]
    return step


def _recorder(saved: dict[int, int]):  # type: ignore[no-untyped-def]
    def pack(t):  # type: ignore[no-untyped-def]
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    return pack


def _saved_activation_mb(step, saved: dict[int, int]) -> float:  # type: ignore[no-untyped-def]
    """Distinct storages autograd saved for backward, less the parameters and buffers (deterministic)."""
    model = step.model
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    return sum(n for ptr, n in saved.items() if ptr not in own) / 2**20


def allocated_peak_mb(fn: Callable[[], object]) -> float:
    """Peak of torch's live CPU tensor memory while ``fn()`` runs, less what was live at its start, in MiB."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action, MemoryProfileTimeline  # behind export_memory_timeline

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        fn()
    live = peak = 0  # tensors that existed before fn (Action.PREEXISTING) are the baseline, not counted
    for _, action, (key, _version), nbytes in MemoryProfileTimeline(prof._memory_profile()).timeline:
        if key.device != torch.device("cpu"):
            continue
        if action == Action.CREATE:
            live += nbytes
            peak = max(peak, live)
        elif action == Action.DESTROY:
            live -= nbytes
    return peak / 2**20


def _child_step(source: str, name: str, batch: int, size: int, threads: int, channels_last: bool) -> dict:
    import gc
    import resource

    import torch

    torch.set_num_threads(threads)
    step = _step_fn(source, name, batch, size, channels_last)
    step()
    gc.collect()
    before = _status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        method = "VmHWM after clear_refs"
    except OSError:
        method = "ru_maxrss"
    saved: dict[int, int] = {}
    step(saved)
    peak = _status_kb("VmHWM") if method.startswith("VmHWM") else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "peak_allocated_mb": allocated_peak_mb(step),
        "peak_rss_mb": (peak - before) / 1024,
        "saved_activations_mb": _saved_activation_mb(step, saved),
        "rss_before_mb": before / 1024,
        "rss_method": method,
    }


def training_step_peak(
    source: str, name: str, batch: int, size: int, threads: int, channels_last: bool = False, timeout: float = 600
) -> dict:
    """Run ``_child_step`` in a fresh interpreter and return its measurement."""
    args = json.dumps([source, name, batch, size, threads, channels_last])
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory child for {source}:{name} failed: {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cuda_step_peak(source: str, name: str, batch: int, size: int, channels_last: bool = False) -> dict:
    """Extra CUDA memory one training step allocates at its peak (after a warm-up step), in process."""
    import torch

    step = _step_fn(source, name, batch, size, channels_last, device="cuda")
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    saved: dict[int, int] = {}
    step(saved)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    return {
        "peak_allocated_mb": peak / 2**20,  # torch.cuda.max_memory_allocated less the memory live before
        "saved_activations_mb": _saved_activation_mb(step, saved),
    }
