"""`load_pretrained` / `save_pretrained`: one entry point for every checkpoint kind.

Two layouts are read: a Hugging Face directory (`config.json` + weights, also
sentence-transformers folders whose weights sit at the root) and bert_jax's
own export (`bert_jax_config.json` + `params.safetensors`). Nothing is
unpickled. Writing goes to a temporary directory renamed into place, so an
interrupted save never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from bert_jax import fileio
from bert_jax.config import apply_overrides
from bert_jax.config_base import base_config
from bert_jax.convert.hf import hf_to_params, params_to_hf
from bert_jax.convert.hf_config import family_of, hf_config_from_model, model_config_from_hf
from bert_jax.convert.name_maps import FAMILIES
from bert_jax.convert.weights_io import read_hf_weights, read_safetensors, write_safetensors
from bert_jax.errors import CheckpointError
from bert_jax.models import BertModel, build_model

HF_CONFIG = "config.json"
NATIVE_CONFIG = "bert_jax_config.json"
NATIVE_PARAMS = "params.safetensors"


def is_hf_checkpoint(path: str) -> bool:
    return fileio.isfile(os.path.join(path, HF_CONFIG)) and not fileio.isfile(os.path.join(path, NATIVE_CONFIG))


def _read_json(path: str) -> dict:
    try:
        with fileio.open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot be read as JSON ({e})") from e


def _load_hf(path: str) -> tuple[ml_collections.ConfigDict, dict]:
    config_path = os.path.join(path, HF_CONFIG)
    hf_config = _read_json(config_path)
    family_of(hf_config, config_path, set())  # fails on an unsupported architecture before reading weights
    tensors, source = read_hf_weights(path)
    model_cfg = model_config_from_hf(hf_config, config_path, set(tensors))
    family, _ = family_of(hf_config, config_path, set(tensors))
    return model_cfg, hf_to_params(tensors, family, model_cfg, source)


def _load_native(path: str) -> tuple[ml_collections.ConfigDict, dict, ml_collections.ConfigDict]:
    """A bert_jax export (params.safetensors) or a training workdir / checkpoint folder (orbax)."""
    config = ml_collections.ConfigDict(_read_json(os.path.join(path, NATIVE_CONFIG)))
    params_path = os.path.join(path, NATIVE_PARAMS)
    if fileio.isfile(params_path):
        flat = read_safetensors(params_path)
        params = unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
    elif fileio.isdir(os.path.join(path, "checkpoints")):
        params, params_path = _latest_training_params(os.path.join(path, "checkpoints"))
    else:
        raise CheckpointError(f"{path}: has {NATIVE_CONFIG} but neither {NATIVE_PARAMS} nor checkpoints/")
    _check_shapes(build_model(config), params, params_path)
    return config.model, params, config


def _latest_training_params(directory: str) -> tuple[dict, str]:
    """Parameters of the newest readable orbax step under a workdir's checkpoints/ (read-only)."""
    if not fileio.isdir(directory):
        raise CheckpointError(f"{directory}: no such checkpoint directory (a run saves one with its first checkpoint)")
    steps = sorted((int(name) for name in fileio.listdir(directory) if name.isdigit()), reverse=True)
    errors = []
    for step in steps:
        try:
            return _training_params(os.path.join(directory, str(step), "state"))
        except CheckpointError as e:
            errors.append(str(e))
    raise CheckpointError(f"{directory}: no readable checkpoint ({'; '.join(errors) or 'no steps'})")


def _training_params(state_dir: str) -> tuple[dict, str]:
    import orbax.checkpoint as ocp

    try:
        state = ocp.StandardCheckpointer().restore(fileio.absolute(state_dir))
    except Exception as e:  # noqa: BLE001 - orbax raises many types for unreadable steps
        raise CheckpointError(f"{state_dir}: cannot be restored ({e})") from e
    return jax.tree.map(np.asarray, state["params"]), state_dir


def _check_shapes(model: BertModel, params: dict, source: str) -> None:
    from bert_jax.models import param_shapes

    want = {"/".join(k): tuple(v.shape) for k, v in flatten_dict(param_shapes(model)).items()}
    have = {"/".join(k): tuple(np.shape(v)) for k, v in flatten_dict(params).items()}
    missing = sorted(set(want) - set(have))
    if missing:
        raise CheckpointError(f"{source}: missing tensor(s) {', '.join(missing[:8])} ({len(missing)} in all)")
    wrong = [f"{k}: file has {have[k]}, model needs {want[k]}" for k in sorted(want) if have[k] != want[k]]
    if wrong:
        raise CheckpointError(f"{source}: tensor(s) of the wrong shape: " + "; ".join(wrong[:8]))


def load_pretrained(
    path: str | os.PathLike, overrides: Mapping[str, Any] | None = None
) -> tuple[BertModel, dict, ml_collections.ConfigDict]:
    """Loads a checkpoint directory: returns (flax module, params, full config).

    `path` is a Hugging Face checkpoint, a bert_jax export, a training workdir
    (its newest complete checkpoint), or one step's folder `WORKDIR/checkpoints/<step>`.

    `overrides` sets config fields that do not change the weights, e.g.
    `{"model.dtype": "bfloat16", "model.scan_layers": False}`.
    """
    path = os.fspath(path)
    if not fileio.isdir(path):  # local or on a bucket (gs://)
        raise CheckpointError(f"{path}: no such checkpoint directory")
    step_workdir = os.path.dirname(os.path.dirname(fileio.absolute(path)))
    if fileio.isdir(os.path.join(path, "state")) and fileio.isfile(os.path.join(step_workdir, NATIVE_CONFIG)):
        config = ml_collections.ConfigDict(_read_json(os.path.join(step_workdir, NATIVE_CONFIG)))
        params, source = _training_params(os.path.join(path, "state"))
        _check_shapes(build_model(config), params, source)
    elif fileio.isfile(os.path.join(path, NATIVE_CONFIG)):
        _, params, config = _load_native(path)
    elif fileio.isfile(os.path.join(path, HF_CONFIG)):
        model_cfg, params = _load_hf(path)
        config = base_config(model_cfg)
    else:
        raise CheckpointError(
            f"{path}: not a checkpoint directory (no {HF_CONFIG} of a Hugging Face checkpoint, "
            f"no {NATIVE_CONFIG} of a bert_jax export)"
        )
    layout_before = (config.model.scan_layers, config.model.share_layers)
    if overrides:
        apply_overrides(config, overrides)
    if (config.model.scan_layers, config.model.share_layers) != layout_before:
        params = relayout_params(params, config.model, *layout_before)
    params = jax.tree.map(jnp.asarray, params)
    return build_model(config), params, config


def relayout_params(params: dict, cfg, was_scanned: bool, was_shared: bool) -> dict:
    """Converts params between the scanned and the unrolled stack (same weights)."""
    from bert_jax.models.encoder import stack_layer_params, unstack_layer_params

    if was_shared != cfg.share_layers:
        raise CheckpointError("model.share_layers cannot be overridden when loading: it changes the weights")
    if was_shared or was_scanned == cfg.scan_layers:
        return params
    convert = unstack_layer_params if was_scanned else stack_layer_params
    return dict(params, encoder=convert(params["encoder"], cfg.num_layers))


def _write_directory(path: str, write) -> None:
    """Runs `write(tmpdir)` then swaps the result in for `path`, keeping the old one until then."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp-")
    try:
        if os.path.isdir(path):  # keep unrelated files (tokenizer, README) of an existing folder
            for name in os.listdir(path):
                if name not in (HF_CONFIG, NATIVE_CONFIG, NATIVE_PARAMS, "model.safetensors"):
                    src = os.path.join(path, name)
                    (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, os.path.join(tmp, name))
        write(tmp)
        old = None
        if os.path.exists(path):
            old = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.old-")
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _hf_models(params: dict, config: ml_collections.ConfigDict) -> dict[str, tuple[dict, ml_collections.ConfigDict]]:
    """The models a Hugging Face export holds, by subfolder: one at the top, or ELECTRA's two."""
    if "model" in config and config.get("objective") == "electra":
        from bert_jax.models.electra import discriminator_model_config, generator_model_config, split_params

        towers = split_params(params)
        return {
            "discriminator": (towers["discriminator"], discriminator_model_config(config)),
            "generator": (towers["generator"], generator_model_config(config)),
        }
    return {"": (params, config.model if "model" in config else config)}


def save_pretrained(
    path: str | os.PathLike, params: dict, config: ml_collections.ConfigDict, format: str = "hf"
) -> None:
    """Writes params in Hugging Face layout (`format='hf'`, default) or bert_jax's (`'bert_jax'`).

    An ELECTRA pretraining run (`config.objective == 'electra'`, the joint
    generator + discriminator) is written as two Hugging Face folders,
    `path/discriminator` (ElectraForPreTraining) and `path/generator`
    (ElectraForMaskedLM), each complete on its own; in bert_jax's layout it
    stays one joint checkpoint.
    """
    path = os.fspath(path)
    params = jax.tree.map(lambda a: np.asarray(jax.device_get(a), dtype=np.float32), params)
    if format == "hf":
        files = {
            folder: (hf_config_from_model(cfg), params_to_hf(tree, FAMILIES[cfg.family], cfg))
            for folder, (tree, cfg) in _hf_models(params, config).items()
        }

        def write(tmp):
            for folder, (hf_config, tensors) in files.items():
                os.makedirs(os.path.join(tmp, folder), exist_ok=True)
                with open(os.path.join(tmp, folder, HF_CONFIG), "w") as f:
                    json.dump(hf_config, f, indent=2)
                write_safetensors(os.path.join(tmp, folder, "model.safetensors"), tensors, {"format": "pt"})

    elif format == "bert_jax":
        full = config if "model" in config else base_config(config)

        def write(tmp):
            with open(os.path.join(tmp, NATIVE_CONFIG), "w") as f:
                f.write(full.to_json_best_effort(indent=2))
            flat = {"/".join(k): v for k, v in flatten_dict(params).items()}
            write_safetensors(os.path.join(tmp, NATIVE_PARAMS), flat)

    else:
        raise ValueError(f"unknown format {format!r}; use 'hf' or 'bert_jax'")
    _write_directory(path, write)
