"""Where a fine-tuning run starts: the checkpoint of `init_from`, its tokenizer, and the graft into the task model.

`init_from` is a Hugging Face folder, a bert_jax export or pretraining
workdir (all through `bert_jax.load_pretrained`), or an earlier fine-tuning
workdir (its encoder and, when the sizes match, its head). The encoder's
parameters are copied by key into the task model's `backbone`; parameters
the checkpoint lacks (a pooler) stay freshly initialised and are logged;
pretraining heads are dropped.
"""

from __future__ import annotations

import json
import logging
import os

import jax
import ml_collections
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from bert_jax import fileio
from bert_jax.config_base import model_config, with_defaults_for_unset
from bert_jax.config_finetune import TRAINING_FIELDS
from bert_jax.data.tokenizers import Tokenizer, load_tokenizer
from bert_jax.errors import CheckpointError, ConfigError
from bert_jax.models.task_model import BACKBONE
from bert_jax.tasks.base import Features

log = logging.getLogger(__name__)
NATIVE_CONFIG = "bert_jax_config.json"
# model fields a run may change without changing weights
RUNTIME_FIELDS = ("dtype", "remat_policy", "scan_layers", "scan_unroll")
# pretraining heads and the pooler: the task model sets them itself (task_model.backbone_config)
HEAD_FIELDS = (
    "use_pooler",
    "mlm_head",
    "pair_head",
    "rtd_head",
    "sbo_head",
    "sbo_positions",
    "classifier_dropout_rate",
)


def _finetune_config_of(path: str) -> dict | None:
    file = os.path.join(path, NATIVE_CONFIG)
    if not fileio.isfile(file):  # local or on a bucket (gs://)
        return None
    with fileio.open(file, encoding="utf-8") as f:
        saved = json.load(f)
    return saved if saved.get("task") == "finetune" else None


def load_init(config: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, dict | None, dict]:
    """(model block, checkpoint params or None, the checkpoint's saved config as a dict) for `config.init_from`.

    The architecture comes from the checkpoint: a `model.*` field set to
    something else than both the default and the checkpoint's value is an
    error, not silently dropped. `RUNTIME_FIELDS` and the `TRAINING_FIELDS`
    that are set apply on top of the checkpoint's block.
    """
    path = config.init_from
    if not path:
        return with_defaults_for_unset(config.model), None, {}
    chosen = {k: config.model[k] for k in RUNTIME_FIELDS}
    chosen.update({k: config.model[k] for k in TRAINING_FIELDS if config.model.get(k) is not None})
    saved = _finetune_config_of(path)
    if saved is not None:  # an earlier fine-tuning workdir: {"backbone": ..., "head": ...}
        from bert_jax.pretrained import _latest_training_params

        model_cfg = ml_collections.ConfigDict(saved["model"])
        _check_architecture(config.model, model_cfg, path)  # before reading any weights
        if model_cfg.scan_layers != config.model.scan_layers:
            raise ConfigError("model.scan_layers cannot change when fine-tuning from a fine-tuning workdir")
        params, _ = _latest_training_params(os.path.join(path, "checkpoints"))
        model_cfg.update(chosen)
        return model_cfg, params, saved
    from bert_jax.pretrained import load_pretrained

    _, params, loaded = load_pretrained(path, {f"model.{k}": v for k, v in chosen.items()})
    _check_architecture(config.model, loaded.model, path)
    return loaded.model, {BACKBONE: params}, loaded.to_dict()


def _check_architecture(requested: ml_collections.ConfigDict, checkpoint: ml_collections.ConfigDict, path: str):
    """Raises when a `model.*` field was set (it differs from model_config's default) to another value than the
    checkpoint's: the checkpoint's shapes and layout decide, so the setting could only be ignored."""
    defaults = model_config()
    clashes = [
        f"model.{key}={value!r} (the checkpoint has {checkpoint.get(key)!r})"
        for key, value in requested.items()
        if key not in RUNTIME_FIELDS + TRAINING_FIELDS + HEAD_FIELDS and key in defaults and value != defaults[key]
        if value != checkpoint.get(key)
    ]
    if clashes:
        changeable = ", ".join("model." + k for k in RUNTIME_FIELDS + TRAINING_FIELDS)
        raise ConfigError(
            f"init_from={path} decides the architecture, but the config sets {'; '.join(clashes)}. Drop those "
            f"overrides to fine-tune the checkpoint as it is, or set init_from='' to train that architecture from "
            f"random weights. Fields a run may change: {changeable}"
        )


def graft(fresh: dict, loaded: dict | None, reinit_head: bool, source: str) -> dict:
    """`fresh` task-model params with every tensor `loaded` has for the same key (numpy trees).

    The backbone must match in shape wherever both have a tensor. A head the
    checkpoint already has is reused when its shapes match; otherwise it is
    an error, or a fresh head with `reinit_head`.
    """
    if loaded is None:
        return fresh
    have = flatten_dict(loaded)
    out, kept_fresh = {}, []
    heads_seen: dict[str, list[str]] = {}
    for key, value in flatten_dict(fresh).items():
        name = "/".join(key)
        if key not in have:
            out[key] = value
            if key[0] == BACKBONE:
                kept_fresh.append(name)
            continue
        if tuple(np.shape(have[key])) == tuple(value.shape):
            out[key] = np.asarray(have[key], value.dtype)
        elif key[0] == BACKBONE:
            raise CheckpointError(f"{source}: {name} has shape {np.shape(have[key])}, the model needs {value.shape}")
        else:
            heads_seen.setdefault(key[0], []).append(f"{name}: checkpoint {np.shape(have[key])}, task {value.shape}")
            out[key] = value
    for head, problems in heads_seen.items():
        if not reinit_head:
            raise CheckpointError(
                f"{source}: its head {head!r} does not fit this task ({'; '.join(problems)}); pass "
                f"--config.finetune.reinit_head=True to replace it with a freshly initialised head"
            )
        log.warning("head %r of %s has another size; re-initialised (finetune.reinit_head)", head, source)
        fresh_head = {k: v for k, v in flatten_dict(fresh).items() if k[0] == head}
        out.update(fresh_head)
    if kept_fresh:
        log.warning("not in %s, freshly initialised: %s", source, ", ".join(kept_fresh))
    return unflatten_dict(out)


def _tokenizer_path(config: ml_collections.ConfigDict, saved: dict) -> str:
    if config.tokenizer.path:
        return config.tokenizer.path
    saved_path = saved.get("tokenizer", {}).get("path", "")
    if saved_path:
        return saved_path
    if config.init_from:
        folder = config.init_from
        candidates = [n for n in fileio.listdir(folder) if n.startswith("tokenizer-") and n.endswith(".model")]
        return os.path.join(folder, candidates[0]) if candidates else folder  # a pretraining workdir's own
    raise ConfigError(
        "no tokenizer: init_from is empty, so pass --config.tokenizer.path=vocab.txt (or a .model / vocab.json)"
    )


def task_tokenizer(config: ml_collections.ConfigDict, saved: dict) -> Tokenizer:
    """The checkpoint's tokenizer (or `tokenizer.path`); an error if its vocabulary is not the model's."""
    path = _tokenizer_path(config, saved)
    lower = config.tokenizer.do_lower_case
    hf_options = os.path.join(path, "tokenizer_config.json") if fileio.isdir(path) else ""
    if hf_options and fileio.isfile(hf_options):
        with fileio.open(hf_options, encoding="utf-8") as f:
            lower = json.load(f).get("do_lower_case", lower)
    tokenizer = load_tokenizer(path, do_lower_case=lower)
    if tokenizer.vocab_size != config.model.vocab_size:
        raise ConfigError(
            f"the tokenizer {path!r} has {tokenizer.vocab_size} tokens but the model's vocabulary has "
            f"{config.model.vocab_size}: they belong to different checkpoints. Use the checkpoint's own tokenizer "
            f"(--config.tokenizer.path) or set --config.model.vocab_size for a model trained from scratch"
        )
    config.tokenizer.path = os.path.abspath(path) if os.path.exists(path) else path
    return tokenizer


def check_token_types(features: Features, model_cfg, tokenizer: Tokenizer, what: str) -> None:
    """An error if the rows use token types the model has no embedding for.

    A gather past the end of the table would not fail: XLA clamps the index,
    so a BERT-layout pair fed to a one-type model (RoBERTa) would train on a
    wrong embedding without a word. The tokenizer's `build_inputs` gives a
    RoBERTa-family tokenizer's pairs type 0 only; this catches a tokenizer of
    another family.
    """
    types = features.arrays.get("token_type_ids")
    used = int(types.max()) + 1 if types is not None and types.size else 0
    if used > model_cfg.type_vocab_size:
        raise ConfigError(
            f"{what}: the rows use {used} token types but the model has type_vocab_size={model_cfg.type_vocab_size}: "
            f"{type(tokenizer).__name__} lays out pairs for another model family. Use the checkpoint's own "
            "tokenizer (--config.tokenizer.path)"
        )


def to_numpy(tree):
    return jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree)
