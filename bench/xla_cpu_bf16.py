"""Can XLA:CPU run bfloat16 matmuls faster than float32 on this CPU, and under which XLA_FLAGS?

PyTorch runs bf16 matmuls through oneDNN, which uses the AVX512-BF16
instructions (`vdpbf16ps`) and gets about twice its float32 rate on CPUs that
have them. This script measures, in one child process per XLA_FLAGS setting
(the flags are read once, when the backend starts):

- float32 @ float32 -> float32;
- bfloat16 @ bfloat16 -> bfloat16: what `flax.linen.Dense(dtype=bfloat16)`
  emits, hence what bert_jax's bfloat16 mode runs;
- bfloat16 @ bfloat16 -> float32 (`preferred_element_type=float32`): the
  same inputs with a float32 accumulator/result;

at a square 2048^3 matmul and at BERT-base's FFN shape (4096 tokens x 768 @
768 x 3072). For each it reports the GFLOP/s, which kernel the compiled HLO
calls (YNNPACK / XNNPACK / oneDNN fusion or a plain XLA dot) and the dtype of
the operands that kernel actually receives: a `float32` there for bfloat16
inputs means XLA upcast them and the bf16 hardware is not used. PyTorch's
float32 and bfloat16 rates on the same shapes come from one more child
process, with `ONEDNN_VERBOSE` to record the ISA oneDNN picked.

Flags that this jaxlib does not know make XLA abort at start-up ("Unknown flag
in XLA_FLAGS"); such settings are reported as rejected, which is also how the
list below was checked against this jax version.
"""

from __future__ import annotations

# isort: off
import bert_jax  # noqa: F401  (first: its import applies bert_jax/host_memory.py before numpy/torch start threads)
# isort: on

import argparse
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
from common import (
    contention_since,
    cpu_description,
    cpu_snapshot,
    jax_matmul_gflops,
    others_share,
    print_table,
    torch_matmul_gflops,
)

FLAG_SETS: dict[str, str] = {
    "default": "",
    "use_onednn": "--xla_cpu_use_onednn=true",
    "oneDNN dot fusion": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot",
    "oneDNN custom call": "--xla_cpu_experimental_onednn_custom_call=true",
    "use_xnnpack": "--xla_cpu_use_xnnpack=true",
    "XNNPACK dot fusion": "--xla_cpu_use_xnnpack=true --xla_cpu_experimental_xnn_fusion_type=dot",
    "YNNPACK dot fusion": "--xla_cpu_experimental_ynn_fusion_type=dot",
    "no YNNPACK for single dots": "--xla_cpu_experimental_ynn_fusion_type=-individual_dot",
    "fast math": "--xla_cpu_enable_fast_math=true",
    "legacy (non-thunk) runtime": "--xla_cpu_use_thunk_runtime=false",
    "unknown flag (control)": "--xla_cpu_no_such_flag=true",
}
SHAPES: dict[str, tuple[int, int, int]] = {
    "2048x2048x2048": (2048, 2048, 2048),
    "BERT FFN 4096x768x3072": (4096, 768, 3072),
}
CASES: dict[str, tuple[str, str | None]] = {  # name -> (input dtype, preferred_element_type)
    "f32": ("float32", None),
    "bf16->bf16": ("bfloat16", None),
    "bf16->f32": ("bfloat16", "float32"),
}
KERNELS = ("ynn_fusion", "xnn_fusion", "onednn_fusion", "__onednn$matmul", "__onednn")


def dot_kernel(hlo_text: str) -> tuple[str, str]:
    """(kernel, operand dtype) of the first dot in compiled HLO text.

    The kernel is the library fusion / custom call wrapping the dot, or 'XLA dot'
    when XLA emits it itself; the operand dtype is read from the definitions of
    the dot's operands inside the computation that holds it.
    """
    kernel = next((k.strip("_") for k in KERNELS if k in hlo_text), "XLA dot")
    for block in hlo_text.split("\n\n"):
        match = re.search(r"\bdot\((%[\w.\-]+), (%[\w.\-]+)\)", block) or re.search(
            r"custom_call_target=\"__onednn\$matmul\"", block
        )
        if not match:
            continue
        if match.lastindex:
            defs = dict(re.findall(r"(%[\w.\-]+) = (\w+)\[", block))
            return kernel, "/".join(sorted({defs.get(op, "?") for op in match.groups()}))
        return kernel, "?"
    return kernel, "?"


def jax_worker(repeats: int) -> dict:
    """Measures every shape x case in this process; XLA reads XLA_FLAGS when this first compiles."""
    results = {}
    for shape_name, (m, k, n) in SHAPES.items():
        for case, (dtype, preferred) in CASES.items():
            a = jax.ShapeDtypeStruct((m, k), jnp.dtype(dtype))
            b = jax.ShapeDtypeStruct((k, n), jnp.dtype(dtype))
            compiled = jax.jit(lambda x, y, p=preferred: jnp.matmul(x, y, preferred_element_type=p))
            hlo = compiled.lower(a, b).compile().as_text()
            gflops = jax_matmul_gflops(dtype, m, k, n, preferred_element_type=preferred, repeats=repeats)
            results[f"{shape_name}|{case}"] = [gflops, *dot_kernel(hlo)]
    return results


def torch_worker(repeats: int) -> dict:
    """PyTorch float32 / bfloat16 rates on the same shapes, with all cores."""
    import torch

    torch.set_num_threads(os.cpu_count())
    return {
        f"{shape_name}|{dtype}": torch_matmul_gflops(dtype, m, k, n, repeats=repeats)
        for shape_name, (m, k, n) in SHAPES.items()
        for dtype in ("float32", "bfloat16")
    }


def run_child(kind: str, repeats: int, env_update: dict[str, str]) -> tuple[dict | None, str]:
    """Runs this script as a worker; returns (results or None, the last error line or an ISA note)."""
    env = dict(os.environ, **env_update)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--repeats", str(repeats)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    results = next((json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")), None)
    errors = [line for line in proc.stderr.splitlines() if "Unknown flag" in line or "no longer supported" in line]
    isa = next((line for line in proc.stdout.splitlines() if "isa:" in line), "")
    note = errors[-1].split("] ", 1)[-1] if errors else isa
    if results is None and not note:
        note = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return results, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8, help="timed matmuls per case (best reported)")
    parser.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker = jax_worker if args.worker == "jax" else torch_worker
        print("RESULT " + json.dumps(worker(args.repeats)), flush=True)
        return
    start = cpu_snapshot()

    print(f"machine: {cpu_description()}", flush=True)
    t0 = cpu_snapshot()
    torch_results, isa_note = run_child("torch", args.repeats, {"ONEDNN_VERBOSE": "1"})
    torch_others = others_share(t0, cpu_snapshot())
    print(f"torch: oneDNN {isa_note.strip() or '(no ISA line)'}")

    rows, notes = [], []
    for label, flags in FLAG_SETS.items():
        t0 = cpu_snapshot()
        results, note = run_child("jax", args.repeats, {"XLA_FLAGS": flags})
        t1 = cpu_snapshot()
        others = f"{100 * others_share(t0, t1):.0f}%"
        status = "ok" if results else "rejected"
        print(f"  {label}: {status} in {t1.wall - t0.wall:.0f}s, other processes {others} {note}", flush=True)
        if note:
            notes.append(f"- `{flags}`: {note}")
        setting = f"{label} `{flags}`" if flags else label
        if results is None:
            rows.append([setting, "-", *(["rejected"] * len(CASES)), "-", "-"])
            continue
        for shape in SHAPES:
            cells = [results[f"{shape}|{case}"] for case in CASES]
            kernels = "; ".join(
                f"{case}: {kernel}({dtype})" for case, (_, kernel, dtype) in zip(CASES, cells, strict=True)
            )
            rows.append([setting, shape, *(gflops for gflops, _, _ in cells), kernels, others])
    if torch_results:
        for shape in SHAPES:
            gflops = [torch_results[f"{shape}|float32"], torch_results[f"{shape}|bfloat16"], "-"]
            kernels = "MKL (f32); oneDNN (bf16 in and out, f32 accumulation)"
            rows.append(["PyTorch", shape, *gflops, kernels, f"{100 * torch_others:.0f}%"])

    headers = [
        "setting",
        "shape (MxKxN)",
        *(f"{case} GFLOP/s" for case in CASES),
        "kernel(dtype the dot multiplies)",
        "other processes",
    ]
    print_table(headers, rows, title=f"Matmul GFLOP/s (best of {args.repeats})")
    if notes:
        print("\nmessages:\n" + "\n".join(notes))
    print(f"\n{contention_since(start)}")


if __name__ == "__main__":
    main()
