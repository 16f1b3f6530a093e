"""One command pretrains every family: `python -m bert_jax.main --config=configs/<family>_<size>.py`.

Each family's real size config (not a tiny stand-in) runs on the bundled
sample corpus for two steps with its own objective, tokenizer kind and
masking scheme; only the depth, batch and sequence length are cut so that
the whole table fits in CI. The check is that the command trains the
objective the family is about: its metrics appear, finite, in
metrics.jsonl, and a checkpoint is written.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAMILY_METRICS = {  # config -> metrics its objective must log
    "bert_base": ("mlm_loss", "nsp_loss"),
    "albert_base": ("mlm_loss", "sop_loss"),
    "roberta_base": ("mlm_loss",),
    "spanbert_base": ("mlm_loss", "sbo_loss"),
    "ernie_base": ("mlm_loss",),
    "electra_small": ("mlm_loss", "rtd_loss", "rtd_accuracy"),
}


@pytest.mark.parametrize("name", sorted(FAMILY_METRICS))
def test_one_command_pretrains_the_family(name, tmp_path):
    command = [
        sys.executable,
        "-m",
        "bert_jax.main",
        f"--config=configs/{name}.py",
        f"--workdir={tmp_path}",
        "--config.total_steps=2",
        "--config.batch_size=4",
        "--config.max_seq_length=64",
        "--config.model.num_layers=2",
        "--config.log_every=1",
        "--config.eval_every=2",
        "--config.eval_batches=1",
        "--config.checkpoint_every=2",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if "loss" in r]
    assert [r["step"] for r in trained] == [1, 2]
    for metric in FAMILY_METRICS[name] + ("loss",):
        for record in trained:
            assert metric in record, (metric, sorted(record))
            assert math.isfinite(record[metric]), (metric, record[metric])
        assert math.isfinite(records[-1][f"eval_{metric}"]), records[-1]
    assert (tmp_path / "checkpoints" / "2").is_dir()
