"""The fine-tuning command on a real checkpoint (all-MiniLM-L6-v2) learns SST-2 sentiment in a CI-sized run.

The tiny-model tests (test_finetune_run.py) check the plumbing on random
weights; this one checks that loading a real pretrained encoder, grafting a
fresh head, the schedule and the packed batches add up to a model that
actually learns: dev accuracy far above the majority class after a few
hundred training sentences.

Sizes: SST-2 training sentences are short (WordPiece tokens with [CLS]/[SEP],
MiniLM's uncased vocab: median 10, p99 44, max 66; dev sentences median 25,
max 55), so max_seq_length 64 cuts almost nothing. 1024 training
examples at batch 32 make 32 steps; the dev subset is 200 fixed examples
(bert_jax's `subset`, seed 0), scored once (the end-of-epoch evaluation is
the best one, so the end of the run writes its results instead of scoring
the kept parameters again). Training batches are packed (finetune.pack), their
row counts chosen per run and their train/eval steps compiled ahead of time
(finetune.compile_ahead), as in any fine-tuning run.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter

from bert_jax.config_finetune import finetune_config
from bert_jax.tasks import get_task
from bert_jax.training.finetune_data import subset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_EXAMPLES, DEV_EXAMPLES = 1024, 200
# Measured dev accuracy on the 200-example subset (majority class 53.0%), seed 0, this machine (2 busy cores):
# 73.5 and 73.5 in two runs with these settings (CPU 110 s and 112 s; wall 310 s and 368 s, machine shared);
# 74.0 in three runs after the batch widths became per-run and compiled ahead of time (CPU 75-96 s, wall 44 s
# on the idle machine; bench/RESULTS_finetune.md); 75.0 with packed batches (wall 31 s, CPU 53 s, in the
# fine-tuning tests' run);
# 512 examples at lr 1e-4 gave only 61.0 (the loss had barely moved from ln 2), hence 1024 at 2e-4.
# 65 is 3 binomial standard deviations (sqrt(.53 * .47 / 200) = 3.5 points) above the majority class and
# leaves 8.5 points below the measured value for other CPUs, thread counts and jax versions: a run that
# learned nothing, or a checkpoint that loaded wrongly, fails.
THRESHOLD = 65.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_minilm_sst2_learns(tmp_path, data_dir, minilm_dir):
    sst2 = os.path.join(data_dir, "glue", "SST-2")
    dev = subset(get_task(finetune_config("sst2", data={"dir": sst2})).read("dev"), DEV_EXAMPLES)
    majority = 100.0 * max(Counter(e.label for e in dev).values()) / len(dev)
    print(f"dev subset: {len(dev)} examples, majority class {majority:.1f}%")
    settings = {
        "init_from": minilm_dir,
        "data.dir": sst2,
        "finetune.max_train_examples": TRAIN_EXAMPLES,
        "finetune.max_eval_examples": DEV_EXAMPLES,
        "finetune.num_epochs": 1,
        "batch_size": 32,
        "max_seq_length": 64,
        "learning_rate": 2e-4,
        "log_every": 4,
    }
    command = [sys.executable, "-m", "bert_jax.main", "--config=configs/finetune/sst2.py", f"--workdir={tmp_path}"]
    command += [f"--config.{k}={v}" for k, v in settings.items()]
    cpu, start = _children_cpu(), time.perf_counter()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = json.loads((tmp_path / "eval_results.json").read_text())["accuracy"]
    print(
        f"dev accuracy {accuracy:.1f} (threshold {THRESHOLD}); wall {time.perf_counter() - start:.0f}s, "
        f"CPU {_children_cpu() - cpu:.0f}s"
    )
    assert majority < 60.0  # the threshold means something only on a balanced subset
    assert accuracy > THRESHOLD
