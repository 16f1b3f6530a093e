"""Multi-host for real: 2 processes on localhost under `jax.distributed`, each with 4 fake CPU devices.

Both run `python -m bert_jax.main` into one shared workdir, on a mesh whose
FSDP axis spans both processes (every matrix is split across the hosts);
then tests/multihost_check.py, in one process with 8 devices, replays the run
and restores its checkpoint into other mesh shapes.
"""

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOSTS = 2
# mesh (data 1, fsdp 4, tensor 2) over devices 0-3 (process 0) and 4-7 (process 1): fsdp crosses the hosts
OVERRIDES = [
    "--config.total_steps=6",
    "--config.batch_size=8",
    "--config.max_seq_length=32",
    "--config.masking.max_predictions=5",
    "--config.checkpoint_every=3",
    "--config.log_every=2",
    "--config.eval_every=6",
    "--config.eval_batches=30",  # more than the hosts have: host 0 has one batch more, and must not run it
    "--config.mesh.data=1",
    "--config.mesh.fsdp=4",
    "--config.mesh.tensor=2",
]
PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "grpc_proxy"}  # gRPC to 127.0.0.1 must not use a proxy


def folder_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_hosts(workdir: str, logs: str, timeout: float = 240) -> list[str]:
    """Starts the processes, waits for all of them (killing them after `timeout`), returns each one's output."""
    base = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
    base.update(
        XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4",
        JAX_PLATFORMS="cpu",
        JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{free_port()}",
        JAX_NUM_PROCESSES=str(HOSTS),
    )
    command = [sys.executable, "-m", "bert_jax.main", "--config=configs/bert_tiny.py", f"--workdir={workdir}"]
    paths = [os.path.join(logs, f"host{i}.log") for i in range(HOSTS)]
    procs = []
    with contextlib.ExitStack() as stack:
        for i, path in enumerate(paths):
            out = stack.enter_context(open(path, "w"))
            env = {**base, "JAX_PROCESS_ID": str(i)}
            procs.append(subprocess.Popen([*command, *OVERRIDES], cwd=REPO, env=env, stdout=out, stderr=out))
        deadline = time.time() + timeout
        try:
            for p in procs:
                p.wait(timeout=max(deadline - time.time(), 1))
        except subprocess.TimeoutExpired:
            pass
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    texts = []
    for i, (p, path) in enumerate(zip(procs, paths)):
        with open(path) as f:
            texts.append(f.read())
        assert p.returncode == 0, f"host {i} exited {p.returncode} (-9: killed after {timeout}s):\n{texts[-1][-4000:]}"
    return texts


def test_two_processes_train_save_and_restore_into_another_mesh(tmp_path):
    workdir = str(tmp_path / "run")
    logs = run_hosts(workdir, str(tmp_path))

    # each host tokenized only its documents: the shards are disjoint and together the whole corpus
    shard = re.compile(
        r"host (\d) of 2: training documents (range\(.*?\)) of (\d+), evaluation documents (range\(.*?\)) of (\d+)"
    )
    found = [shard.search(text) for text in logs]
    assert all(found), [text[-2000:] for text in logs]
    assert [int(m.group(1)) for m in found] == [0, 1]
    for split, total in ((2, 3), (4, 5)):
        parts = [set(eval(m.group(split))) for m in found]  # noqa: S307 - python's own range repr
        assert not parts[0] & parts[1] and parts[0] | parts[1] == set(range(int(found[0].group(total))))
    counts = [[int(n) for n in re.search(r"(\d+) training and (\d+) evaluation sequences", t).groups()] for t in logs]

    # process 0 alone writes metrics, TensorBoard events, the plot and the progress lines
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [0, 2, 4, 6]  # one line per logged step, not one per host
    assert os.path.isfile(os.path.join(workdir, "curves.png"))
    assert len(os.listdir(os.path.join(workdir, "tensorboard"))) == 1
    assert "step 6/6" in logs[0] and "step 6/6" not in logs[1]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
    # both processes wrote their halves of the (fsdp-sharded) state
    written = [folder_bytes(os.path.join(workdir, "checkpoints", "6", "state", f"ocdbt.process_{i}")) for i in (0, 1)]
    assert min(written) > 0.3 * sum(written), written

    result = subprocess.run(
        [sys.executable, os.path.join("tests", "multihost_check.py"), workdir, *OVERRIDES],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={
            **os.environ,
            "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8",
            "JAX_PLATFORMS": "cpu",
        },
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])

    # the replay in one process built each host's share exactly as that host did
    assert out["hosts"]["sequences"] == counts
    # ... and logged the same metrics: 2 hosts x 4 devices computed what 1 process x 8 devices computes
    assert [r["step"] for r in out["records"]] == [r["step"] for r in records]
    for mine, theirs in zip(out["records"], records):
        for key, value in mine.items():
            np.testing.assert_allclose(theirs[key], value, rtol=1e-5, atol=1e-5, err_msg=f"{key} at {mine['step']}")
    # the checkpoint both processes wrote restores into a (data 2, fsdp 2, tensor 2) mesh of one process
    assert out["checkpoint_steps"] == [3, 6] and out["restored_step"] == out["restored_state_step"] == 6
    assert out["on_target_mesh"] and out["sharded_leaves"] > 0
    assert out["hosts"]["param_change"] > 1e-3, "training changed nothing"
    assert out["param_diff"] <= 1e-5 and out["opt_state_diff"] <= 1e-5 and out["rng_equal"], out
    # with both hosts' data positions, so each host resumes its own shard
    assert out["data_state"]["iterators"] == out["hosts"]["iterators"]
    assert out["data_state"]["iterator"] == out["hosts"]["iterators"][0]
