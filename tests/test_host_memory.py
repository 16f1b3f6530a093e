"""The main command keeps freed host memory, so a step's fresh buffers stop page-faulting (bert_jax/host_memory.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="mallopt's settings are glibc's (Linux)",
)

# Runs gradient steps through the main command's entry point (`bert_jax.main.run`) and reports the fewest
# minor page faults of a step once the loop is warm.
PROBE = """
from bert_jax.main import run  # first, as `python -m bert_jax.main` imports it: before numpy starts a thread
import json, resource, sys
import jax, jax.numpy as jnp

def probe(argv):
    # a training-like loop: gradient steps of a two-layer MLP, whose activations XLA allocates every call
    x = jnp.ones((4096, 1024), jnp.float32)
    params = (jnp.full((1024, 2048), 0.01), jnp.full((2048, 1024), 0.01))
    loss = lambda p: jnp.sum(jnp.tanh(jnp.tanh(x @ p[0]) @ p[1]) ** 2)
    step = jax.jit(lambda p: jax.tree.map(lambda w, g: w - 1e-6 * g, p, jax.grad(loss)(p)))
    faults = []
    for _ in range(12):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        params = step(params)
        jax.block_until_ready(params)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"faults": min(faults[2:])}))

sys.argv = ["main", "--config=configs/bert_tiny.py"]
run(probe)
"""


def _faults(**env: str) -> int:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    environment.update(JAX_PLATFORMS="cpu", **env)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # --config=configs/... is relative to it
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=root, env=environment, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])["faults"]


def test_main_command_stops_per_call_page_faults():
    kept = _faults()
    default = _faults(BERT_JAX_RETAIN_FREED_MEMORY="0")
    # glibc's defaults hand the step's buffers back and fault them in again (28,603 pages on the dev VM)
    assert default > 4096, f"glibc's defaults fault in only {default} pages per step; the probe no longer shows it"
    assert kept < default // 10, f"with freed memory retained a step faults {kept} pages (defaults: {default})"


def test_switch_and_user_settings_leave_malloc_alone(monkeypatch):
    from bert_jax.host_memory import ENV_SWITCH, retain_freed_memory

    monkeypatch.setenv(ENV_SWITCH, "0")
    assert retain_freed_memory() is False
    monkeypatch.delenv(ENV_SWITCH)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert retain_freed_memory() is False
