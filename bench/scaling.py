"""Train-step throughput at scale: tokens/s, MFU and collective traffic per layout on 1, 2, 4, 8 devices.

For each device count and each mesh layout valid for it (data parallel,
FSDP, tensor parallel and mixes; `config.mesh.*` with the default rule table
`config.sharding`), the whole pretraining step that `Trainer` runs (MLM + NSP,
backward, clipping, optimizer) is compiled ahead of time and timed:

- tokens/s and ms/step (median of the clean repeats after warm-up; all
  candidates interleaved round by round, `common.time_interleaved`), the
  step-time ratio against the 1-device run of the same run, and MFU: analytic
  matmul FLOPs (the `common.bert_forward_flops` convention, backward = 2x
  forward, heads on the masked slots only) over the median step time and the
  measured matmul peak of the whole machine (or of one device: `--platform gpu`);
- the collectives of the compiled, SPMD-partitioned HLO (`compiled.as_text()`):
  how many all-reduce, all-gather, reduce-scatter, all-to-all and
  collective-permute ops one step executes and their bytes. Convention: bytes
  of the op's result buffer on one device (for an all-reduce that equals its
  operand; an all-gather counts the gathered, full-size result; a
  reduce-scatter its scattered shard), summed over tuple results; async pairs
  count once, at their `-done` op (the `-start` tuple also holds the operand).
  Ops inside while loops (the scanned layer stack, forward and backward) count
  once per iteration (XLA's `known_trip_count`). This is data each device
  receives into a buffer, not wire traffic: a ring all-reduce of N bytes moves
  about 2N(n-1)/n bytes per device.

On the CPU (`--platform cpu`, the default) the devices are fake:
`--xla_force_host_platform_device_count` splits one process into N XLA:CPU
devices that share the same cores, so tokens/s cannot rise with the device
count; what the ratio shows is the cost of partitioning (per-device
dispatch, smaller matmuls, in-memory collectives) at equal total compute, and
the HLO shows the communication a real multi-chip run would carry.

On a GPU machine the same script measures real MFU, e.g. BERT-large and
ALBERT-xxlarge in bfloat16 with cuDNN flash attention:

    python bench/scaling.py --platform gpu --devices 1 --models bert_large albert_xxlarge \\
        --dtype bfloat16 --attention cudnn --batch 32 --seq 512 --spec-peak-tflops 989

(needs a CUDA build of jaxlib; 989 TFLOP/s is the H100/H200 dense bf16 spec).
`--attention cudnn` / `xla` replace only `SelfAttention.attend` with
`jax.nn.dot_product_attention` (the what-if of train_step.py, which has no
attention-probs dropout, so attention dropout is set to 0 for those runs).

Run from the repository root: `python bench/scaling.py` (13 compiles, then
13 x 7 interleaved steps: 8.6 minutes on the two shared cores of the CI VM;
`--repeats 3 --warmup 1` saves about 2 minutes); smoke test: `python bench/scaling.py --devices 1 2 --layers 2
--hidden 128 --heads 2 --batch 8 --seq 32 --repeats 1`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import functools
import json
import os
import re
import sys
import time
from typing import Any

CONFIGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "configs")
MODELS: dict[str, tuple[str, dict[str, Any]]] = {  # name -> (config file, overrides); `small` takes --layers etc.
    "small": ("bert_tiny.py", {}),
    "bert_base": ("bert_base.py", {}),
    "bert_large": ("bert_large.py", {}),
    "albert_xxlarge": ("albert_xxlarge.py", {}),
}
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
DTYPE_BYTES = {
    "pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "f8e4m3": 1,
    "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
    "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
}  # fmt: skip
MB = 1e6


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", default="cpu", choices=["cpu", "gpu"], help="cpu: fake devices on this host")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8], help="device counts")
    parser.add_argument("--layouts", nargs="*", help="only these layout names (e.g. data8 fsdp8); default all")
    parser.add_argument("--models", nargs="+", default=["small"], choices=list(MODELS))
    parser.add_argument("--layers", type=int, default=4, help="`small` only")
    parser.add_argument("--hidden", type=int, default=256, help="`small` only")
    parser.add_argument("--heads", type=int, default=4, help="`small` only; tensor parallelism splits them")
    parser.add_argument("--intermediate", type=int, default=None, help="`small` only; default 4 x hidden")
    parser.add_argument(
        "--vocab",
        type=int,
        default=30528,
        help="`small` only; BERT's 30522 padded to a multiple of 64, so tensor=8 splits it",
    )
    parser.add_argument("--batch", type=int, default=32, help="global batch (divides by data x fsdp)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--predictions", type=int, default=None, help="masked slots per row; default 15%% of seq")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="model.dtype")
    parser.add_argument(
        "--attention", default="package", choices=["package", "xla", "cudnn"],
        help="package: SelfAttention.attend as shipped; xla/cudnn: jax.nn.dot_product_attention(implementation=...)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per candidate (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per candidate")
    parser.add_argument("--batches", type=int, default=2, help="distinct synthetic batches cycled through")
    parser.add_argument(
        "--peak-size", type=int, default=None, help="matmul size of the peak; default 2048 cpu, 8192 gpu"
    )
    parser.add_argument(
        "--spec-peak-tflops", type=float, default=None, help="also report MFU against this per-device peak"
    )
    parser.add_argument("--dump-hlo", help="write each layout's compiled HLO text into this folder")
    parser.add_argument("--json", help="write the results here")
    return parser.parse_args(argv)


def setup_platform(args: argparse.Namespace) -> None:
    """Before jax is imported: fake CPU devices (as many as the largest count) or the GPU backend."""
    if args.platform == "cpu":
        count = max(args.devices)
        os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count}"
        os.environ["JAX_PLATFORMS"] = "cpu"
    else:
        os.environ.setdefault("JAX_PLATFORMS", "cuda")


# ---------------------------------------------------------------------------------------------------------------
# layouts and FLOPs
# ---------------------------------------------------------------------------------------------------------------


def layouts_for(n: int) -> list[dict[str, int]]:
    """Mesh shapes (data, fsdp, tensor) for n devices: pure DP, pure FSDP, pure TP (up to 4) and mixes.

    For 8 devices the issue's four: data8; fsdp8; data2 x tensor4; data2 x fsdp2 x tensor2.
    """
    if n == 1:
        return [{"data": 1, "fsdp": 1, "tensor": 1}]
    shapes = [(n, 1, 1), (1, n, 1)]
    if n <= 4:
        shapes.append((1, 1, n))
    if n >= 4:
        shapes.append((2, 1, n // 2))
        if n // 4 >= 1 and n % 4 == 0:
            shapes.append((n // 4, 2, 2))
    return [dict(zip(("data", "fsdp", "tensor"), s)) for s in dict.fromkeys(shapes)]


def layout_name(mesh: dict[str, int]) -> str:
    parts = [f"{axis}{size}" for axis, size in mesh.items() if size > 1]
    return "_".join(parts) or "single"


def step_flops(model: Any, batch: int, seq: int, predictions: int) -> float:
    """Analytic matmul FLOPs of one train step: encoder + pooler (common.bert_forward_flops, x3 for backward),
    ALBERT's E->H embedding projection, the pair classifier, and the MLM head (H->E transform, E->V tied
    decoder) on the B x P masked slots only."""
    from common import bert_train_step_flops

    h, e = model.hidden_size, model.embedding_size
    flops = bert_train_step_flops(batch, seq, model.num_layers, h, model.intermediate_size, pooler=True)
    if e != h:
        flops += 6 * batch * seq * e * h
    flops += 6 * batch * h * 2
    flops += 6 * batch * predictions * (h * e + e * model.vocab_size)
    return float(flops)


# ---------------------------------------------------------------------------------------------------------------
# collectives in the compiled HLO
# ---------------------------------------------------------------------------------------------------------------

_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%([\w.\-]+)\s.*\{\s*$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT\s+)?%[\w.\-]+\s*=\s*(.*?)\s([a-z][a-z0-9\-]*)\(")
_CALLEE = re.compile(r"\b(body|condition|to_apply|calls|true_computation|false_computation)=%([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_ARRAY = re.compile(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]")


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO result type: an array `f32[128,256]{1,0}` or a tuple of arrays (summed)."""
    total = 0.0
    for dtype, dims in _ARRAY.findall(shape):
        if dtype not in DTYPE_BYTES:
            raise ValueError(f"unknown HLO element type {dtype!r} in {shape!r}")
        count = 1
        for d in filter(None, dims.split(",")):
            count *= int(d)
        total += count * DTYPE_BYTES[dtype]
    return int(total)


@dataclasses.dataclass
class Traffic:
    """Executed collective ops of one step and their result bytes per device, by kind (see the module docstring)."""

    ops: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(COLLECTIVES, 0))
    bytes: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(COLLECTIVES, 0))
    unknown_trip_counts: int = 0

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes.values())


def collective_traffic(hlo_text: str) -> Traffic:
    """Collectives one execution of the HLO module runs, with while bodies counted `known_trip_count` times.

    Walks the call graph from the ENTRY computation: a while body runs trip-count
    times per execution of its caller, other callees (call, conditional
    branches, async wrappers, fusions, reducers) once. A while without a known
    trip count counts once and is reported.
    """
    computations: dict[str, list[str]] = {}
    entry, current = None, None
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header and not line.startswith(" "):
            current = header.group(1)
            computations[current] = []
            if line.startswith("ENTRY"):
                entry = current
        elif current is not None and line.startswith(" "):
            computations[current].append(line)
        elif line.startswith("}"):
            current = None
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    traffic = Traffic()
    # executions of each computation per step; computations are visited in a topological order of the call graph
    runs: dict[str, int] = collections.defaultdict(int)
    runs[entry] = 1
    order, seen = [], set()

    def visit(name: str) -> None:  # depth-first post-order, then reversed: callers before callees
        seen.add(name)
        for line in computations.get(name, ()):
            for _, callee in _callees(line):
                if callee not in seen:
                    visit(callee)
        order.append(name)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    visit(entry)
    for name in reversed(order):
        for line in computations.get(name, ()):
            match = _INSTRUCTION.match(line)
            if not match:
                continue
            shape, opcode = match.groups()
            trip = 1
            if opcode == "while":
                found = _TRIP_COUNT.search(line)
                trip = int(found.group(1)) if found else 1
                traffic.unknown_trip_counts += found is None
            for attribute, callee in _callees(line):
                runs[callee] += runs[name] * (trip if attribute == "body" else 1)
            kind = opcode.removesuffix("-done")
            if kind in COLLECTIVES and not opcode.endswith("-start"):
                traffic.ops[kind] += runs[name]
                traffic.bytes[kind] += runs[name] * shape_bytes(shape)
    return traffic


def _callees(line: str) -> list[tuple[str, str]]:
    """(attribute, computation) pairs an instruction calls; none for the `-done`/`-update` half of an async pair,
    which names the same computation as its `-start`."""
    match = _INSTRUCTION.match(line)
    if match and match.group(2).endswith(("-done", "-update")):
        return []
    pairs = [(m.group(1), m.group(2)) for m in _CALLEE.finditer(line)]
    for group in _BRANCHES.findall(line):
        pairs += [("branch", n.strip().lstrip("%")) for n in group.split(",") if n.strip()]
    return pairs


# ---------------------------------------------------------------------------------------------------------------
# candidates
# ---------------------------------------------------------------------------------------------------------------


def model_overrides(args: argparse.Namespace, name: str, mesh: dict[str, int]) -> dict[str, Any]:
    """load_config overrides of one candidate: batch shapes, dtype, mesh, and `small`'s sizes."""
    predictions = args.predictions or max(1, round(0.15 * args.seq))
    values: dict[str, Any] = dict(MODELS[name][1])
    if name == "small":
        values.update(
            {
                "model.num_layers": args.layers,
                "model.hidden_size": args.hidden,
                "model.embedding_size": args.hidden,
                "model.num_heads": args.heads,
                "model.intermediate_size": args.intermediate or 4 * args.hidden,
                "model.vocab_size": args.vocab,
                "optimizer": "adamw",
            }
        )
    values.update(
        {
            "batch_size": args.batch,
            "max_seq_length": args.seq,
            "masking.max_predictions": predictions,
            "model.dtype": args.dtype,
            **{f"mesh.{axis}": size for axis, size in mesh.items()},
        }
    )
    if args.attention != "package":  # jax.nn.dot_product_attention has no dropout on the attention probabilities
        values["model.attention_dropout_rate"] = 0.0
    return values


def attention_patch(implementation: str):
    """A context manager that makes the encoder build SelfAttention layers whose `attend` is
    `jax.nn.dot_product_attention(implementation=...)`; train_step.py's what-if for "xla"."""
    import train_step

    from bert_jax.models import encoder as encoder_module

    if implementation == "package":
        return contextlib.nullcontext()
    if implementation == "xla":
        return train_step.dot_product_attention()

    import jax
    import jax.numpy as jnp

    class CudnnAttention(train_step.DotProductAttention):
        """cuDNN's fused (flash) attention kernel; bfloat16/float16 only. The additive bias is clipped to the
        compute dtype's range (float32's minimum overflows to -inf in bfloat16)."""

        def attend(self, q, k, v, bias):
            bias = jnp.maximum(bias, jnp.finfo(q.dtype).min).astype(q.dtype)
            return jax.nn.dot_product_attention(q, k, v, bias=bias, implementation="cudnn")

    return train_step.patched(encoder_module, "SelfAttention", CudnnAttention)


@dataclasses.dataclass
class Candidate:
    model: str
    layout: str
    devices: int
    mesh: dict[str, int]
    step: Any  # train_step.JaxStep: a zero-argument train step on device-resident batches
    flops: float
    traffic: Traffic
    state_bytes_per_device: int
    param_bytes: int


def build_candidate(args: argparse.Namespace, name: str, mesh: dict[str, int], devices: list) -> Candidate:
    """Compiles one model x layout through train_step.JaxStep, handing its Trainer the device subset."""
    import jax
    import train_step

    import bert_jax
    from bert_jax.training import partitioning
    from bert_jax.training.trainer import Trainer

    config = bert_jax.load_config(os.path.join(CONFIGS, MODELS[name][0]), model_overrides(args, name, mesh))
    shapes = train_step.Shapes(
        args.batch, args.seq, config.model.vocab_size, config.masking.max_predictions, config.model.hidden_dropout_rate
    )
    batches = train_step.synthetic_batches(shapes, args.batches)
    on_devices = functools.partial(Trainer, devices=devices)

    @contextlib.contextmanager
    def patch():
        with train_step.patched(train_step, "Trainer", on_devices), attention_patch(args.attention):
            yield

    step = train_step.JaxStep(config, batches, patch)
    hlo = step.compiled.as_text()
    label = layout_name(mesh)
    if args.dump_hlo:
        os.makedirs(args.dump_hlo, exist_ok=True)
        with open(os.path.join(args.dump_hlo, f"{name}_{label}.hlo.txt"), "w") as f:
            f.write(hlo)
    abstract = step.trainer.abstract_state()
    return Candidate(
        model=name,
        layout=label,
        devices=len(devices),
        mesh=mesh,
        step=step,
        flops=step_flops(config.model, args.batch, args.seq, config.masking.max_predictions),
        traffic=collective_traffic(hlo),
        state_bytes_per_device=partitioning.per_device_bytes(abstract),
        param_bytes=sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(abstract.params)),
    )


def measure_peak(args: argparse.Namespace) -> float:
    """Best matmul GFLOP/s of one device in the compute dtype (bfloat16: the better of a bf16 and an f32 result)."""
    from common import jax_matmul_gflops

    size = args.peak_size or (8192 if args.platform == "gpu" else 2048)
    kwargs = dict(m=size, k=size, n=size)
    if args.dtype == "float32":
        return jax_matmul_gflops("float32", **kwargs)
    return max(
        jax_matmul_gflops("bfloat16", **kwargs),
        jax_matmul_gflops("bfloat16", preferred_element_type="float32", **kwargs),
    )


# ---------------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    setup_platform(args)
    import jax
    from common import contention_since, cpu_description, cpu_snapshot, print_table, time_interleaved

    start, load_start, wall_start = cpu_snapshot(), os.getloadavg(), time.perf_counter()
    available = jax.devices()
    print(
        f"machine: {cpu_description()}; jax {jax.__version__}, {len(available)} {available[0].platform} devices "
        f"({available[0].device_kind}); load average at start {load_start[0]:.2f} (1 min)"
    )
    print(
        f"models {args.models}, batch {args.batch} x seq {args.seq}, dtype {args.dtype}, attention {args.attention}",
        flush=True,
    )
    counts = [n for n in args.devices if n <= len(available)]
    if len(counts) < len(args.devices):
        print(f"skipped device counts above {len(available)}: {sorted(set(args.devices) - set(counts))}")

    candidates: list[Candidate] = []
    for name in args.models:
        for n in counts:
            for mesh in layouts_for(n):
                label = layout_name(mesh)
                if args.layouts and label not in args.layouts and n != 1:
                    continue
                t0 = time.perf_counter()
                candidates.append(build_candidate(args, name, mesh, available[:n]))
                print(f"compiled {name} {label} on {n} devices in {time.perf_counter() - t0:.1f}s", flush=True)

    peak_before = measure_peak(args)
    fns = {(c.model, c.layout): c.step for c in candidates}
    timings = time_interleaved(fns, args.warmup, args.repeats)
    peak = max(peak_before, measure_peak(args))
    print(f"\nmeasured matmul peak ({args.dtype}, one device, best of before/after): {peak:.0f} GFLOP/s")

    tokens = args.batch * args.seq
    rows, comm_rows, results = [], [], []
    for c in candidates:
        t = timings[(c.model, c.layout)]
        base = next((b for b in candidates if b.model == c.model and b.devices == 1), None)
        ratio = t.median / timings[(base.model, base.layout)].median if base else float("nan")
        gflops = c.flops / t.median / 1e9
        peak_total = peak * (1 if args.platform == "cpu" else c.devices)  # fake CPU devices share the cores
        row = [
            c.model,
            c.devices,
            c.layout,
            tokens / t.median,
            1e3 * t.median,
            ratio,
            f"{100 * gflops / peak_total:.1f}%",
        ]
        if args.spec_peak_tflops:
            row.append(f"{100 * gflops / (1e3 * args.spec_peak_tflops * c.devices):.1f}%")
        row += [c.state_bytes_per_device / MB, f"{t.n_clean}/{len(t.times)}"]
        rows.append(row)
        comm_rows.append(
            [c.model, c.devices, c.layout]
            + [f"{c.traffic.ops[k]} / {c.traffic.bytes[k] / MB:.1f}" for k in COLLECTIVES]
            + [c.traffic.total_bytes / MB, c.traffic.total_bytes / c.param_bytes]
        )
        results.append(
            {
                "model": c.model,
                "devices": c.devices,
                "layout": c.layout,
                "mesh": c.mesh,
                "tokens_per_s_median": tokens / t.median,
                "step_s_median": t.median,
                "step_s_best": t.best,
                "ratio_vs_1_device": ratio,
                "mfu_measured_peak": gflops / peak_total,
                "flops": c.flops,
                "state_bytes_per_device": c.state_bytes_per_device,
                "param_bytes": c.param_bytes,
                "collective_ops": c.traffic.ops,
                "collective_bytes": c.traffic.bytes,
                "unknown_trip_counts": c.traffic.unknown_trip_counts,
            }
        )
    mfu_note = "the whole host, shared by its fake devices" if args.platform == "cpu" else "per device"
    headers = ["model", "devices", "layout", "tokens/s (median)", "ms/step (median)", "step time / 1 device"]
    headers.append(f"MFU vs measured peak ({peak:.0f} GFLOP/s, {mfu_note})")
    if args.spec_peak_tflops:
        headers.append(f"MFU vs spec {args.spec_peak_tflops:g} TFLOP/s per device")
    headers += ["state MB/device", "clean repeats"]
    print_table(
        headers,
        rows,
        title=f"Train step, batch {args.batch} x seq {args.seq}, {args.dtype}, attention {args.attention}, "
        f"{args.repeats} interleaved repeats after {args.warmup} warm-up steps",
    )
    print_table(
        ["model", "devices", "layout"]
        + [f"{k} ops / MB" for k in COLLECTIVES]
        + ["total MB/step/device", "total / parameter bytes"],
        comm_rows,
        title="Collectives per step from the compiled HLO (executed ops, result MB per device; see the docstring)",
    )
    for c in candidates:
        if c.traffic.unknown_trip_counts:
            print(f"note: {c.model} {c.layout}: {c.traffic.unknown_trip_counts} while loops without a known trip count")
    param_mb = {c.model: c.param_bytes / MB for c in candidates}
    print(f"\nparameter MB (float32): {param_mb}")
    load_end = os.getloadavg()
    line = contention_since(start)
    print(f"{line}; load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end (1 min)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "peak_gflops": peak,
                    "results": results,
                    "contention": line,
                    "load": [load_start[0], load_end[0]],
                    "wall_s": time.perf_counter() - wall_start,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
