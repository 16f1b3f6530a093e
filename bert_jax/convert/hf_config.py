"""Hugging Face `config.json` <-> `config.model`, and which architectures load.

Field names differ only by renaming (and the activation's spelling), so the
map is a table; family-specific fields (ALBERT's embedding size and layer
groups) are checked here so that an unsupported layout fails before any
tensor is read.
"""

from __future__ import annotations

import ml_collections

from bert_jax.config_base import model_config
from bert_jax.convert.name_maps import FAMILIES, HEAD_PARTS, FamilyMap
from bert_jax.errors import CheckpointError

# (hf field, bert_jax field)
FIELDS = (
    ("vocab_size", "vocab_size"),
    ("hidden_size", "hidden_size"),
    ("num_hidden_layers", "num_layers"),
    ("num_attention_heads", "num_heads"),
    ("intermediate_size", "intermediate_size"),
    ("max_position_embeddings", "max_position_embeddings"),
    ("type_vocab_size", "type_vocab_size"),
    ("layer_norm_eps", "layer_norm_eps"),
    ("initializer_range", "initializer_range"),
    ("pad_token_id", "pad_token_id"),
    ("hidden_dropout_prob", "hidden_dropout_rate"),
    ("attention_probs_dropout_prob", "attention_dropout_rate"),
)
ACTIVATIONS_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
ACTIVATIONS_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


def supported_architectures() -> list[str]:
    return sorted(a for family in FAMILIES.values() for a in family.architectures.values())


def _architecture_from_tensors(family: FamilyMap, tensor_names: set[str]) -> str:
    """For a config.json without `architectures`: the heads whose tensors the file holds."""
    every_head = model_config(family=family.model_type, **dict.fromkeys(HEAD_PARTS, True))
    heads = {r.part: r.hf_name for r in family.rules(every_head)}
    present = {flag: heads.get(flag) in tensor_names for flag in family.head_flags}  # RoBERTa has no pair head
    return family.architectures[family.architecture_key(present)]


def family_of(hf_config: dict, source: str, tensor_names: set[str] | None = None) -> tuple[FamilyMap, str]:
    """The family map and architecture name of a config.json, or a clear error.

    Without `architectures` in the config, the heads are read off the tensor names.
    """
    architectures = hf_config.get("architectures") or []
    model_type = hf_config.get("model_type")
    family = FAMILIES.get(model_type)
    if family is None:
        raise CheckpointError(
            f"{source}: model_type {model_type!r} (architectures {architectures}) is not supported; "
            f"supported architectures: {', '.join(supported_architectures())}"
        )
    if not architectures:
        return family, _architecture_from_tensors(family, tensor_names or set())
    known = set(family.architectures.values())
    if architectures[0] not in known:
        raise CheckpointError(
            f"{source}: architecture {architectures[0]!r} is not supported; "
            f"supported architectures: {', '.join(supported_architectures())}"
        )
    return family, architectures[0]


def model_config_from_hf(hf_config: dict, source: str, tensor_names: set[str]) -> ml_collections.ConfigDict:
    """`config.model` for a Hugging Face config and the names of the tensors its file holds."""
    family, architecture = family_of(hf_config, source, tensor_names)
    cfg = model_config(family=family.model_type)
    for hf_key, key in FIELDS:
        if hf_key in hf_config and hf_config[hf_key] is not None:
            cfg[key] = type(cfg[key])(hf_config[hf_key])
    act = hf_config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS_FROM_HF:
        raise CheckpointError(
            f"{source}: hidden_act {act!r} is not supported; use one of {sorted(ACTIVATIONS_FROM_HF)}"
        )
    cfg.activation = ACTIVATIONS_FROM_HF[act]
    position_type = hf_config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise CheckpointError(f"{source}: position_embedding_type {position_type!r} is not supported (only 'absolute')")
    cfg.embedding_size = int(hf_config.get("embedding_size", cfg.hidden_size))
    cfg.position_ids_from_padding = family.position_ids_from_padding
    if family.model_type == "albert":
        groups, inner = hf_config.get("num_hidden_groups", 1), hf_config.get("inner_group_num", 1)
        if inner != 1 or groups not in (1, cfg.num_layers):
            raise CheckpointError(
                f"{source}: ALBERT with num_hidden_groups={groups}, inner_group_num={inner} is not supported; "
                "bert_jax reads one shared group (num_hidden_groups=1) or one group per layer, inner_group_num=1"
            )
        cfg.share_layers = groups == 1
        cfg.classifier_dropout_rate = float(hf_config.get("classifier_dropout_prob", 0.1))
    cfg.update(family.head_config(architecture))
    poolers = {r.hf_name for r in family.rules(cfg) if r.part == "pooler"}  # ELECTRA has none
    has_pooler = bool((poolers | {family.base_prefix + p for p in poolers}) & tensor_names)
    cfg.use_pooler = cfg.pair_head if any(cfg[h] for h in HEAD_PARTS) else has_pooler
    return cfg


def hf_config_from_model(cfg: ml_collections.ConfigDict) -> dict:
    """A config.json dict that `transformers.AutoConfig` reads back to the same shapes."""
    family = FAMILIES.get(cfg.family)
    if family is None:
        raise CheckpointError(f"model.family {cfg.family!r} has no Hugging Face layout; use one of {sorted(FAMILIES)}")
    if cfg.position_ids_from_padding != family.position_ids_from_padding:
        raise CheckpointError(
            f"Hugging Face {family.model_type} numbers positions "
            + ("after the padding id" if family.position_ids_from_padding else "from 0")
            + f"; set model.position_ids_from_padding={family.position_ids_from_padding} or another model.family"
        )
    heads = family.architecture_key(cfg)
    if heads not in family.architectures:
        flags = ", ".join(f"{flag}={value}" for flag, value in zip(family.head_flags, heads))
        raise CheckpointError(
            f"Hugging Face {family.model_type} has no architecture with {flags} "
            f"(it has {sorted(family.architectures.values())}); "
            f"set model.{family.head_flags[1]}=False or model.{family.head_flags[0]}=False"
        )
    out = {hf_key: cfg[key] for hf_key, key in FIELDS}
    out["model_type"] = family.model_type
    out["architectures"] = [family.architectures[heads]]
    out["hidden_act"] = ACTIVATIONS_TO_HF[cfg.activation]
    out["position_embedding_type"] = "absolute"
    if family.model_type == "electra":
        out["embedding_size"] = cfg.embedding_size  # ElectraModel adds embeddings_project when it differs
    elif family.model_type == "albert":
        out["embedding_size"] = cfg.embedding_size
        out["num_hidden_groups"] = 1 if cfg.share_layers else cfg.num_layers
        out["inner_group_num"] = 1
        out["classifier_dropout_prob"] = cfg.classifier_dropout_rate
    elif cfg.embedding_size != cfg.hidden_size:
        raise CheckpointError(
            "Hugging Face BERT has no factorized embeddings; embedding_size != hidden_size needs model.family='albert'"
        )
    return out
