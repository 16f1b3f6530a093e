"""bert_tiny learns on real text: WikiText-2 validation for training, its test split held out.

A CI-sized run (300 steps of 32 x 64 tokens). Thresholds come from measured
runs and leave room for noise; see the issue note and bench/RESULTS.md for a
longer run and its curve.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_loss_falls_and_heldout_mlm_accuracy_rises(data_dir, tmp_path):
    wikitext = os.path.join(data_dir, "wikitext-2")
    command = [
        sys.executable,
        "-m",
        "bert_jax.main",
        "--config=configs/bert_tiny.py",
        f"--workdir={tmp_path}",
        "--config.data.source=text",
        f"--config.data.path={wikitext}/valid.txt",
        "--config.data.line_format=paragraphs",
        f"--config.data.eval_path={wikitext}/test.txt",
        "--config.tokenizer.vocab_size=2000",
        "--config.model.vocab_size=2000",
        "--config.max_seq_length=64",
        "--config.masking.max_predictions=10",
        "--config.total_steps=300",
        "--config.warmup_steps=30",
        "--config.log_every=25",
        "--config.eval_every=100",
        "--config.checkpoint_every=300",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_mlm_accuracy" in r]
    train = [r["loss"] for r in records if "loss" in r]
    assert [r["step"] for r in evals] == [0, 100, 200, 300]
    first, last = evals[0], evals[-1]
    summary = f"eval: {[(r['step'], round(r['eval_loss'], 3), round(r['eval_mlm_accuracy'], 3)) for r in evals]}"
    assert last["eval_mlm_loss"] < first["eval_mlm_loss"] - THRESHOLDS["eval_mlm_loss_drop"], summary
    assert last["eval_mlm_accuracy"] > first["eval_mlm_accuracy"] + THRESHOLDS["eval_mlm_accuracy_gain"], summary
    assert sum(train[-3:]) / 3 < sum(train[:3]) / 3 - THRESHOLDS["train_loss_drop"], train


# Measured on 2 CPU cores (two runs): held-out MLM loss 7.63 -> 5.16 / 5.08, held-out MLM accuracy
# 0.00 -> 0.179 / 0.186, training loss (mean of the first three logs -> last three) 6.41 -> 5.83 / 6.39 -> 5.68.
# Held-out NSP accuracy stays at the majority rate (~0.75): at 64 tokens many WikiText chunks hold one
# sentence, and BERT's recipe then always draws a random B, so it is not asserted here.
THRESHOLDS = {"eval_mlm_loss_drop": 1.5, "eval_mlm_accuracy_gain": 0.12, "train_loss_drop": 0.3}
