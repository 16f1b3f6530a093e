"""Per-device memory of BERT-large and ALBERT-xxlarge pretraining steps on an 8-device mesh, planned.

Why: which remat policy and which sharding layout a large run needs is a
question about the compiled program, answerable before any hardware is
rented. Each row is `python -m bert_jax.plan` (bert_jax/plan.py) for one
(model, remat policy, layout): the real train step of `Trainer`, compiled
ahead of time for abstract arguments, with

- parameters and optimizer state per device from the state's shardings;
- activations + temporaries from XLA's memory analysis of the compiled step
  (`temp_size_in_bytes`), on 8 fake CPU devices (XLA:CPU) and, with libtpu
  installed, on a TPU slice of 8 chips (`--tpu`, default v5p-16: 8 chips of
  95 GiB, so that nearly every row compiles; XLA:TPU refuses a program larger
  than HBM and then only says how large its temporaries would be);
- FLOPs per step from XLA's cost analysis of the unrolled step, once per
  (model, remat policy), as the layout does not change them.

The global batch is the same in every row (`--per-device-batch` x 8, default
8 x 8 = 64 sequences of 512 tokens), so every layout does the same work.
Rows go to a JSON-lines file as they finish (`--out`; rerunning skips the
rows already there), then the markdown tables are printed.

    .venv/bin/python bench/plan_memory.py                      # the full table (about an hour on 2 cores)
    .venv/bin/python bench/plan_memory.py --models bert_large --remat none --layouts data=8 --tpu none
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common import markdown_table  # noqa: E402

from bert_jax import load_config  # noqa: E402
from bert_jax import plan as planner  # noqa: E402

MODELS = ("bert_large", "albert_xxlarge")
REMATS = ("none", "dots_saveable", "nothing_saveable")
LAYOUTS = {  # name -> (mesh.data, mesh.fsdp, mesh.tensor)
    "data=8": (8, 1, 1),
    "fsdp=8": (1, 8, 1),
    "data=2,fsdp=4": (2, 4, 1),
    "data=2,fsdp=2,tensor=2": (2, 2, 2),
}
GIB = 1024**3


def config_for(model: str, remat: str, layout: str, batch: int, seq: int):
    data, fsdp, tensor = LAYOUTS[layout]
    return load_config(
        os.path.join(REPO, "configs", f"{model}.py"),
        {
            "batch_size": batch,
            "max_seq_length": seq,
            "model.remat_policy": remat,
            "mesh.data": data,
            "mesh.fsdp": fsdp,
            "mesh.tensor": tensor,
        },
    )


def done_rows(path: str) -> dict[tuple, dict]:
    rows = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if line.strip():
                    row = json.loads(line)
                    rows[tuple(row["key"])] = row
    return rows


def gib(n: float | None) -> str:
    return "-" if n is None else f"{n / GIB:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--remat", default=",".join(REMATS))
    parser.add_argument("--layouts", default=";".join(LAYOUTS), help="';'-separated, from " + "; ".join(LAYOUTS))
    parser.add_argument("--per-device-batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--tpu", default="v5p-16", help="a TPU slice of 8 chips (v5p-16, v4-16, v5e-8), or 'none'")
    parser.add_argument("--out", default=os.path.join(REPO, "workdirs", "plan_memory.jsonl"))
    args = parser.parse_args()
    models, remats = args.models.split(","), args.remat.split(",")
    layouts = [x.strip() for x in args.layouts.split(";")]
    batch = args.per_device_batch * 8
    cpu = planner.parse_topology("cpu:8")
    planner.use_local_cpu(8)
    tpu = None
    if args.tpu != "none":
        if planner.libtpu_version() is None:
            print("libtpu is not installed: no TPU column (pip install 'jax[tpu]')", flush=True)
        else:
            tpu = planner.parse_topology(args.tpu)
            assert tpu.count == 8, f"{args.tpu} has {tpu.count} devices, not 8"
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    rows = done_rows(args.out)
    for model in models:
        for remat in remats:
            jobs = [("cpu", layout) for layout in layouts]
            jobs += [("tpu", layout) for layout in layouts] if tpu else []
            jobs.append(("flops", ""))
            for kind, layout in jobs:
                key = (model, remat, layout, kind, batch, args.seq) + ((tpu.name,) if kind == "tpu" else ())
                if key in rows:
                    continue
                start = time.perf_counter()
                config = config_for(model, remat, layout or "data=8", batch, args.seq)
                if kind == "flops":
                    row = {"flops_per_step": planner.step_flops(config)}
                else:
                    plan = planner.make_plan(config, tpu if kind == "tpu" else cpu, config_name=model, flops=False)
                    row = dataclasses.asdict(plan)
                row.update(key=list(key), seconds=time.perf_counter() - start)
                rows[key] = row
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
                value = row.get("total_bytes", row.get("flops_per_step"))
                print(f"{key}: {value} in {row['seconds']:.0f} s", flush=True)
                gc.collect()
    print_tables(rows, models, remats, layouts, batch, args.seq, tpu)


def print_tables(rows, models, remats, layouts, batch, seq, tpu) -> None:
    headers = ["model", "remat", "layout", "params GiB", "optimizer GiB", "activations+temps GiB", "total GiB (CPU)"]
    if tpu:
        headers += [f"activations+temps GiB ({tpu.name})", f"total GiB ({tpu.name}, {tpu.memory // GIB} GiB)"]
    table = []
    for model in models:
        for remat in remats:
            for layout in layouts:
                cpu_row = rows.get((model, remat, layout, "cpu", batch, seq))
                if cpu_row is None:
                    continue
                line = [
                    model,
                    remat,
                    layout,
                    gib(cpu_row["param_bytes"]),
                    gib(cpu_row["optimizer_bytes"]),
                    gib(cpu_row["activation_bytes"]),
                    gib(cpu_row["total_bytes"]),
                ]
                if tpu:
                    t = rows.get((model, remat, layout, "tpu", batch, seq, tpu.name))
                    if t is None:
                        line += ["-", "-"]
                    else:
                        mark = " (refused: > HBM)" if t["compiler_refused"] else "" if t["fits"] else " (> 90%)"
                        line += [gib(t["activation_bytes"]), gib(t["total_bytes"]) + mark]
                table.append(line)
    print(f"\nPer-device memory, global batch {batch} x {seq} tokens on 8 devices\n")
    print(markdown_table(headers, table))
    flops = []
    for model in models:
        for remat in remats:
            f = rows.get((model, remat, "", "flops", batch, seq))
            if f:
                per_device = f["flops_per_step"] / 8
                cells = [model, remat, f"{f['flops_per_step'] / 1e12:.1f}", f"{per_device / 1e12:.2f}"]
                if tpu:
                    cells.append(f"{per_device / tpu.peak_flops * 1e3:.0f}")
                flops.append(cells)
    if flops:
        headers = ["model", "remat", "TFLOP/step", "TFLOP/device"]
        if tpu:
            headers.append(f"ms/step at {tpu.name} peak ({tpu.peak_flops / 1e12:.0f} TFLOP/s)")
        print(f"\nFLOPs per step (XLA cost analysis of the unrolled step), global batch {batch} x {seq}\n")
        print(markdown_table(headers, flops))


if __name__ == "__main__":
    main()
