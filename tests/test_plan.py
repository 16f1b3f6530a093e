"""`python -m bert_jax.plan`: the train step compiled for devices this machine does not have.

Three plans of a small BERT run in parallel child processes (the device count
is fixed when JAX starts): 8 fake CPU devices as data=8 and as fsdp=8 (told
its devices are too small, so it must refuse), and a TPU v4-8 slice through
libtpu's compile-only devices when libtpu is installed (the `test` extra
installs it). The printed table, the JSON and the shardings must agree with
each other and with the compiled program.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = [  # bert_tiny at batch 16 x 64 tokens; no dropout, which compiles faster
    "--config.batch_size=16",
    "--config.max_seq_length=64",
    "--config.masking.max_predictions=8",
    "--config.model.hidden_dropout_rate=0.0",
    "--config.model.attention_dropout_rate=0.0",
]
MISFIT_GIB = 0.0085  # fsdp8 needs about 9.4 MiB per device: told a device has 8.7 MiB, the plan must refuse
HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None
PLANS = {
    "data8": ["--topology=cpu:8", "--config.mesh.data=8"],
    "fsdp8": ["--topology=cpu:8", "--config.mesh.data=1", "--config.mesh.fsdp=8", "--noflops"]
    + [f"--device_memory_gib={MISFIT_GIB}"],
    "tpu": ["--topology=v4-8", "--noflops"],  # 4 chips, one device per chip (megacore)
}


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """name -> (returncode, stdout, stderr, plan dict); the children run side by side."""
    folder = tmp_path_factory.mktemp("plans")
    children = {}
    for name, args in PLANS.items():
        if name == "tpu" and not HAS_LIBTPU:
            continue
        command = [sys.executable, "-m", "bert_jax.plan", "--config=configs/bert_tiny.py", *SMALL, *args]
        command.append(f"--json={folder / (name + '.json')}")
        children[name] = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
        )
    results = {}
    for name, child in children.items():
        out, err = child.communicate(timeout=600)
        path = folder / (name + ".json")
        results[name] = (child.returncode, out, err, json.loads(path.read_text()) if path.exists() else None)
    return results


def analytic_step_flops(b=16, n=64, p=8, layers=2, h=128, i=512, vocab=4096) -> float:
    """Matmul FLOPs of one training step (forward + backward = 3x forward) of bert_tiny's shapes."""
    encoder = layers * (2 * b * n * (4 * h * h + 2 * h * i) + 2 * 2 * b * n * n * h)
    mlm_head = 2 * b * p * (h * h + h * vocab)
    return 3 * (encoder + mlm_head)


def check_consistent(plan: dict, stdout: str, fits: bool = True) -> None:
    from bert_jax.plan import human_bytes

    parts = plan["param_bytes"] + plan["optimizer_bytes"] + plan["batch_bytes"]
    assert plan["total_bytes"] == parts + plan["activation_bytes"] + plan["other_bytes"]
    assert plan["other_bytes"] >= 0, "the compiled arguments hold less than the state and batch shardings say"
    assert plan["fits"] == fits and (plan["total_bytes"] < plan["device_memory"]) == fits
    # AdamW: two moments per parameter, laid out like the parameters
    assert 2 * plan["param_bytes"] <= plan["optimizer_bytes"] <= 2 * plan["param_bytes"] + 4096
    assert f"parameters          {human_bytes(plan['param_bytes'])} per device" in stdout
    assert f"activations+temps   {human_bytes(plan['activation_bytes'])} per device" in stdout
    assert f"of {human_bytes(plan['device_memory'])}" in stdout
    assert ("fits" if fits else "DOES NOT FIT") in stdout


def test_fake_cpu_devices_data_and_fsdp(plans):
    for name, expected in (("data8", 0), ("fsdp8", 1)):
        code, out, err, _ = plans[name]
        assert code == expected, f"{name}: {err[-3000:]}"
    data, fsdp = plans["data8"][3], plans["fsdp8"][3]
    for name, plan in (("data8", data), ("fsdp8", fsdp)):
        check_consistent(plan, plans[name][1], fits=name == "data8")
        assert plan["devices"] == 8 and plan["platform"] == "cpu"
        # XLA:CPU adds no padding: beyond the state and batch, only the step's metrics come out
        assert plan["other_bytes"] < 64 * 1024, plan
    assert data["mesh"] == {"data": 8, "fsdp": 1, "tensor": 1}
    assert fsdp["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    # data parallel: every device holds all float32 parameters
    assert data["param_bytes"] == 4 * data["parameters"]
    # FSDP shards parameters and moments over 8 devices (norm scales and biases of odd sizes may stay whole)
    assert data["param_bytes"] / fsdp["param_bytes"] > 6, (data["param_bytes"], fsdp["param_bytes"])
    assert data["optimizer_bytes"] / fsdp["optimizer_bytes"] > 6
    assert data["batch_bytes"] == fsdp["batch_bytes"]  # the batch is split over data x fsdp either way
    # FLOPs: the whole step, every layer counted (XLA counts a scanned layer's loop body once)
    ratio = data["flops_per_step"] / analytic_step_flops()
    assert 0.9 < ratio < 1.6, ratio
    assert data["flops_per_device"] == pytest.approx(data["flops_per_step"] / 8)
    assert "FLOPs per step" in plans["data8"][1] and "FLOPs per step" not in plans["fsdp8"][1]


@pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu is not installed (pip install 'jax[tpu]'; the test extra has it)")
def test_tpu_topology_through_libtpu(plans):
    code, out, err, plan = plans["tpu"]
    assert code == 0, err[-3000:]
    check_consistent(plan, out)
    assert plan["platform"] == "tpu" and plan["devices"] == 4 and plan["mesh"]["data"] == 4
    assert plan["device_memory"] == 32 * 1024**3 and "TPU v4" in plan["device_kind"]
    assert plan["param_bytes"] == 4 * plan["parameters"]  # data parallel: replicated
    assert "libtpu" in out


def test_misfit_exits_with_overrides_that_fit(plans):
    code, out, err, plan = plans["fsdp8"]
    assert code == 1 and plan["device_memory"] == int(MISFIT_GIB * 1024**3)
    assert "error: on cpu:8, the train step needs" in err and "overrides that fit: `--config.batch_size=8`" in err, err


def test_bad_topology():
    bad = subprocess.run(
        [sys.executable, "-m", "bert_jax.plan", "--config=configs/bert_tiny.py", "--topology=v4-7"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "no standard v4 slice" in bad.stderr, bad.stderr[-2000:]


def test_topology_names():
    from bert_jax.plan import parse_topology

    v4 = parse_topology("v4-128")
    assert (v4.topology, v4.count, v4.chip_config) == ("v4:4x4x4", 64, "megacore")
    assert parse_topology("v5e-256").topology == "v5e:16x16" and parse_topology("v5e-256").count == 256
    assert parse_topology("v5litepod-8").host_bounds == (2, 4, 1)
    assert parse_topology("v5p-8").topology == "v5:2x2x1"
    assert parse_topology("v6e-16").memory == 32 * 1024**3
    assert parse_topology("v4:4x4x8").count == 128 and parse_topology("v4:4x4x8").accelerator_type == "v4-256"
    assert parse_topology("v5e-16", num_slices=2).count == 32
    gpu = parse_topology("gpu:8:a100")
    assert gpu.platform == "gpu" and gpu.count == 8 and "fake CPU" in gpu.kind
    assert parse_topology("cpu:4").memory is None
