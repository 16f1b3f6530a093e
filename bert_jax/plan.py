"""Plans a pretraining run for hardware this machine does not have, allocating nothing.

    python -m bert_jax.plan --config=configs/albert_xxlarge.py --topology=v4-128 [--config.x=y ...]

compiles the real train step (the `Trainer`'s, with its shardings) ahead of
time for the target devices, like MaxText's `train_compile.py`, and prints per
device the bytes of parameters, optimizer state, batch and activations plus
temporaries, the total against the device's memory, the FLOPs of one step and
the step time at the device's peak. It exits with status 1 when the step does
not fit (with overrides that would), 2 on a bad config or topology.

Topologies (`--topology`):

- TPU slices by Cloud accelerator type: `v4-N` and `v5p-N` (N TensorCores, two
  per chip; one JAX device per chip, megacore), `v5e-N` (or `v5litepod-N`) and
  `v6e-N` (N chips); or libtpu's own names, `v4:4x4x8`, `v5e:16x16`. The
  compile-only TPU devices come from `jax.experimental.topologies` and
  libtpu's compiler, which runs on a CPU-only machine: `pip install
  "jax[tpu]"` (libtpu from PyPI, matched to jax; the `test` extra has it).
  `--num_slices=K` plans K slices joined by the data-centre network (the
  `data` mesh axis spans the slices).
- `cpu:N`: N fake CPU devices (`jax_num_cpu_devices`), each with an Nth of
  this host's free RAM; XLA:CPU's compiled program.
- `gpu:N` or `gpu:N:MODEL` (MODEL in `GPUS`, default h100): *CPU-fake-device
  planning*: the same XLA:CPU program on N fake CPU devices, compared with the
  GPU's memory and peak. XLA:GPU fuses differently (and has cuDNN attention),
  so its activation bytes differ; parameter, optimizer and batch bytes do not.

Memory comes from the compiled program's memory analysis: parameters and
optimizer state from the state's shardings (`sharding.shard_shape`), which
are the compiled arguments; activations and temporaries are XLA's temporary
buffers. FLOPs come from XLA's cost analysis of the step lowered with
`model.scan_layers=False` and `grad_accum_steps=1` (the same arithmetic),
because XLA counts the body of a loop (the scanned layers) only once. The
step time at peak is FLOPs per device over the peak dense bf16 FLOP/s of one
device (`TPUS`, `GPUS`): a lower bound, as no real step runs at peak.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import sys
import time
import types

import jax
import ml_collections
import numpy as np
from absl import app, flags

from bert_jax import main as cli
from bert_jax.errors import BertJaxError, ConfigError
from bert_jax.training import memory, partitioning
from bert_jax.training.trainer import Trainer

GIB = 1024**3


@dataclasses.dataclass(frozen=True)
class Chip:
    """One TPU generation: libtpu's name for it, its chip config, and per-chip HBM and peak dense bf16 FLOP/s."""

    libtpu_name: str
    chip_config: str  # 'megacore': one JAX device per chip (v4, v5p); 'default': one per chip anyway (v5e, v6e)
    cores_per_chip: int  # how the Cloud accelerator type counts: TensorCores (v4, v5p) or chips (v5e, v6e)
    hbm: int
    peak_flops: float


# Google Cloud's published per-chip numbers (HBM capacity; peak bf16 dense TFLOP/s).
TPUS = {
    "v4": Chip("v4", "megacore", 2, 32 * GIB, 275e12),
    "v5p": Chip("v5", "megacore", 2, 95 * GIB, 459e12),
    "v5e": Chip("v5e", "default", 1, 16 * GIB, 197e12),
    "v6e": Chip("v6e", "default", 1, 32 * GIB, 918e12),
}
TPU_ALIASES = {"v5litepod": "v5e", "v5": "v5p", "v6litepod": "v6e"}
# Chips -> physical shape of the standard slices (MaxText's accelerator_to_spec_map, Cloud TPU's docs).
SHAPES_3D = {
    4: "2x2x1",
    8: "2x2x2",
    16: "2x2x4",
    32: "2x4x4",
    64: "4x4x4",
    128: "4x4x8",
    192: "4x4x12",
    256: "4x8x8",
    384: "4x8x12",
    512: "8x8x8",
    768: "8x8x12",
    1024: "8x8x16",
    1536: "8x12x16",
    2048: "8x16x16",
    4096: "16x16x16",
}
SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
# NVIDIA's datasheet numbers (SXM): memory, and peak dense bf16 FLOP/s.
GPUS = {
    "a100": (80 * GIB, 312e12),
    "h100": (80 * GIB, 989e12),
    "h200": (140 * GIB, 989e12),
}


@dataclasses.dataclass(frozen=True)
class Target:
    """The devices a plan compiles for."""

    name: str  # as given on the command line
    platform: str  # 'tpu' | 'cpu' | 'gpu' (gpu: fake CPU devices)
    count: int  # devices in all slices
    kind: str  # what a device is, for the table
    memory: int | None  # bytes per device; None: this host's free RAM over the fake devices
    peak_flops: float | None  # per device; None: unknown
    topology: str = ""  # libtpu's topology name, e.g. 'v4:4x4x8'
    chip_config: str = ""
    host_bounds: tuple[int, int, int] = (2, 2, 1)
    num_slices: int = 1
    accelerator_type: str = ""  # Cloud's name of one slice, e.g. 'v4-128'


def parse_topology(name: str, num_slices: int = 1) -> Target:
    """`v4-128`, `v5e-256`, `v5p-8`, `v6e-16`, `v4:4x4x8`, `cpu:8`, `gpu:8`, `gpu:8:a100` -> a Target."""
    text = name.strip().lower()
    if text.startswith(("cpu:", "gpu:")):
        platform, _, rest = text.partition(":")
        count_text, _, model = rest.partition(":")
        if not count_text.isdigit() or int(count_text) < 1:
            raise ConfigError(f"--topology={name}: give a device count, e.g. {platform}:8")
        if num_slices != 1:
            raise ConfigError("--num_slices applies to TPU topologies only")
        count = int(count_text)
        if platform == "cpu":
            return Target(name, "cpu", count, f"CPU (fake device, 1/{count} of this host's RAM)", None, None)
        model = model or "h100"
        if model not in GPUS:
            raise ConfigError(f"--topology={name}: unknown GPU {model!r}; known: {', '.join(GPUS)}")
        hbm, peak = GPUS[model]
        return Target(name, "gpu", count, f"{model.upper()} (planned on fake CPU devices)", hbm, peak)
    raw = re.fullmatch(r"(v\d+[a-z]*):(\d+(?:x\d+)+)", text)
    cloud = re.fullmatch(r"(v\d+[a-z]*)-(\d+)", text)
    if not (raw or cloud):
        raise ConfigError(
            f"--topology={name}: use a TPU type (v4-128, v5e-256, v5p-8, v6e-16), libtpu's name (v4:4x4x8), "
            "cpu:N or gpu:N[:MODEL]"
        )
    generation = (raw or cloud).group(1)
    generation = TPU_ALIASES.get(generation, generation)
    if generation not in TPUS:
        raise ConfigError(f"--topology={name}: unknown TPU generation; known: {', '.join(TPUS)}")
    chip = TPUS[generation]
    three_d = chip.chip_config == "megacore"
    if raw:
        shape = raw.group(2)
        if len(shape.split("x")) != (3 if three_d else 2):
            raise ConfigError(f"--topology={name}: a {generation} slice has {3 if three_d else 2} dimensions")
    else:
        units = int(cloud.group(2))
        chips, odd = divmod(units, chip.cores_per_chip)
        table = SHAPES_3D if three_d else SHAPES_2D
        if odd or chips not in table:
            sizes = ", ".join(f"{generation}-{c * chip.cores_per_chip}" for c in table)
            raise ConfigError(
                f"--topology={name}: no standard {generation} slice of that size; known: {sizes}; "
                f"or name the shape, e.g. --topology={generation}:{table[max(table)]}"
            )
        shape = table[chips]
    dims = [int(d) for d in shape.split("x")]
    chips = math.prod(dims)
    bounds = (1, 1, 1) if chips == 1 else (2, 4, 1) if chips == 8 and not three_d else (2, 2, 1)
    return Target(
        name,
        "tpu",
        chips * num_slices,
        f"TPU {generation} chip ({chip.hbm // GIB} GiB HBM)",
        chip.hbm,
        chip.peak_flops,
        topology=f"{chip.libtpu_name}:{shape}",
        chip_config=chip.chip_config,
        host_bounds=bounds,
        num_slices=num_slices,
        accelerator_type=f"{generation}-{chips * chip.cores_per_chip}",
    )


def libtpu_version() -> str | None:
    if importlib.util.find_spec("libtpu") is None:
        return None
    try:
        return importlib.metadata.version("libtpu")
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def use_local_cpu(fake_devices: int = 0) -> None:
    """Keeps this process's own JAX on the CPU (a planner never needs the local accelerator), with
    `fake_devices` CPU devices; only possible before JAX starts its backends."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        have = len(jax.devices("cpu"))
        if have < fake_devices:
            raise ConfigError(
                f"planning on {fake_devices} fake CPU devices, but JAX already started with {have}; "
                "run `python -m bert_jax.plan` in a fresh process"
            )
        return
    jax.config.update("jax_platforms", "cpu")
    if fake_devices:
        jax.config.update("jax_num_cpu_devices", fake_devices)


def target_devices(target: Target) -> list:
    """The target's devices: compile-only TPU devices from libtpu, or this process's fake CPU devices."""
    if target.platform != "tpu":
        use_local_cpu(target.count)
        return jax.devices("cpu")[: target.count]
    use_local_cpu()
    if libtpu_version() is None:
        raise ConfigError(
            f"planning for {target.name} needs libtpu (PyPI): pip install 'jax[tpu]'; "
            "without it, plan on fake devices: --topology=cpu:N"
        )
    # Only this process's compile-only client: no metadata-server queries, no lock on the (absent) chips.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", target.accelerator_type)
    from jax.experimental import topologies

    return topologies.get_topology_desc(
        platform="tpu",
        topology_name=target.topology,
        chip_config_name=target.chip_config,
        chips_per_host_bounds=target.host_bounds,
        num_slices=target.num_slices,
    ).devices


def physical_order(config: ml_collections.ConfigDict, devices: list, num_slices: int) -> list:
    """The devices in the order that lays the (data, fsdp, tensor) mesh onto the TPU torus (jax's
    mesh_utils); `Trainer` reshapes the list in this order. Falls back to the given order."""
    from jax.experimental import mesh_utils

    shape = partitioning.make_mesh(config, devices).devices.shape
    try:
        if num_slices > 1:
            ici = (shape[0] // num_slices, *shape[1:]) if shape[0] % num_slices == 0 else None
            if ici is None:
                return list(devices)
            grid = mesh_utils.create_hybrid_device_mesh(ici, (num_slices, 1, 1), devices)
        else:
            grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):
        return list(devices)
    return list(np.asarray(grid).reshape(-1))


@dataclasses.dataclass
class Plan:
    """What one device holds and does in one train step, in bytes and FLOPs."""

    config: str
    topology: str
    platform: str
    device_kind: str
    devices: int
    mesh: dict[str, int]
    batch_size: int
    max_seq_length: int
    remat_policy: str
    parameters: int  # count
    param_bytes: int
    optimizer_bytes: int  # optimizer state, step and RNG
    batch_bytes: int
    activation_bytes: int  # XLA temporaries: activations kept for the backward pass, gradients, workspace
    other_bytes: int  # outputs not aliased to inputs, generated code, layout padding
    total_bytes: int
    device_memory: int
    fits: bool
    flops_per_step: float | None
    flops_per_device: float | None
    peak_flops: float | None
    step_time_s: float | None
    compile_s: float
    fit_message: str = ""
    note: str = ""
    compiler_refused: bool = False  # XLA:TPU found the program larger than HBM; activations are its estimate

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": GIB, "T": 1024**4}


def _refused_program(message: str, state_and_batch: int):
    """Stands in for a program XLA:TPU refused as larger than HBM: its memory analysis from the message
    ('HLO temporaries (19.76G) exceeds ...' or 'Used 63.80G of 30.75G hbm'; 0 where it says neither)."""
    temps = re.search(r"HLO temporaries \(([\d.]+)([KMGT]?)\)", message) or re.search(
        r"HLO temp\s+([\d.]+)([KMGT]?)", message
    )
    used = re.search(r"Used ([\d.]+)([KMGT]?) of", message)
    if temps:
        activations = float(temps.group(1)) * _UNITS[temps.group(2)]
    elif used:
        activations = max(float(used.group(1)) * _UNITS[used.group(2)] - state_and_batch, 0)
    else:
        activations = 0
    stats = types.SimpleNamespace(
        argument_size_in_bytes=state_and_batch,
        output_size_in_bytes=0,
        alias_size_in_bytes=0,
        generated_code_size_in_bytes=0,
        temp_size_in_bytes=int(activations),
    )
    return types.SimpleNamespace(memory_analysis=lambda: stats)


def _cost(analysis) -> dict:
    """`cost_analysis()` is a dict in current jax and was a list of one dict per program before."""
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else {}
    return dict(analysis or {})


def step_flops(config: ml_collections.ConfigDict) -> float:
    """FLOPs of one whole train step (all devices together) from XLA's cost analysis of the step as lowered,
    before partitioning and optimization: the same on every platform, so it is lowered for one local CPU."""
    unrolled = copy.deepcopy(config)
    unrolled.model.scan_layers = False  # XLA counts a loop body once, so the layers must not be a loop
    unrolled.grad_accum_steps = 1  # nor the micro-batches; same arithmetic
    unrolled.mesh.data, unrolled.mesh.fsdp, unrolled.mesh.tensor = 1, 1, 1
    trainer = Trainer(unrolled, "", jax.devices("cpu")[:1])
    return float(_cost(trainer.lower().cost_analysis()).get("flops", 0.0))


def make_plan(
    config: ml_collections.ConfigDict,
    target: Target,
    config_name: str = "",
    flops: bool = True,
    device_memory: int | None = None,
    peak_flops: float | None = None,
) -> Plan:
    """Compiles the train step of `config` for `target` and accounts for every byte one device holds."""
    devices = target_devices(target)
    if target.platform != "cpu" and not config.model.get("scan_unroll", 1):
        config = copy.deepcopy(config)  # the caller's config stays as given (bench/plan_memory.py reuses it)
        config.model.scan_unroll = 1  # auto would see this process's CPU backend, not the target's
    if target.platform == "tpu":
        devices = physical_order(config, devices, target.num_slices)
    start = time.perf_counter()
    trainer = Trainer(config, "", devices)
    refused = ""
    try:
        compiled = trainer.compile(available_memory=2**62)  # the fit is judged below, against the target's memory
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        compiled, refused = None, str(e)  # XLA:TPU refuses to compile a program larger than HBM
    compile_s = time.perf_counter() - start
    state = trainer.abstract_state()
    batch = trainer.abstract_batch()
    param_bytes = partitioning.per_device_bytes(state.params)
    state_bytes = partitioning.per_device_bytes(state)
    batch_bytes = partitioning.per_device_bytes(batch)
    if compiled is None:
        compiled = _refused_program(refused, state_bytes + batch_bytes)
    fixed, activations = memory.step_memory_bytes(compiled)
    memory_per_device = device_memory or target.memory or memory.device_memory_bytes(devices[0])
    fit_message = ""
    try:
        batch_devices = trainer.mesh.shape["data"] * trainer.mesh.shape["fsdp"]
        memory.check_fits(compiled, config, memory_per_device, batch_devices=batch_devices)
    except ConfigError as e:
        fit_message = str(e)
    if refused:
        first_line = refused.strip().splitlines()[0]
        fit_message = (fit_message + "; " if fit_message else "") + f"the TPU compiler says: {first_line}"
    total_flops = step_flops(config) if flops else None
    per_device = total_flops / len(devices) if total_flops is not None else None
    peak = peak_flops or target.peak_flops
    note = ""
    if target.platform == "gpu":
        note = "CPU-fake-device planning: XLA:CPU's program; XLA:GPU's activation bytes differ"
    elif target.platform == "tpu":
        note = f"compile-only TPU devices, libtpu {libtpu_version()}"
    return Plan(
        config=config_name,
        topology=target.name,
        platform=target.platform,
        device_kind=target.kind,
        devices=len(devices),
        mesh=dict(trainer.mesh.shape),
        batch_size=config.batch_size,
        max_seq_length=config.max_seq_length,
        remat_policy=config.model.remat_policy,
        parameters=sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params)),
        param_bytes=param_bytes,
        optimizer_bytes=state_bytes - param_bytes,
        batch_bytes=batch_bytes,
        activation_bytes=activations,
        other_bytes=fixed - state_bytes - batch_bytes,
        total_bytes=fixed + activations,
        device_memory=int(memory_per_device),
        fits=not fit_message,
        compiler_refused=bool(refused),
        flops_per_step=total_flops,
        flops_per_device=per_device,
        peak_flops=peak,
        step_time_s=per_device / peak if per_device is not None and peak else None,
        compile_s=compile_s,
        fit_message=fit_message,
        note=note,
    )


def human_bytes(n: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def human_flops(n: float) -> str:
    for unit, size in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} FLOP"


def format_plan(plan: Plan) -> str:
    batch_devices = plan.mesh.get("data", 1) * plan.mesh.get("fsdp", 1)
    rows = [
        ("devices", f"{plan.devices} x {plan.device_kind}"),
        ("mesh", " ".join(f"{k}={v}" for k, v in plan.mesh.items())),
        (
            "batch",
            f"{plan.batch_size} sequences x {plan.max_seq_length} tokens "
            f"({plan.batch_size // batch_devices} per batch device), remat_policy={plan.remat_policy}",
        ),
        ("parameters", f"{human_bytes(plan.param_bytes)} per device ({plan.parameters / 1e6:.1f}M parameters)"),
        ("optimizer state", f"{human_bytes(plan.optimizer_bytes)} per device"),
        ("batch arrays", f"{human_bytes(plan.batch_bytes)} per device"),
        (
            "activations+temps",
            f"{human_bytes(plan.activation_bytes)} per device "
            + (
                "(XLA:TPU's estimate; it refused to compile a program larger than HBM)"
                if plan.compiler_refused
                else "(XLA temporaries)"
            ),
        ),
        ("outputs, code, pad", f"{human_bytes(plan.other_bytes)} per device"),
        (
            "total",
            f"{human_bytes(plan.total_bytes)} per device of {human_bytes(plan.device_memory)} "
            f"({100 * plan.total_bytes / plan.device_memory:.0f}%): " + ("fits" if plan.fits else "DOES NOT FIT"),
        ),
    ]
    if plan.flops_per_step is not None:
        rows.append(
            ("FLOPs per step", f"{human_flops(plan.flops_per_step)} ({human_flops(plan.flops_per_device)} per device)")
        )
        if plan.step_time_s is not None:
            rows.append(
                (
                    "step time at peak",
                    f"{plan.step_time_s * 1e3:.1f} ms at {plan.peak_flops / 1e12:.0f} TFLOP/s per device "
                    "(bf16 dense; a lower bound)",
                )
            )
        else:
            rows.append(("step time at peak", "n/a (no peak for this device; pass --peak_tflops)"))
    rows.append(("compile", f"{plan.compile_s:.1f} s" + (f"; {plan.note}" if plan.note else "")))
    width = max(len(k) for k, _ in rows)
    title = f"plan: {plan.config or 'config'} on {plan.topology}"
    return "\n".join([title] + [f"  {k.ljust(width)}  {v}" for k, v in rows])


FLAGS = flags.FLAGS
flags.DEFINE_string("topology", None, "v4-128, v5e-256, v5p-8, v6e-16, v4:4x4x8, cpu:8, gpu:8 or gpu:8:a100")
flags.DEFINE_integer("num_slices", 1, "TPU slices joined by the data-centre network")
flags.DEFINE_float("device_memory_gib", None, "override the memory of one device")
flags.DEFINE_float("peak_tflops", None, "override the peak dense TFLOP/s of one device")
flags.DEFINE_boolean("flops", True, "count FLOPs (lowers an unrolled copy of the step; --noflops skips it)")
flags.DEFINE_string("json", None, "also write the plan, in bytes and FLOPs, to this JSON file")
flags.mark_flags_as_required(["topology"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        target = parse_topology(FLAGS.topology, FLAGS.num_slices)
        config = cli.config_from_flags()
        plan = make_plan(
            config,
            target,
            config_name=FLAGS.config,
            flops=FLAGS.flops,
            device_memory=int(FLAGS.device_memory_gib * GIB) if FLAGS.device_memory_gib else None,
            peak_flops=FLAGS.peak_tflops * 1e12 if FLAGS.peak_tflops else None,
        )
    except BertJaxError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(format_plan(plan), flush=True)
    if FLAGS.json:
        with open(FLAGS.json, "w") as f:
            f.write(plan.to_json())
    if not plan.fits:
        print(f"error: on {plan.topology}, {plan.fit_message}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    cli.run(main)
