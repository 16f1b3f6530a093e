"""MT-DNN multi-task fine-tuning: task sampling, the SST-2 + MRPC + CoLA command, frozen heads of undrawn tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bert_jax.training.multitask import TaskSampler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY = dict(num_layers=1, hidden_size=32, num_heads=2, intermediate_size=64, embedding_size=32)
GLUE_SIZES = (67349, 3668, 8551)  # SST-2, MRPC, CoLA training rows
# Dev files as (folder, has header, text columns, label column): read here independently of bert_jax's reader.
DEV = {"sst2": ("SST-2", True, (0,), 1), "mrpc": ("MRPC", True, (3, 4), 0), "cola": ("CoLA", False, (3,), 1)}


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_sampler_shares_follow_size_power_alpha(alpha):
    steps = 40_000
    sampler = TaskSampler(GLUE_SIZES, alpha, seed=3)
    drawn = sampler.tasks(0, steps)
    expected = np.asarray(GLUE_SIZES, float) ** alpha
    expected /= expected.sum()
    np.testing.assert_allclose(sampler.probabilities, expected)
    counts = np.bincount(drawn, minlength=3)
    sigma = np.sqrt(steps * expected * (1 - expected))  # binomial standard deviation of each count
    assert np.all(np.abs(counts - steps * expected) <= 4 * sigma), (counts / steps, expected)
    # Same seed, same draws (also from a fresh sampler, as after a resume); another seed, other draws.
    np.testing.assert_array_equal(TaskSampler(GLUE_SIZES, alpha, seed=3).tasks(0, steps), drawn)
    assert not np.array_equal(TaskSampler(GLUE_SIZES, alpha, seed=4).tasks(0, steps), drawn)


def test_sampler_draw_counts_earlier_draws_of_its_task():
    """draw(step) = (the task, its number of earlier draws): a resumed run takes each task's next batch."""
    sampler = TaskSampler(GLUE_SIZES, 0.5, seed=0)
    drawn = sampler.tasks(0, 3000)  # crosses two block boundaries
    seen = np.zeros(3, int)
    for step, task in enumerate(drawn):
        assert sampler.draw(step) == (task, seen[task])
        seen[task] += 1
    resumed = TaskSampler(GLUE_SIZES, 0.5, seed=0)
    assert [resumed.draw(s) for s in (2999, 1500, 7)] == [sampler.draw(s) for s in (2999, 1500, 7)]


def test_task_list_and_data_folders_errors(tmp_path):
    from bert_jax.errors import ConfigError
    from bert_jax.training.multitask import parse_tasks, task_dir

    assert parse_tasks(" sst2, mrpc ,cola") == ["sst2", "mrpc", "cola"]
    for bad in ("sst2", "sst2,sst2", ""):
        with pytest.raises(ConfigError, match="at least two different tasks"):
            parse_tasks(bad)
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "conll2003").mkdir()
    assert task_dir(str(tmp_path), "sst2") == str(tmp_path / "SST-2")  # the GLUE folder name
    assert task_dir(str(tmp_path), "conll2003") == str(tmp_path / "conll2003")  # else the task's name
    with pytest.raises(ConfigError, match=r"mrpc: none of .*MRPC.*is a folder.*GLUE root"):
        task_dir(str(tmp_path), "mrpc")


def _vocab(tmp_path, glue) -> tuple[str, int]:
    """A whole-word vocab.txt of the three dev sets' words: a real tokenizer file without a checkpoint."""
    words = set()
    for folder, header, texts, _ in DEV.values():
        for fields in _rows(os.path.join(glue, folder, "dev.tsv"), header):
            for column in texts:
                words.update(fields[column].split())
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(SPECIAL + sorted(words)) + "\n")
    return str(path), len(SPECIAL) + len(words)


def _rows(path: str, header: bool) -> list[list[str]]:
    with open(path, encoding="utf-8-sig") as f:
        lines = [line.rstrip("\r\n") for line in f][1 if header else 0 :]
    return [line.split("\t") for line in lines if line.strip()]


def _overrides(glue: str, vocab: str, size: int, **extra) -> list[str]:
    settings = {
        "init_from": "",
        "data.dir": glue,
        "tokenizer.path": vocab,
        "finetune.max_train_examples": 48,
        "finetune.max_eval_examples": 40,
        "batch_size": 16,
        "max_seq_length": 16,  # one padded width: one compiled step per task
        "learning_rate": 3e-3,
        "log_every": 1,
        **{f"model.{k}": v for k, v in {**TINY, "vocab_size": size}.items()},
        **extra,
    }
    return [f"--config.{k}={v}" for k, v in settings.items()]


def _reference_metrics(name: str, predictions_file, glue: str) -> dict[str, float]:
    """The task's official metrics from its predictions file and the dev labels, by scikit-learn."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    folder, header, _, label_column = DEV[name]
    labels = [fields[label_column] for fields in _rows(os.path.join(glue, folder, "dev.tsv"), header)]
    rows = [line.split("\t") for line in predictions_file.read_text().splitlines()[1:]]
    y_true = [int(labels[int(index)]) for index, _ in rows]
    y_pred = [int(p) for _, p in rows]
    accuracy = 100 * accuracy_score(y_true, y_pred)
    if name == "mrpc":
        return {"f1": 100 * f1_score(y_true, y_pred, zero_division=0), "accuracy": accuracy}
    if name == "cola":
        return {"mcc": matthews_corrcoef(y_true, y_pred), "accuracy": accuracy}
    return {"accuracy": accuracy}


def test_mtdnn_command_on_sst2_mrpc_cola(tmp_path, data_dir):
    glue = os.path.join(data_dir, "glue")
    vocab, size = _vocab(tmp_path, glue)
    workdir = tmp_path / "run"
    command = [sys.executable, "-m", "bert_jax.main", "--config=configs/finetune/mtdnn.py", f"--workdir={workdir}"]
    extra = {"total_steps": 6, "eval_every": 3}
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        command + _overrides(glue, vocab, size, **extra), cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]

    results = json.loads((workdir / "eval_results.json").read_text())
    assert {k: list(v) for k, v in results.items()} == {
        "sst2": ["accuracy"],
        "mrpc": ["f1", "accuracy"],
        "cola": ["mcc", "accuracy"],
    }
    for name in DEV:
        predictions = workdir / f"predictions_{name}.tsv"
        assert len(predictions.read_text().splitlines()) == 41  # header + 40 dev examples
        reference = _reference_metrics(name, predictions, glue)
        assert results[name] == pytest.approx(reference, abs=1e-9), name

    # Each step trains the task the sampler draws for it (48 rows each: uniform) and logs under that task's name.
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    sampler = TaskSampler([48, 48, 48], 0.5, seed=0)
    for r in records:
        trained = [name for name in DEV if f"{name}_loss" in r]
        assert trained == [list(DEV)[sampler.draw(r["step"] - 1)[0]]], r
        assert r[f"{trained[0]}_loss"] == r["loss"] and f"{trained[0]}_accuracy" in r

    # Each evaluation logs every task's metrics and their mean (MCC x 100); the kept step has the best mean.
    evals = [r for r in records if "eval_score" in r]
    assert [r["step"] for r in evals] == [3, 6]
    for r in evals:
        mean = (r["eval_sst2_accuracy"] + r["eval_mrpc_f1"] + 100 * r["eval_cola_mcc"]) / 3
        assert r["eval_score"] == pytest.approx(mean)
    best = max(evals, key=lambda r: r["eval_score"])  # the first of equal scores, as the run keeps it
    assert results == {
        name: {metric: best[f"eval_{name}_{metric}"] for metric in metrics} for name, metrics in results.items()
    }
    assert os.listdir(workdir / "best" / "checkpoints") == [str(best["step"])]


def test_sst2_step_leaves_mrpc_and_cola_heads_unchanged(tmp_path, data_dir):
    import jax
    import jax.numpy as jnp
    from flax.traverse_util import flatten_dict

    from bert_jax.config import load_config
    from bert_jax.training import partitioning
    from bert_jax.training.finetune_data import local_rows
    from bert_jax.training.multitask import MultiTaskFineTuner

    glue = os.path.join(data_dir, "glue")
    vocab, size = _vocab(tmp_path, glue)
    overrides = [o[len("--config.") :] for o in _overrides(glue, vocab, size, total_steps=4)]
    tuner = MultiTaskFineTuner(load_config(os.path.join(ROOT, "configs/finetune/mtdnn.py"), overrides), str(tmp_path))

    def batch(name):
        return partitioning.global_batch(local_rows(tuner.order.orders[name].batch(0)), tuner.mesh)

    def leaves(tree, head):  # {path: array} of the leaves under `head` (params or optimizer state)
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        named = {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}
        return {k: v for k, v in named.items() if f"['{head}']" in k}

    def trained_moments(path, x):  # non-zero Adam moments on MRPC's and CoLA's heads, as after steps of theirs
        under = any(isinstance(k, jax.tree_util.DictKey) and k.key in ("mrpc", "cola") for k in path)
        return jnp.full_like(x, 0.01) if under and x.ndim else x

    state = tuner.init_state(0)
    state = state.replace(opt_state=jax.tree_util.tree_map_with_path(trained_moments, state.opt_state))
    before = jax.device_get(state)
    assert sum(len(leaves(before.opt_state, h)) for h in ("mrpc", "cola")) >= 8  # mu and nu of 2 kernels, 2 biases

    sst2 = batch("sst2")
    grads = jax.jit(jax.grad(lambda p: tuner.loss_fn(p, sst2, None, head="sst2")[0]))(state.params)
    for head in ("mrpc", "cola"):
        assert all(np.all(g == 0) for g in flatten_dict(grads[head]).values()), head
    assert all(np.any(g != 0) for g in flatten_dict(grads["sst2"]).values())

    after = jax.device_get(tuner._task_steps["sst2"](state, sst2)[0])  # the run's own (jitted, donating) step
    for head in ("mrpc", "cola"):  # parameters and optimizer state, bit for bit
        for tree in ("params", "opt_state"):
            old, new = leaves(getattr(before, tree), head), leaves(getattr(after, tree), head)
            assert old.keys() == new.keys() and old
            for key in old:
                np.testing.assert_array_equal(new[key], old[key], err_msg=f"{tree}{key}")
    for head in ("sst2", "backbone"):
        old, new = leaves(before.params, head), leaves(after.params, head)
        assert all(not np.array_equal(old[k], new[k]) for k in old), head
    assert int(after.step) == 1 and jnp.isfinite(after.params["sst2"]["classifier"]["kernel"]).all()
