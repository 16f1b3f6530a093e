"""The CI-sized WikiText-2 pretraining run the learning tests share.

One `python -m bert_jax.main` run per test, as a user would type it:
WikiText-2's validation split (one paragraph per line) for training, its
test split held out, a 2000-piece tokenizer trained on the text, 64-token
rows, 300 steps of 32 rows, evaluations at steps 0, 100, 200 and 300.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_STEPS = [0, 100, 200, 300]


def run_on_wikitext(config_name: str, data_dir: str, workdir, **overrides) -> list[dict]:
    """Trains `configs/<config_name>.py` on WikiText-2 and returns the records of metrics.jsonl."""
    wikitext = os.path.join(data_dir, "wikitext-2")
    settings = {
        "data.source": "text",
        "data.path": f"{wikitext}/valid.txt",
        "data.line_format": "paragraphs",
        "data.eval_path": f"{wikitext}/test.txt",
        "tokenizer.vocab_size": 2000,
        "model.vocab_size": 2000,
        "max_seq_length": 64,
        "masking.max_predictions": 10,
        "total_steps": 300,
        "warmup_steps": 30,
        "log_every": 25,
        "eval_every": 100,
        "checkpoint_every": 300,
        **overrides,
    }
    command = [sys.executable, "-m", "bert_jax.main", f"--config=configs/{config_name}.py", f"--workdir={workdir}"]
    command += [f"--config.{key}={value}" for key, value in settings.items()]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def evaluations(records: list[dict], key: str) -> list[dict]:
    """The evaluation records (those holding `key`), checked to be at the expected steps."""
    evals = [r for r in records if key in r]
    assert [r["step"] for r in evals] == EVAL_STEPS, [r["step"] for r in evals]
    return evals


def training_loss_drop(records: list[dict]) -> float:
    """Mean of the first three logged training losses minus the mean of the last three."""
    train = [r["loss"] for r in records if "loss" in r]
    return sum(train[:3]) / 3 - sum(train[-3:]) / 3


def summary(evals: list[dict], keys: tuple[str, ...]) -> str:
    return f"eval: {[(r['step'], *(round(r[k], 4) for k in keys)) for r in evals]}"
