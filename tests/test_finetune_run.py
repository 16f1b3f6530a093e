"""The fine-tuning command end to end on a tiny random model (SST-2): outputs, resume, and bad checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bert_jax.config_finetune import finetune_config
from bert_jax.errors import CheckpointError, ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY = dict(num_layers=2, hidden_size=32, num_heads=2, intermediate_size=64, embedding_size=32)


def _vocab(tmp_path, data_dir) -> tuple[str, int]:
    """A whole-word vocab.txt of SST-2's dev words: a real tokenizer file without a pretrained checkpoint."""
    words = set()
    with open(os.path.join(data_dir, "glue", "SST-2", "dev.tsv"), encoding="utf-8") as f:
        for line in list(f)[1:]:
            words.update(line.split("\t")[0].split())
    tokens = SPECIAL + sorted(words)
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n")
    return str(path), len(tokens)


def _overrides(data_dir, vocab: str, size: int, **extra) -> list[str]:
    model = {**TINY, "vocab_size": size}
    settings = {
        "data.dir": os.path.join(data_dir, "glue", "SST-2"),
        "tokenizer.path": vocab,
        "finetune.max_train_examples": 64,
        "finetune.max_eval_examples": 40,
        "finetune.num_epochs": 2,
        "batch_size": 16,
        "max_seq_length": 64,
        "learning_rate": 1e-3,
        "log_every": 2,
        **{f"model.{k}": v for k, v in model.items()},
        **extra,
    }
    return [f"--config.{k}={v}" for k, v in settings.items()]


def _run(workdir, overrides) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bert_jax.main", "--config=configs/finetune/sst2.py", f"--workdir={workdir}"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run(command + overrides, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_tiny_sst2_run_outputs_and_resume(tmp_path, data_dir):
    vocab, size = _vocab(tmp_path, data_dir)
    overrides = _overrides(data_dir, vocab, size)
    full = tmp_path / "run"
    result = _run(full, overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((full / "eval_results.json").read_text())
    predictions = (full / "predictions.tsv").read_text()
    assert set(results) == {"accuracy"} and 0.0 <= results["accuracy"] <= 100.0
    lines = predictions.splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 41  # 40 dev examples
    assert {line.split("\t")[1] for line in lines[1:]} <= {"0", "1"}
    records = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval_accuracy" in r] == [4, 8]  # 64 rows / 16 = 4 steps an epoch
    assert sorted(os.listdir(full / "checkpoints")) == ["4", "8"]
    assert os.listdir(full / "best" / "checkpoints")

    # The run dies after step 4's checkpoint: rerunning the command resumes and ends where it did uninterrupted.
    shutil.rmtree(full / "checkpoints" / "8")
    for name in ("eval_results.json", "predictions.tsv"):
        os.remove(full / name)
    result = _run(full, overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed from step 4" in result.stderr
    assert json.loads((full / "eval_results.json").read_text()) == results
    assert (full / "predictions.tsv").read_text() == predictions


def test_vocab_mismatch_is_a_clear_error(tmp_path, data_dir):
    from bert_jax.training.finetune import FineTuner

    vocab, size = _vocab(tmp_path, data_dir)
    config = finetune_config("sst2", data={"dir": os.path.join(data_dir, "glue", "SST-2")})
    config.model.update(TINY, vocab_size=size + 7)
    config.tokenizer.path = vocab
    with pytest.raises(ConfigError, match=rf"has {size} tokens but the model's vocabulary has {size + 7}"):
        FineTuner(config, str(tmp_path / "w"))


def test_head_size_mismatch_errors_or_reinitialises(tmp_path):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from bert_jax.models.task_model import build_task_model
    from bert_jax.training.finetune_init import graft, to_numpy

    config = finetune_config("mnli")
    config.model.update(TINY, vocab_size=30)

    def params(num_labels, seed):
        model = build_task_model(config.model, (("head", "classification", num_labels),), 0.1)
        return to_numpy(jax.tree.map(lambda x: x, model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 4), jnp.int32))))

    import flax.linen as nn

    three = nn.meta.unbox(params(3, 0)["params"])  # e.g. an MNLI fine-tuning checkpoint
    two = nn.meta.unbox(params(2, 1)["params"])  # the new task's fresh model
    with pytest.raises(CheckpointError, match=r"head 'head' does not fit.*\(32, 3\).*\(32, 2\).*reinit_head=True"):
        graft(two, three, reinit_head=False, source="ckpt")
    grafted = graft(two, three, reinit_head=True, source="ckpt")
    np.testing.assert_array_equal(grafted["head"]["classifier"]["kernel"], two["head"]["classifier"]["kernel"])
    np.testing.assert_array_equal(  # the encoder still comes from the checkpoint
        grafted["backbone"]["encoder"]["layers"]["intermediate"]["kernel"],
        three["backbone"]["encoder"]["layers"]["intermediate"]["kernel"],
    )
    same = graft(three, three, reinit_head=False, source="ckpt")  # a head of the right size is kept
    np.testing.assert_array_equal(same["head"]["classifier"]["kernel"], three["head"]["classifier"]["kernel"])


@pytest.mark.parametrize("head_init, std, largest", [("normal", 0.02, 0.07), ("truncated_normal", 0.0176, 0.04)])
def test_head_init_follows_finetune_head_init(head_init, std, largest):
    """transformers' normal(initializer_range) by default; Google BERT's truncated normal (0.88x the std) on request."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from bert_jax.models.task_model import build_task_model

    config = finetune_config("conll2003")
    config.model.update(TINY, vocab_size=30, hidden_size=256, num_heads=4)
    model = build_task_model(config.model, (("head", "token", 512),), 0.1, head_init)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
    kernel = np.asarray(params["head"]["classifier"]["kernel"])  # 256 x 512: its std is known to ~0.3%
    assert abs(kernel.std() - std) < 0.0003, kernel.std()
    assert abs(kernel).max() > largest if head_init == "normal" else abs(kernel).max() <= largest


def test_unknown_head_init_is_a_config_error():
    from bert_jax.models.task_model import build_task_model

    config = finetune_config("sst2")
    with pytest.raises(ConfigError, match=r"head_init='uniform'.*'normal', 'truncated_normal'"):
        build_task_model(config.model, (("head", "classification", 2),), 0.1, "uniform")


def _hf_checkpoint(tmp_path, architecture: str, **config) -> str:
    from hf_reference import random_hf_model

    folder = str(tmp_path / architecture)
    random_hf_model(architecture, **config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("architecture, saved_rate", [("BertModel", 0.1), ("AlbertModel", 0.0)])
def test_dropout_rates_are_the_checkpoints_unless_set(tmp_path, architecture, saved_rate):
    """A fine-tuning run keeps the checkpoint's dropout (ALBERT v2 has none) unless model.*_dropout_rate is set."""
    from bert_jax.training.finetune_init import load_init

    rates = {"hidden_dropout_prob": saved_rate, "attention_probs_dropout_prob": saved_rate}
    config = finetune_config("sst2", init_from=_hf_checkpoint(tmp_path, architecture, **rates))
    model, _, _ = load_init(config)
    assert (model.hidden_dropout_rate, model.attention_dropout_rate) == (saved_rate, saved_rate)
    config.model.hidden_dropout_rate, config.model.attention_dropout_rate = 0.25, 0.0
    model, _, _ = load_init(config)
    assert (model.hidden_dropout_rate, model.attention_dropout_rate) == (0.25, 0.0)


def test_unset_dropout_is_the_default_without_a_checkpoint():
    from bert_jax.models.task_model import backbone_config
    from bert_jax.training.finetune_init import load_init

    config = finetune_config("sst2")
    assert config.model.hidden_dropout_rate is None  # "the checkpoint's"
    model, loaded, _ = load_init(config)
    assert loaded is None and (model.hidden_dropout_rate, model.attention_dropout_rate) == (0.1, 0.1)
    assert backbone_config(config.model, ["classification"]).attention_dropout_rate == 0.1


def test_an_architecture_override_of_a_checkpoint_is_an_error(tmp_path):
    """`--config.model.num_layers=2` with init_from cannot apply (the weights have 3 layers): say so, do not drop it."""
    from bert_jax.training.finetune_init import load_init

    config = finetune_config("sst2", init_from=_hf_checkpoint(tmp_path, "BertModel"))
    config.model.num_layers, config.model.dtype = 2, "bfloat16"  # dtype is a runtime choice: allowed
    with pytest.raises(ConfigError, match=r"sets model\.num_layers=2 \(the checkpoint has 3\).*init_from=''"):
        load_init(config)
    config.model.num_layers = 3  # the checkpoint's own value: nothing to refuse
    model, _, _ = load_init(config)
    assert (model.num_layers, model.dtype) == (3, "bfloat16")


def test_initializer_range_override_sets_the_fresh_heads_std(tmp_path):
    """model.initializer_range applies over a checkpoint (it only draws fresh tensors); unset it is the checkpoint's."""
    from bert_jax.training.finetune_init import load_init

    config = finetune_config("sst2", init_from=_hf_checkpoint(tmp_path, "BertModel", initializer_range=0.05))
    assert load_init(config)[0].initializer_range == 0.05
    config.model.initializer_range = 0.01
    assert load_init(config)[0].initializer_range == 0.01


def test_build_model_of_a_finetuning_config_uses_the_default_dropout():
    """`bert_jax.build_model(load_config("configs/finetune/..."))`: the unset rates are the defaults, not None."""
    import bert_jax

    config = bert_jax.load_config(os.path.join(ROOT, "configs", "finetune", "sst2.py"))
    assert bert_jax.build_model(config).config.hidden_dropout_rate == 0.1


def test_an_architecture_override_of_a_finetuning_workdir_is_refused_before_reading_weights(tmp_path):
    """init_from an earlier fine-tuning workdir: the saved model block decides, checked before any weight is read
    (this workdir has no checkpoints at all, so reading weights first would fail differently)."""
    from bert_jax.training.finetune_init import NATIVE_CONFIG, load_init

    earlier = finetune_config("sst2")
    earlier.model.update(TINY, vocab_size=30)
    (tmp_path / NATIVE_CONFIG).write_text(json.dumps(earlier.to_dict()))
    config = finetune_config("sst2", init_from=str(tmp_path))
    config.model.num_layers = 4
    with pytest.raises(ConfigError, match=r"model\.num_layers=4 \(the checkpoint has 2\)"):
        load_init(config)


def test_a_finetuning_workdir_without_checkpoints_is_a_checkpoint_error(tmp_path):
    from bert_jax.training.finetune_init import NATIVE_CONFIG, load_init

    earlier = finetune_config("sst2")
    earlier.model.update(TINY, vocab_size=30)
    (tmp_path / NATIVE_CONFIG).write_text(json.dumps(earlier.to_dict()))
    with pytest.raises(CheckpointError, match=r"checkpoints: no such checkpoint directory"):
        load_init(finetune_config("sst2", init_from=str(tmp_path)))
