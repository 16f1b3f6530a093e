"""The main command end to end: outputs, exact resume after SIGKILL, SIGTERM, bad input, memory planning.

Runs are tiny (bert_tiny shapes, a 1000-piece tokenizer, sequences of 64)
so that every subprocess finishes in seconds on two CPU cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import bert_jax
from bert_jax.errors import ConfigError
from bert_jax.training.trainer import NonFiniteLossError, Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    "--config.total_steps=40",
    "--config.log_every=10",
    "--config.eval_every=20",
    "--config.checkpoint_every=10",
    "--config.max_seq_length=64",
    "--config.masking.max_predictions=10",
    "--config.batch_size=16",
    "--config.eval_batches=2",
]


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory) -> str:
    """One small sentencepiece model trained on the sample corpus, shared by the runs below."""
    from bert_jax.data.sample_corpus import write_sample_corpus
    from bert_jax.data.tokenizers import train_sentencepiece

    folder = tmp_path_factory.mktemp("tok")
    corpus = write_sample_corpus(str(folder / "corpus.txt"))
    return train_sentencepiece([corpus], 1000, str(folder / "sp"))


def tiny_overrides(tokenizer_path: str) -> list[str]:
    return TINY + [f"--config.tokenizer.path={tokenizer_path}", "--config.model.vocab_size=1000"]


def main_command(workdir, *extra) -> list[str]:
    return [sys.executable, "-m", "bert_jax.main", "--config=configs/bert_tiny.py", f"--workdir={workdir}", *extra]


def run_main(workdir, *extra, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(main_command(workdir, *extra), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def final_params(workdir) -> dict:
    return bert_jax.load_pretrained(workdir)[1]


def assert_same_params(a: dict, b: dict, atol: float = 1e-6) -> None:
    diffs = jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b))
    assert max(diffs) <= atol, max(diffs)


def test_main_writes_metrics_plot_tensorboard_checkpoints(tmp_path, tokenizer_path):
    result = run_main(tmp_path, *tiny_overrides(tokenizer_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "steps/s" in result.stderr + result.stdout and "ETA" in result.stderr + result.stdout
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 10, 20, 30, 40]
    assert set(records[0]) == {
        "step",
        "eval_loss",
        "eval_mlm_loss",
        "eval_mlm_accuracy",
        "eval_nsp_loss",
        "eval_nsp_accuracy",
    }
    for key in ("loss", "mlm_accuracy", "nsp_accuracy", "learning_rate", "grad_norm", "tokens_per_sec"):
        assert key in records[1], key
    assert "eval_loss" in records[2] and "eval_mlm_accuracy" in records[2] and "eval_nsp_accuracy" in records[2]
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path / "tensorboard"))
    steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
    assert steps == [20, 30, 40]  # keep_checkpoints=3
    # the workdir and one step's folder load like any checkpoint
    model, params, config = bert_jax.load_pretrained(tmp_path)
    assert config.model.vocab_size == 1000
    _, step_params, _ = bert_jax.load_pretrained(tmp_path / "checkpoints" / "30")
    assert jax.tree.structure(step_params) == jax.tree.structure(params)
    # rerunning a finished run does nothing more and keeps the result
    again = run_main(tmp_path, *tiny_overrides(tokenizer_path))
    assert again.returncode == 0
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 5


def test_sigkill_then_rerun_equals_uninterrupted_run(tmp_path, tokenizer_path):
    args = tiny_overrides(tokenizer_path)
    straight = run_main(tmp_path / "straight", *args)
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        main_command(killed, *args), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "20").is_dir() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (killed / "checkpoints" / "20").is_dir(), "the run did not reach its second checkpoint"
    assert not (killed / "checkpoints" / "40").is_dir(), "killed too late to test resuming"
    resumed = run_main(killed, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from the checkpoint of step" in resumed.stderr
    assert_same_params(final_params(tmp_path / "straight"), final_params(killed))


def test_sigterm_saves_and_exits_cleanly(tmp_path, tokenizer_path):
    args = tiny_overrides(tokenizer_path) + ["--config.total_steps=100000", "--config.checkpoint_every=100000"]
    process = subprocess.Popen(
        main_command(tmp_path, *args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 300
    while not (tmp_path / "metrics.jsonl").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()[0][-3000:]
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    assert "SIGTERM: saved step" in output
    assert [s for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()]


def test_corrupt_latest_checkpoint_falls_back_and_is_kept(tmp_path, tokenizer_path):
    args = tiny_overrides(tokenizer_path) + ["--config.total_steps=30"]
    assert run_main(tmp_path, *args).returncode == 0
    for root, _, files in os.walk(tmp_path / "checkpoints" / "30" / "state"):
        for name in files:
            if not name.startswith("_"):
                with open(os.path.join(root, name), "wb") as f:
                    f.write(b"garbage")
    result = run_main(tmp_path, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checkpoint 30 cannot be read" in result.stderr
    assert "resumed from the checkpoint of step 20" in result.stderr
    assert (tmp_path / "checkpoints" / "30.corrupt").is_dir(), "the unreadable checkpoint is kept for inspection"
    assert (tmp_path / "checkpoints" / "30").is_dir(), "step 30 was trained again from step 20"


def test_unknown_field_and_unwritable_workdir(tmp_path):
    result = run_main(tmp_path, "--config.model.hiden_size=3")
    assert result.returncode == 2 and "unknown config field 'model.hiden_size'" in result.stderr
    assert "model.hidden_size" in result.stderr
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = run_main(blocker / "workdir")
    assert result.returncode == 2 and "cannot be written" in result.stderr


def small_config(tokenizer_path, **overrides):
    config = bert_jax.load_config("configs/bert_tiny.py", [a[2:] for a in tiny_overrides(tokenizer_path)])
    bert_jax.config.apply_overrides(config, overrides)
    return config


def test_tokenizer_vocabulary_must_match_the_model(tmp_path, tokenizer_path):
    config = small_config(tokenizer_path, **{"model.vocab_size": 1234})
    with pytest.raises(
        ConfigError, match=r"the tokenizer has 1000 tokens but model.vocab_size is 1234.*vocab_size=1000"
    ):
        Trainer(config, str(tmp_path)).train()


def test_empty_and_missing_corpus(tmp_path, tokenizer_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n  \n")
    config = small_config(tokenizer_path, **{"data.source": "text", "data.path": str(empty)})
    with pytest.raises(ConfigError, match="has no non-empty lines"):
        Trainer(config, str(tmp_path / "w1")).train()
    config = small_config(tokenizer_path, **{"data.source": "text", "data.path": str(tmp_path / "nope*.txt")})
    with pytest.raises(ConfigError, match="matches no file"):
        Trainer(config, str(tmp_path / "w2")).train()


def test_nan_loss_stops_and_names_the_last_good_checkpoint(tmp_path, tokenizer_path):
    config = small_config(
        tokenizer_path, **{"learning_rate": 1e30, "max_grad_norm": 0.0, "warmup_steps": 0, "checkpoint_every": 1}
    )
    with pytest.raises(
        NonFiniteLossError, match=r"loss is nan at step \d+; stopped without saving.*last good checkpoint is step \d+"
    ):
        Trainer(config, str(tmp_path)).train()


def test_oversized_config_stops_before_allocating_with_overrides_that_fit():
    config = bert_jax.load_config("configs/albert_xxlarge.py")
    trainer = Trainer(config, "unused")
    with pytest.raises(ConfigError) as error:
        trainer.compile(available_memory=16 * 1024**3)
    message = str(error.value)
    assert "GiB per device" in message and "but a device has 16.0 GiB" in message
    assert "--config.batch_size=" in message
    # the suggested overrides really fit
    first_option = message.split("overrides that fit: `")[1].split("`")[0]
    flags = dict(f[len("--config.") :].split("=") for f in first_option.split())
    bert_jax.config.apply_overrides(config, {k: int(v) for k, v in flags.items()})
    Trainer(config, "unused").compile(available_memory=16 * 1024**3)


@pytest.mark.parametrize(
    "pair_objective, scheme",
    [("sop", "ngram"), ("none", "whole_word"), ("nsp", "token")],
    ids=["albert", "roberta", "bert"],
)
def test_pair_objectives_and_masking_schemes_train(tmp_path, tokenizer_path, pair_objective, scheme):
    overrides = {
        "pair_objective": pair_objective,
        "masking.scheme": scheme,
        "total_steps": 4,
        "log_every": 2,
        "eval_every": 4,
        "checkpoint_every": 4,
        "optimizer": "lamb" if pair_objective == "sop" else "adamw",
        "masking.dynamic": pair_objective != "none",
    }
    Trainer(small_config(tokenizer_path, **overrides), str(tmp_path)).train()
    last = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    pair_keys = {k for k in last if k.startswith(("nsp", "sop", "eval_nsp", "eval_sop"))}
    expected = (
        set()
        if pair_objective == "none"
        else {f"{p}{pair_objective}_{m}" for p in ("", "eval_") for m in ("loss", "accuracy")}
    )
    assert pair_keys == expected
    assert np.isfinite(last["loss"]) and last["step"] == 4


def test_dynamic_masks_change_static_masks_repeat(tmp_path, tokenizer_path):
    from bert_jax.data.pipeline import build_pretraining_data

    def masks(dynamic: bool, step: int, epoch: int):
        config = small_config(tokenizer_path, **{"masking.dynamic": dynamic, "masking.dupe_factor": 2})
        data = build_pretraining_data(config, str(tmp_path))
        return data.train_batch(np.arange(8), step, epoch)["masked_positions"]

    assert not np.array_equal(masks(True, 0, 0), masks(True, 5, 1))
    assert np.array_equal(masks(False, 0, 0), masks(False, 7, 2))  # same copy: epoch 2 % dupe_factor 2 == 0
    assert not np.array_equal(masks(False, 0, 0), masks(False, 3, 1))
