"""Hugging Face state dict <-> bert_jax parameter tree, driven by `name_maps`.

Loading checks every tensor against the shape the model expects and raises
before returning anything, so a bad checkpoint is never half-loaded.
"""

from __future__ import annotations

import logging

import jax
import ml_collections
import numpy as np

from bert_jax.convert.name_maps import FamilyMap, TensorRule
from bert_jax.errors import CheckpointError
from bert_jax.models import build_model, param_shapes
from bert_jax.models.encoder import stack_layer_params, unstack_layer_params

log = logging.getLogger(__name__)

LEGACY_SUFFIXES = {".weight": (".gamma",), ".bias": (".beta",)}


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def _layer_count(rule: TensorRule, cfg) -> int:
    return 1 if rule.part != "layer" or cfg.share_layers else cfg.num_layers


def _candidates(family: FamilyMap, rule: TensorRule, name: str) -> list[str]:
    """Names a tensor may have in a file: with or without the base prefix, old spellings."""
    names = [name, *family.aliases.get(name, ())]
    for suffix, legacy in LEGACY_SUFFIXES.items():
        if name.endswith(suffix) and "LayerNorm" in name:
            names += [name[: -len(suffix)] + alt for alt in legacy]
    if family.is_head(rule):
        return names
    return [family.base_prefix + n for n in names] + names


def hf_to_params(
    tensors: dict[str, np.ndarray], family: FamilyMap, cfg: ml_collections.ConfigDict, source: str
) -> dict:
    """Builds the full parameter tree (scanned or unrolled, per `cfg.scan_layers`)."""
    scanned_cfg = ml_collections.ConfigDict(cfg.to_dict())
    scanned_cfg.scan_layers = True
    expected = param_shapes(build_model(scanned_cfg))
    params, used, missing, bad_shapes = {}, set(), [], []
    for rule in family.rules(cfg):
        slices = []
        for i in range(_layer_count(rule, cfg)):
            name = rule.hf_name.format(i=family.layer_index(i, cfg))
            found = next((n for n in _candidates(family, rule, name) if n in tensors), None)
            if found is None:
                missing.append(name)
                continue
            used.add(found)
            slices.append(rule.to_jax(np.asarray(tensors[found], dtype=np.float32), cfg))
        if len(slices) != _layer_count(rule, cfg):
            continue
        value = np.stack(slices) if rule.part == "layer" and not cfg.share_layers else slices[0]
        want = _get(expected, rule.path).shape
        if value.shape != tuple(want):
            bad_shapes.append(
                f"{rule.hf_name} -> {'/'.join(rule.path)}: file has {value.shape}, model needs {tuple(want)}"
            )
            continue
        _set(params, rule.path, value)
    if missing:
        raise CheckpointError(
            f"{source}: missing tensor(s) {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''} "
            f"({len(missing)} in all); the file does not match its config.json"
        )
    if bad_shapes:
        raise CheckpointError(f"{source}: tensor(s) of the wrong shape: " + "; ".join(bad_shapes))
    ignored = set(family.ignored) | {family.base_prefix + n for n in family.ignored} | {family.tied_decoder}
    unused = sorted(set(tensors) - used - ignored)
    if unused:
        log.warning("%s: %d tensor(s) not used by the model: %s", source, len(unused), ", ".join(unused[:10]))
    if family.tied_decoder in tensors and cfg.mlm_head:
        word = _get(params, ("embeddings", "word_embeddings", "embedding"))
        if not np.allclose(tensors[family.tied_decoder], word):
            log.warning("%s: %s differs from the word embeddings; bert_jax ties them", source, family.tied_decoder)
    if not cfg.scan_layers and not cfg.share_layers:
        params["encoder"] = unstack_layer_params(params["encoder"], cfg.num_layers)
    return params


def params_to_hf(params: dict, family: FamilyMap, cfg: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """The state dict of the matching Hugging Face architecture, base prefix included where it uses one."""
    params = jax.tree.map(lambda a: np.asarray(a, dtype=np.float32), params)
    if not cfg.scan_layers and not cfg.share_layers:
        params = dict(params, encoder=stack_layer_params(params["encoder"], cfg.num_layers))
    prefix = family.base_prefix if any(family.architecture_key(cfg)) else ""  # a model with heads nests its base
    out = {}
    for rule in family.rules(cfg):
        value = np.asarray(_get(params, rule.path))
        for i in range(_layer_count(rule, cfg)):
            name = rule.hf_name.format(i=family.layer_index(i, cfg))
            piece = value[i] if rule.part == "layer" and not cfg.share_layers else value
            out[name if family.is_head(rule) else prefix + name] = np.ascontiguousarray(rule.to_hf(piece, cfg))
    return out  # the decoder is tied to the word table; transformers re-ties it on load, as it saves
