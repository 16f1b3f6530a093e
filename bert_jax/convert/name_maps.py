"""Data-driven name maps between Hugging Face state dicts and bert_jax parameter trees.

Each family is a `FamilyMap`: a table of (Hugging Face module, bert_jax path,
kind) rows. A kind says how a module's tensors become parameters (transposed
dense kernels, kernels split into heads, LayerNorm weight -> scale, ...), in
both directions, so adding a family means adding a table, not a function.
Names containing `{i}` belong to the per-layer block and are stacked along
the scanned `layers` axis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class TensorRule:
    """One Hugging Face tensor <-> one bert_jax parameter."""

    hf_name: str  # may contain {i}
    path: tuple[str, ...]  # path in the parameter tree, without the layer index
    to_jax: Callable[[np.ndarray, object], np.ndarray]
    to_hf: Callable[[np.ndarray, object], np.ndarray]
    part: str  # 'base', 'layer', 'pooler', 'projection', 'mlm_head', 'pair_head'


def _same(x, cfg):
    return x


def _transpose(x, cfg):
    return np.ascontiguousarray(x.T)


def _head_dim(cfg) -> int:
    return cfg.hidden_size // cfg.num_heads


# Each kind maps a module to (hf suffix, param name, to_jax, to_hf) for its tensors.
KINDS: dict[str, list[tuple[str, str, Callable, Callable]]] = {
    "embedding": [("weight", "embedding", _same, _same)],
    "layer_norm": [("weight", "scale", _same, _same), ("bias", "bias", _same, _same)],
    "dense": [("weight", "kernel", _transpose, _transpose), ("bias", "bias", _same, _same)],
    # q/k/v: torch weight [heads*head_dim, hidden] <-> kernel [hidden, heads, head_dim]
    "dense_to_heads": [
        (
            "weight",
            "kernel",
            lambda x, c: np.ascontiguousarray(x.T).reshape(c.hidden_size, c.num_heads, _head_dim(c)),
            lambda x, c: np.ascontiguousarray(x.reshape(c.hidden_size, -1).T),
        ),
        (
            "bias",
            "bias",
            lambda x, c: x.reshape(c.num_heads, _head_dim(c)),
            lambda x, c: x.reshape(-1),
        ),
    ],
    # attention output: torch weight [hidden, heads*head_dim] <-> kernel [heads, head_dim, hidden]
    "dense_from_heads": [
        (
            "weight",
            "kernel",
            lambda x, c: np.ascontiguousarray(x.T).reshape(c.num_heads, _head_dim(c), c.hidden_size),
            lambda x, c: np.ascontiguousarray(x.reshape(-1, c.hidden_size).T),
        ),
        ("bias", "bias", _same, _same),
    ],
    "tensor": [("", "", _same, _same)],
}


@dataclasses.dataclass(frozen=True)
class FamilyMap:
    """Everything conversion needs to know about one Hugging Face model family."""

    model_type: str
    base_prefix: str  # prefix of the encoder's tensors in *ForPreTraining / *ForMaskedLM
    modules: tuple[tuple[str, str, str, str], ...]  # (hf module, bert_jax path, kind, part)
    layer_index: Callable[[int, object], int]  # layer i -> the {i} written in hf names
    aliases: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    ignored: tuple[str, ...] = ()  # tensors that are buffers or tied copies
    tied_decoder: str = ""  # hf name of the decoder weight tied to the word table
    architectures: dict[tuple[bool, bool], str] = dataclasses.field(default_factory=dict)
    position_ids_from_padding: bool = False  # RoBERTa: positions start after the padding id (config.model knob)
    head_flags: tuple[str, str] = ("mlm_head", "pair_head")  # the config.model flags an architectures key names

    def rules(self, cfg) -> list[TensorRule]:
        """The tensor rules that apply to a model config (optional parts included or not)."""
        wanted = {
            "base": True,
            "layer": True,
            "pooler": cfg.use_pooler,
            "projection": cfg.embedding_size != cfg.hidden_size,
            "mlm_head": cfg.mlm_head,
            "pair_head": cfg.pair_head,
            "rtd_head": cfg.get("rtd_head", False),
        }
        out = []
        for hf_module, path, kind, part in self.modules:
            if not wanted[part]:
                continue
            for suffix, leaf, to_jax, to_hf in KINDS[kind]:
                name = f"{hf_module}.{suffix}" if suffix else hf_module
                full_path = tuple(path.split("/")) + ((leaf,) if leaf else ())
                out.append(TensorRule(name, full_path, to_jax, to_hf, part))
        return out

    def is_head(self, rule: TensorRule) -> bool:
        return rule.part in HEAD_PARTS

    def architecture_key(self, cfg) -> tuple[bool, bool]:
        """The `architectures` key of a config's (or a {flag: bool} dict's) heads.

        BERT's pair head is stored only with its MLM head (BertForPreTraining),
        so without an MLM head it is left out, as before.
        """
        first, second = (bool(cfg.get(flag, False)) for flag in self.head_flags)
        return (first, first and second) if self.head_flags[1] == "pair_head" else (first, second)

    def head_config(self, architecture: str) -> dict[str, bool]:
        """The config.model head flags of one of this family's architectures (every other head off)."""
        key = {name: k for k, name in self.architectures.items()}[architecture]
        return {**dict.fromkeys(HEAD_PARTS, False), **dict(zip(self.head_flags, key))}


HEAD_PARTS = ("mlm_head", "pair_head", "rtd_head")  # parts that are heads; each is also a config.model flag


def _bert_layer(i: int, cfg) -> int:
    if cfg.share_layers:
        raise ValueError(
            "Hugging Face BERT has no layout for shared layers; use model.family='albert' for share_layers=True"
        )
    return i


def _albert_group(i: int, cfg) -> int:
    return 0 if cfg.share_layers else i


_L = "encoder/layers"

BERT = FamilyMap(
    model_type="bert",
    base_prefix="bert.",
    modules=(
        ("embeddings.word_embeddings", "embeddings/word_embeddings", "embedding", "base"),
        ("embeddings.position_embeddings", "embeddings/position_embeddings", "embedding", "base"),
        ("embeddings.token_type_embeddings", "embeddings/token_type_embeddings", "embedding", "base"),
        ("embeddings.LayerNorm", "embeddings/layer_norm", "layer_norm", "base"),
        ("encoder.layer.{i}.attention.self.query", f"{_L}/attention/query", "dense_to_heads", "layer"),
        ("encoder.layer.{i}.attention.self.key", f"{_L}/attention/key", "dense_to_heads", "layer"),
        ("encoder.layer.{i}.attention.self.value", f"{_L}/attention/value", "dense_to_heads", "layer"),
        ("encoder.layer.{i}.attention.output.dense", f"{_L}/attention/output", "dense_from_heads", "layer"),
        ("encoder.layer.{i}.attention.output.LayerNorm", f"{_L}/attention_layer_norm", "layer_norm", "layer"),
        ("encoder.layer.{i}.intermediate.dense", f"{_L}/intermediate", "dense", "layer"),
        ("encoder.layer.{i}.output.dense", f"{_L}/output", "dense", "layer"),
        ("encoder.layer.{i}.output.LayerNorm", f"{_L}/output_layer_norm", "layer_norm", "layer"),
        ("pooler.dense", "pooler/dense", "dense", "pooler"),
        ("cls.predictions.transform.dense", "mlm_head/transform", "dense", "mlm_head"),
        ("cls.predictions.transform.LayerNorm", "mlm_head/layer_norm", "layer_norm", "mlm_head"),
        ("cls.predictions.bias", "mlm_head/bias", "tensor", "mlm_head"),
        ("cls.seq_relationship", "pair_head/classifier", "dense", "pair_head"),
    ),
    layer_index=_bert_layer,
    aliases={"cls.predictions.bias": ("cls.predictions.decoder.bias",)},
    ignored=("embeddings.position_ids", "cls.predictions.decoder.bias"),
    tied_decoder="cls.predictions.decoder.weight",
    architectures={
        (False, False): "BertModel",
        (True, False): "BertForMaskedLM",
        (True, True): "BertForPreTraining",
    },
)

_G = "encoder.albert_layer_groups.{i}.albert_layers.0"

ALBERT = FamilyMap(
    model_type="albert",
    base_prefix="albert.",
    modules=(
        ("embeddings.word_embeddings", "embeddings/word_embeddings", "embedding", "base"),
        ("embeddings.position_embeddings", "embeddings/position_embeddings", "embedding", "base"),
        ("embeddings.token_type_embeddings", "embeddings/token_type_embeddings", "embedding", "base"),
        ("embeddings.LayerNorm", "embeddings/layer_norm", "layer_norm", "base"),
        ("encoder.embedding_hidden_mapping_in", "embeddings/projection", "dense", "projection"),
        (f"{_G}.attention.query", f"{_L}/attention/query", "dense_to_heads", "layer"),
        (f"{_G}.attention.key", f"{_L}/attention/key", "dense_to_heads", "layer"),
        (f"{_G}.attention.value", f"{_L}/attention/value", "dense_to_heads", "layer"),
        (f"{_G}.attention.dense", f"{_L}/attention/output", "dense_from_heads", "layer"),
        (f"{_G}.attention.LayerNorm", f"{_L}/attention_layer_norm", "layer_norm", "layer"),
        (f"{_G}.ffn", f"{_L}/intermediate", "dense", "layer"),
        (f"{_G}.ffn_output", f"{_L}/output", "dense", "layer"),
        (f"{_G}.full_layer_layer_norm", f"{_L}/output_layer_norm", "layer_norm", "layer"),
        ("pooler", "pooler/dense", "dense", "pooler"),
        ("predictions.dense", "mlm_head/transform", "dense", "mlm_head"),
        ("predictions.LayerNorm", "mlm_head/layer_norm", "layer_norm", "mlm_head"),
        ("predictions.bias", "mlm_head/bias", "tensor", "mlm_head"),
        ("sop_classifier.classifier", "pair_head/classifier", "dense", "pair_head"),
    ),
    layer_index=_albert_group,
    aliases={"predictions.bias": ("predictions.decoder.bias",)},
    ignored=("embeddings.position_ids", "predictions.decoder.bias"),
    tied_decoder="predictions.decoder.weight",
    architectures={
        (False, False): "AlbertModel",
        (True, False): "AlbertForMaskedLM",
        (True, True): "AlbertForPreTraining",
    },
)

# RoBERTa is BERT's encoder under 'roberta.' with its own MLM head ('lm_head', no transform sub-module) and no
# pair head; RobertaModel has a pooler, RobertaForMaskedLM none.
ROBERTA = FamilyMap(
    model_type="roberta",
    base_prefix="roberta.",
    modules=tuple(m for m in BERT.modules if m[3] in ("base", "layer", "pooler"))
    + (
        ("lm_head.dense", "mlm_head/transform", "dense", "mlm_head"),
        ("lm_head.layer_norm", "mlm_head/layer_norm", "layer_norm", "mlm_head"),
        ("lm_head.bias", "mlm_head/bias", "tensor", "mlm_head"),
    ),
    layer_index=_bert_layer,
    aliases={"lm_head.bias": ("lm_head.decoder.bias",)},
    ignored=("embeddings.position_ids", "lm_head.decoder.bias"),
    tied_decoder="lm_head.decoder.weight",
    architectures={(False, False): "RobertaModel", (True, False): "RobertaForMaskedLM"},
    position_ids_from_padding=True,
)

# ELECTRA's discriminator and generator are BERT's encoder under 'electra.' with their own heads and, where
# embedding_size != hidden_size, 'embeddings_project' outside the embeddings. One table serves both: the
# discriminator is ElectraForPreTraining (RTD head), the generator ElectraForMaskedLM (MLM head tied to the
# word table); neither has a pooler.
ELECTRA = FamilyMap(
    model_type="electra",
    base_prefix="electra.",
    modules=tuple(m for m in BERT.modules if m[3] in ("base", "layer"))
    + (
        ("embeddings_project", "embeddings/projection", "dense", "projection"),
        ("discriminator_predictions.dense", "rtd_head/dense", "dense", "rtd_head"),
        ("discriminator_predictions.dense_prediction", "rtd_head/prediction", "dense", "rtd_head"),
        ("generator_predictions.dense", "mlm_head/transform", "dense", "mlm_head"),
        ("generator_predictions.LayerNorm", "mlm_head/layer_norm", "layer_norm", "mlm_head"),
        ("generator_lm_head.bias", "mlm_head/bias", "tensor", "mlm_head"),
    ),
    layer_index=_bert_layer,
    ignored=("embeddings.position_ids",),
    tied_decoder="generator_lm_head.weight",
    architectures={
        (False, False): "ElectraModel",
        (True, False): "ElectraForMaskedLM",
        (False, True): "ElectraForPreTraining",
    },
    head_flags=("mlm_head", "rtd_head"),
)

FAMILIES: dict[str, FamilyMap] = {f.model_type: f for f in (BERT, ALBERT, ROBERTA, ELECTRA)}
