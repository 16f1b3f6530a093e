"""Shared helpers of the benchmark scripts: timing, matmul peaks, BERT FLOP counts, markdown tables.

The scripts in this folder import this module as `common` (Python puts the
running script's folder first on `sys.path`), so run them as
`python bench/<script>.py` from the repository root.

Why these helpers exist:

- CPU timings on a small shared VM are noisy (other processes on the same
  two cores, other tenants), so every measurement reports the best and the
  median of several repeats after a warm-up, comparisons interleave their
  candidates round by round so that a slow period hits all of them alike, and
  each repeat records how much CPU other processes took meanwhile, so that
  repeats they disturbed can be left out (`Timing`).
- MFU needs a denominator that this machine can actually reach, so the peak is
  measured (a large jitted matmul) instead of taken from a spec sheet.
- FLOPs are counted analytically from the shapes (matmuls only), the
  convention of the BERT/Megatron papers, so the numbers do not depend on how
  a framework fuses or rewrites the graph.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from bert_jax.host_memory import RETAINED

# Every benchmark runs both frameworks with the allocator settings the main command uses (bert_jax/host_memory.py):
# each script imports bert_jax first, whose import applies them before numpy, jax or torch start a thread.

MATMUL_SIZE = 2048  # square matmul for the peak: big enough to saturate two cores, small enough to be quick
CLEAN_SHARE = 0.05  # a repeat is "clean" when other processes used less than this share of the cores meanwhile
MIN_CONTENTION_WINDOW = 0.25  # seconds; shorter calls are too short for /proc/stat's ticks to tell
PROBE_SIZE = 512  # square matmul timed once before the peak, to find a dtype without a fast kernel
NO_KERNEL_GFLOPS = 20.0  # below this the probe's rate is the answer: the 2048^3 repeats would take minutes
SLOW_DTYPE_SHARE = 0.25  # a torch bf16 matmul under this share of float32's cannot win a model row (see below)


@dataclasses.dataclass(frozen=True)
class CpuSnapshot:
    """Machine-wide and own CPU time at one moment, in seconds (see `contention_since`)."""

    wall: float
    busy: float  # all processes, user + system + interrupts
    steal: float  # taken by the hypervisor for other guests
    own: float  # this process and its finished children


def cpu_snapshot() -> CpuSnapshot:
    """Reads /proc/stat (machine-wide) and getrusage (this process and its waited-for children)."""
    ticks = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        fields = [int(v) / ticks for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    own = sum(
        r.ru_utime + r.ru_stime
        for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    )
    return CpuSnapshot(time.perf_counter(), user + nice + system + irq + softirq, steal, own)


def others_share(start: CpuSnapshot, end: CpuSnapshot) -> float:
    """Share (0..1) of all cores that other processes used between two snapshots."""
    wall = max(end.wall - start.wall, 1e-9)
    others = max(0.0, (end.busy - start.busy) - (end.own - start.own))
    return others / (wall * (os.cpu_count() or 1))


def contention_since(start: CpuSnapshot) -> str:
    """How much of the cores something else used since `start`: the honesty check of a timing run.

    On this small VM another process (a test suite, another benchmark) or the
    hypervisor can take a core away; timings taken while that happened are
    pessimistic, so every script prints this line at the end.
    """
    end = cpu_snapshot()
    wall = end.wall - start.wall
    stolen = (end.steal - start.steal) / (wall * (os.cpu_count() or 1))
    return (
        f"during the {wall:.0f}s run other processes used {100 * others_share(start, end):.0f}% of the "
        f"{os.cpu_count()} cores, hypervisor steal {100 * stolen:.0f}%"
    )


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall times of the timed repeats of one callable, in seconds, and the contention during each.

    `others[i]` is the share of the machine's cores that other processes used
    while repeat i ran. `best` and `median` use only the clean repeats
    (others < CLEAN_SHARE) when there is at least one, so a test suite that
    starts in the middle of a run does not decide the result.
    """

    times: tuple[float, ...]
    others: tuple[float, ...]

    @property
    def clean_times(self) -> tuple[float, ...]:
        clean = tuple(t for t, o in zip(self.times, self.others, strict=True) if o < CLEAN_SHARE)
        return clean or self.times

    @property
    def n_clean(self) -> int:
        return sum(o < CLEAN_SHARE for o in self.others)

    @property
    def best(self) -> float:
        return min(self.clean_times)

    @property
    def median(self) -> float:
        return statistics.median(self.clean_times)


def block(out: Any) -> Any:
    """Waits for every JAX array in `out`; other leaves (torch tensors, numbers) are already computed."""
    for leaf in jax.tree.leaves(out):
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
    return out


def _timed_call(fn: Callable[[], Any]) -> tuple[float, float]:
    """(wall seconds, share of the cores other processes used meanwhile) of one blocked call.

    /proc/stat counts in 10 ms ticks, so for calls shorter than
    MIN_CONTENTION_WINDOW the share is noise; those calls count as clean (0).
    """
    start = cpu_snapshot()
    block(fn())
    end = cpu_snapshot()
    wall = end.wall - start.wall
    return wall, others_share(start, end) if wall >= MIN_CONTENTION_WINDOW else 0.0


def time_fn(fn: Callable[[], Any], warmup: int = 1, repeats: int = 5, min_warmup_s: float = 0.0) -> Timing:
    """Times `fn()` (outputs blocked on) `repeats` times after `warmup` calls.

    Warm-up keeps going until `min_warmup_s` seconds have passed as well: on
    this VM the first second of a busy loop often runs at half speed.
    """
    start = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - start < min_warmup_s:
        block(fn())
        done += 1
    samples = [_timed_call(fn) for _ in range(repeats)]
    return Timing(tuple(t for t, _ in samples), tuple(o for _, o in samples))


def time_interleaved(fns: dict[str, Callable[[], Any]], warmup: int = 1, repeats: int = 5) -> dict[str, Timing]:
    """Times several callables round-robin: round r runs each once, so drift of the machine hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            block(fn())
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(_timed_call(fn))
    return {name: Timing(tuple(t for t, _ in ss), tuple(o for _, o in ss)) for name, ss in samples.items()}


def jax_matmul_gflops(
    dtype: jnp.dtype | str = "float32",
    m: int = MATMUL_SIZE,
    k: int = MATMUL_SIZE,
    n: int = MATMUL_SIZE,
    preferred_element_type: jnp.dtype | str | None = None,
    repeats: int = 10,
) -> float:
    """Best GFLOP/s of a jitted [m,k] @ [k,n] matmul in `dtype` on the default JAX device.

    `preferred_element_type` sets the dot's output dtype (e.g. bfloat16 inputs
    with a float32 result), which on XLA:CPU decides whether the bf16 kernel
    is used at all (see xla_cpu_bf16.py).
    """
    a = jnp.ones((m, k), dtype)
    b = jnp.ones((k, n), dtype)
    matmul = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=preferred_element_type))
    timing = time_fn(lambda: matmul(a, b), warmup=2, repeats=repeats, min_warmup_s=1.0)
    return 2 * m * k * n / min(timing.times) / 1e9  # all repeats: contention only lowers a peak


def torch_matmul_gflops(
    dtype: str = "float32", m: int = MATMUL_SIZE, k: int = MATMUL_SIZE, n: int = MATMUL_SIZE, repeats: int = 10
) -> float:
    """Best GFLOP/s of a PyTorch [m,k] @ [k,n] matmul in `dtype` (oneDNN/MKL) with the current thread count."""
    import torch

    probe = torch.ones((PROBE_SIZE, PROBE_SIZE), dtype=getattr(torch, dtype))
    probe_rate = 2 * PROBE_SIZE**3 / min(time_fn(lambda: probe @ probe, warmup=1, repeats=1).times) / 1e9
    if probe_rate < NO_KERNEL_GFLOPS:  # e.g. bf16 on a CPU without AVX-512: a reference loop at ~1 GFLOP/s
        return probe_rate
    a = torch.ones((m, k), dtype=getattr(torch, dtype))
    b = torch.ones((k, n), dtype=getattr(torch, dtype))
    timing = time_fn(lambda: a @ b, warmup=2, repeats=repeats, min_warmup_s=1.0)
    return 2 * m * k * n / min(timing.times) / 1e9  # all repeats: contention only lowers a peak


def torch_bf16_is_slow(peaks: dict[str, float]) -> bool:
    """Whether torch's bf16 matmul runs under SLOW_DTYPE_SHARE of its float32 one on this CPU.

    Then its bf16 rows (autocast, bf16 weights) cannot be the best PyTorch
    setting, since matmuls are most of a BERT step, and on a CPU without bf16
    kernels one such forward takes many minutes: the scripts leave them out
    and say so.
    """
    return peaks["torch bfloat16"] < SLOW_DTYPE_SHARE * peaks["torch float32"]


def slow_bf16_note(peaks: dict[str, float]) -> str:
    """The line a script prints when it leaves the torch bf16 rows out."""
    return (
        f"torch bfloat16 rows left out: its matmul runs at {peaks['torch bfloat16']:.3g} GFLOP/s against "
        f"{peaks['torch float32']:.3g} in float32 on this CPU (no bf16 kernel), so they cannot be the best PyTorch row"
    )


def bert_forward_flops(
    batch: int,
    seq: int,
    layers: int,
    hidden: int,
    intermediate: int,
    pooler: bool = True,
    vocab_size: int | None = None,
) -> float:
    """Matmul FLOPs of one BERT forward pass (multiply-add = 2 FLOPs).

    Per token and layer: Q, K, V and output projections (4*H*H weights), the
    FFN (2*H*I weights), each weight used by one multiply-add, plus attention
    scores QK^T and the probability-weighted sum PV (2*S*H multiply-adds
    together). The pooler adds H*H per sequence; `vocab_size` adds the MLM
    head (H*H transform plus the H*V decoder) per token. Embedding lookups,
    LayerNorm, softmax and GELU are not counted.
    """
    weights_per_layer = 4 * hidden * hidden + 2 * hidden * intermediate
    attention_per_layer = 2 * seq * hidden
    tokens = batch * seq
    flops = 2 * tokens * layers * (weights_per_layer + attention_per_layer)
    if pooler:
        flops += 2 * batch * hidden * hidden
    if vocab_size:
        flops += 2 * tokens * (hidden * hidden + hidden * vocab_size)
    return float(flops)


def bert_train_step_flops(*args: Any, **kwargs: Any) -> float:
    """Forward + backward FLOPs: backward costs twice the forward (gradients w.r.t. inputs and weights)."""
    return 3 * bert_forward_flops(*args, **kwargs)


def cpu_description() -> str:
    """The CPU model, core count and allocator mode, e.g. 'AMD EPYC, 2 cores, avx512_bf16, malloc defaults'."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    malloc = "freed memory retained" if RETAINED["applied"] else "malloc defaults"
    return f"{model}, {os.cpu_count()} cores, {' '.join(wanted) or 'no AVX-512'}, {malloc}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats get 3 significant digits, without exponent notation."""

    def fmt(value: Any) -> str:
        if not isinstance(value, float):
            return str(value)
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.3g}" if abs(value) >= 1 else f"{value:.2g}"

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """Prints `markdown_table` (with an optional bold title line) so the output pastes into RESULTS.md."""
    if title:
        print(f"\n**{title}**\n")
    print(markdown_table(headers, rows), flush=True)
