"""Compiling jitted steps for the shapes a run will need, ahead of time and on background threads.

Why: a fine-tuning run's length-bucketed batches come in a few widths, and
each width is one XLA compile of the train step and one of the eval step.
On a CPU a train-step compile of a small BERT takes several seconds, almost
all of it single-threaded LLVM work, and `jax.jit` does it on first use, on
the training thread, one width after another: in a run of a few hundred
steps that is a large share of the wall time. The widths are known before
the first step (finetune_data.TrainOrder.first_steps_by_size), so the run
submits them all at start-up, in the order the steps will need them: a
background thread lowers and compiles them (XLA releases the GIL while
compiling) while the main thread finishes starting up and runs the steps
whose shapes are ready, and a step waits only for its own shape.

Measured on the 2-core CPU (all-MiniLM-L6-v2 train step, batch 32): one
compile takes 10 CPU seconds at XLA:CPU's default backend optimisation
level (3) and 6 at level 1 or 2, with the same step time (within 2%, widths
16 and 64; level 0 makes the step 3x slower), so `compiler_options` can pass
a lower level. Two compiles on two threads take as long as one after the
other (XLA serialises them), so the pool gains by overlapping compiles with
the run's other work (start-up, steps of shapes already compiled), not with
each other.

`call` runs the ahead-of-time executable of the arguments' shapes when one
was submitted, and falls back to the jitted function (which compiles on
first use as before) otherwise, so a shape that was not foreseen still works.
`ready` / `pending` let the caller run a batch in a larger shape that is
already compiled instead of waiting for its own (FineTuner.train_step).
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from collections.abc import Callable
from typing import Any

import jax

log = logging.getLogger(__name__)


def _signature(args: tuple, static: dict) -> tuple:
    """What tells two calls' executables apart: every leaf's shape and dtype, and the static arguments."""
    return tuple((leaf.shape, str(leaf.dtype)) for leaf in jax.tree.leaves(args)), tuple(sorted(static.items()))


def abstract(tree: Any) -> Any:
    """ShapeDtypeStructs (with the sharding where a leaf has one) of a tree of arrays."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


class AheadOfTime:
    """Executables of jitted functions for given argument shapes, compiled on background threads."""

    def __init__(self, workers: int = 1, compiler_options: dict | None = None):
        self.workers, self.compiler_options = workers, compiler_options or None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._compiled: dict[tuple, concurrent.futures.Future] = {}

    def submit(self, fn: Callable, args: tuple, label: str = "", **static) -> None:
        """Starts lowering and compiling jitted `fn` for `args` (arrays or ShapeDtypeStructs) and `static`;
        `label` names it in the log line that says how long it took."""
        key = (id(fn), _signature(args, static))
        if key in self._compiled:
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="aot-compile")
        shapes = abstract(args)

        def compile_():
            start = time.perf_counter()
            compiled = fn.lower(*shapes, **static).compile(compiler_options=self.compiler_options)
            log.info("compiled %s in %.1fs", label or getattr(fn, "__name__", "a step"), time.perf_counter() - start)
            return compiled

        self._compiled[key] = self._pool.submit(compile_)

    def ready(self, fn: Callable, *args, **static) -> bool:
        """Whether an executable of `fn` for these shapes was submitted and has finished compiling."""
        future = self._compiled.get((id(fn), _signature(args, static)))
        return future is not None and future.done() and future.exception() is None

    def pending(self, fn: Callable, *args, **static) -> bool:
        """Whether an executable of `fn` for these shapes was submitted and is still compiling."""
        future = self._compiled.get((id(fn), _signature(args, static)))
        return future is not None and not future.done()

    def call(self, fn: Callable, *args, **static):
        """`fn(*args, **static)`, with the executable compiled ahead of time for these shapes if there is one."""
        future = self._compiled.get((id(fn), _signature(args, static)))
        if future is None:
            return fn(*args, **static)
        return future.result()(*args)

    def close(self) -> None:
        """Drops the executables; compiles still queued are cancelled (running ones finish in the background)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool, self._compiled = None, {}
