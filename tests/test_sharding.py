"""One train step on 1 and on 8 (fake CPU) devices gives the same loss and parameters; so does accumulation."""

import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_one_and_eight_devices_agree():
    result = subprocess.run(
        [sys.executable, os.path.join("tests", "sharding_check.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(out["one"], out["eight"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["plain"], out["accum"], rtol=1e-5, atol=1e-5)
    assert out["param_diff_eight"] <= 1e-5 and out["param_diff_accum"] <= 1e-5
    assert out["one"][0] != out["one"][-1], "the steps changed nothing"
