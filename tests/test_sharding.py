"""One train step on 1 and on 8 (fake CPU) devices gives the same loss and parameters; so does accumulation."""

import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_layout_matches_one_device_and_fsdp_shrinks_per_device_bytes():
    """Data parallel, FSDP, tensor parallel and their mix on 8 fake devices: the same step as one device."""
    result = subprocess.run(
        [sys.executable, os.path.join("tests", "sharding_check.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["one"][0] != out["one"][-1], "the steps changed nothing"
    layouts = out["layouts"]
    for name, r in layouts.items():
        np.testing.assert_allclose(out["one"], r["losses"], rtol=1e-5, atol=1e-5, err_msg=name)
        assert r["param_diff"] <= 1e-5, (name, r["param_diff"])
        # what the arrays hold per device is what the planner computes from the shardings
        assert r["param_bytes"] == r["planned_param_bytes"], name
    total = layouts["data8"]["total_param_bytes"]
    assert layouts["data8"]["param_bytes"] == total  # data parallel: replicated
    # FSDP: every matrix and embedding is split 8 ways over its embed axis; only biases stay whole
    assert total / 8 <= layouts["fsdp8"]["param_bytes"] <= total / 8 * 1.05
    assert layouts["fsdp8"]["opt_bytes"] <= 2 * total / 8 * 1.05  # Adam's two moments follow their parameters
    assert total / 4 <= layouts["data2_tensor4"]["param_bytes"] <= total / 4 * 1.05  # heads, FFN, vocabulary
    assert layouts["data2_fsdp2_tensor2"]["param_bytes"] <= total / 4 * 1.05
    np.testing.assert_allclose(out["plain"], out["accum"], rtol=1e-5, atol=1e-5)
    assert out["param_diff_accum"] <= 1e-5
