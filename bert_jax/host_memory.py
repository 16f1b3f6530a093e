"""Keeping freed host memory in the process, so XLA:CPU's step buffers stop page-faulting every step.

XLA:CPU allocates each execution's activations and outputs afresh and frees
them at the end. glibc hands large blocks back to the kernel (mmap'd blocks
above its threshold, thread arenas' 64 MB heaps, the main heap's top above
`M_TRIM_THRESHOLD`), so every step touches new pages: BERT-small's train
step (batch 16 x 128) took ~180,000 minor page faults, about 0.7 GB, each
one a trip through the hypervisor on a VM. With one arena and thresholds
high enough that freed blocks stay in the heap, the same step takes none and
runs 10-20% faster, and PyTorch's steps in the same process gain 10-13%
(bench/RESULTS_training.md, section 10).

The settings only work before the threads that allocate exist, so
`import bert_jax` applies them first thing (the main command gets them
through that import); in a script or notebook, import bert_jax before numpy,
jax or torch run anything. The cost is that the
process keeps its peak heap instead of returning it to the system. Set
`BERT_JAX_RETAIN_FREED_MEMORY=0` to leave malloc alone; glibc's own MALLOC_*
variables or GLIBC_TUNABLES, when set, are left to win.

This file imports nothing from bert_jax or jax, so a process that must not
import them (the PyTorch worker of bench/finetune_vs_transformers.py) can
load it by path and get the same allocator behaviour.
"""

from __future__ import annotations

import ctypes
import os
import sys

ENV_SWITCH = "BERT_JAX_RETAIN_FREED_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters (malloc.h)
SETTINGS = (
    (_M_ARENA_MAX, 1),  # one arena: thread arenas' heaps are 64 MB, and larger blocks bypass them through mmap
    (_M_MMAP_THRESHOLD, 1 << 30),  # blocks up to 1 GiB come from the heap, so freeing them keeps their pages
    (_M_TRIM_THRESHOLD, 2**31 - 1),  # and the heap's free top is not handed back
)
RETAINED = {"applied": False}  # whether `retain_freed_memory` put the settings in force in this process
_USER_SETTINGS = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def retain_freed_memory() -> bool:
    """Applies `SETTINGS` through glibc's mallopt; True if they are in force, False where they do not apply.

    Not applied: outside Linux, without glibc, with `BERT_JAX_RETAIN_FREED_MEMORY=0`,
    or when the user already configured malloc through the environment.
    """
    if os.environ.get(ENV_SWITCH, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    results = [mallopt(option, value) for option, value in SETTINGS]  # every one, even after a refusal
    RETAINED["applied"] = all(result == 1 for result in results)
    return RETAINED["applied"]
