"""Parameter counts: exactly Hugging Face's for the official configurations, next to the papers' figures.

Counts are embeddings + encoder + pooler (no pretraining heads), computed
with `jax.eval_shape` and, for transformers, on the meta device: nothing is
allocated, so even ALBERT-xxlarge costs milliseconds.
"""

from __future__ import annotations

import pytest
import torch
import transformers

import bert_jax
from bert_jax.models import count_params

# The official configuration of each released checkpoint (config.json on the Hugging Face hub).
OFFICIAL = {
    "bert_base": (
        "bert-base-uncased",
        transformers.BertConfig,
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    ),
    "bert_large": (
        "bert-large-uncased",
        transformers.BertConfig,
        dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    ),
    "spanbert_base": (
        "SpanBERT/spanbert-base-cased",
        transformers.BertConfig,
        dict(vocab_size=28996, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    ),
    "spanbert_large": (
        "SpanBERT/spanbert-large-cased",
        transformers.BertConfig,
        dict(vocab_size=28996, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    ),
    "albert_base": (
        "albert-base-v2",
        transformers.AlbertConfig,
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    ),
    "albert_large": (
        "albert-large-v2",
        transformers.AlbertConfig,
        dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    ),
    "albert_xlarge": (
        "albert-xlarge-v2",
        transformers.AlbertConfig,
        dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=16, intermediate_size=8192),
    ),
    "albert_xxlarge": (
        "albert-xxlarge-v2",
        transformers.AlbertConfig,
        dict(hidden_size=4096, num_hidden_layers=12, num_attention_heads=64, intermediate_size=16384),
    ),
    "roberta_base": (
        "roberta-base",
        transformers.RobertaConfig,
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    ),
    "roberta_large": (
        "roberta-large",
        transformers.RobertaConfig,
        dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    ),
    "electra_small": (
        "google/electra-small-discriminator",
        transformers.ElectraConfig,
        dict(embedding_size=128, hidden_size=256, num_hidden_layers=12, num_attention_heads=4, intermediate_size=1024),
    ),
    "electra_base": (
        "google/electra-base-discriminator",
        transformers.ElectraConfig,
        dict(embedding_size=768, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    ),
    "electra_large": (
        "google/electra-large-discriminator",
        transformers.ElectraConfig,
        dict(
            embedding_size=1024, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096
        ),
    ),
}
ALBERT_COMMON = dict(
    vocab_size=30000, embedding_size=128, hidden_act="gelu_new", num_hidden_groups=1, inner_group_num=1
)
BERT_COMMON = dict(vocab_size=30522, hidden_act="gelu")
ROBERTA_COMMON = dict(
    vocab_size=50265,
    hidden_act="gelu",
    max_position_embeddings=514,
    type_vocab_size=1,
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)
# config class -> (model class, the fields every released size shares)
HF_MODELS = {
    transformers.BertConfig: (transformers.BertModel, BERT_COMMON),
    transformers.AlbertConfig: (transformers.AlbertModel, ALBERT_COMMON),
    transformers.RobertaConfig: (transformers.RobertaModel, ROBERTA_COMMON),
    transformers.ElectraConfig: (transformers.ElectraModel, dict(vocab_size=30522, hidden_act="gelu")),
}
# (paper figure in millions, source)
PAPER = {
    "bert_base": (110, "BERT §3"),
    "bert_large": (340, "BERT §3"),
    "spanbert_base": (110, "SpanBERT §4.1: BERT-base shapes; the cased 28,996-token vocabulary gives 108M"),
    "spanbert_large": (340, "SpanBERT §4.1: BERT-large shapes; the cased 28,996-token vocabulary gives 334M"),
    "albert_base": (12, "ALBERT Table 1"),
    "albert_large": (18, "ALBERT Table 1"),
    "albert_xlarge": (60, "ALBERT Table 1"),
    "albert_xxlarge": (235, "ALBERT Table 1; the released v2 checkpoint has ~223M"),
    "albert_base_not_shared": (89, "ALBERT Table 4"),
    "roberta_base": (125, "fairseq roberta.base; RoBERTa §4.4: the 50K BPE adds ~15M to BERT-base"),
    "roberta_large": (355, "fairseq roberta.large; RoBERTa §4.4: the 50K BPE adds ~20M to BERT-large"),
    "electra_small": (14, "ELECTRA Table 1 (the discriminator; 13.5M rounded)"),
    "electra_base": (110, "ELECTRA Table 1 (the discriminator, no pooler)"),
    "electra_large": (335, "ELECTRA Table 2 (the discriminator, no pooler)"),
}
PAPER_REL_TOLERANCE = {"electra_small": 0.05}  # 13.5M printed as 14M


def hf_count(config_cls, **fields) -> int:
    model_cls, common = HF_MODELS[config_cls]
    with torch.device("meta"):
        model = model_cls(config_cls(**{**common, **fields}))
    return sum(p.numel() for p in model.parameters())


def ours(name: str, **overrides) -> int:
    # config.model alone: for ELECTRA the discriminator (the whole config builds generator + discriminator)
    return count_params(bert_jax.build_model(bert_jax.load_config(f"configs/{name}.py", overrides).model))


def rows():
    for name, (hf_name, config_cls, fields) in OFFICIAL.items():
        yield name, hf_name, ours(name), hf_count(config_cls, **fields)
    yield (
        "albert_base_not_shared",
        "albert-base-v2, 12 groups",
        ours("albert_base", **{"model.share_layers": False}),
        hf_count(transformers.AlbertConfig, **OFFICIAL["albert_base"][2], num_hidden_groups=12),
    )


def test_counts_equal_transformers_and_match_papers(capsys):
    table = list(rows())
    with capsys.disabled():
        print("\n| config | reference | bert_jax | transformers | paper | note |")
        print("|---|---|---:|---:|---:|---|")
        for name, hf_name, mine, theirs in table:
            paper, source = PAPER[name]
            print(f"| {name} | {hf_name} | {mine:,} | {theirs:,} | {paper}M | {source} |")
    for name, _, mine, theirs in table:
        assert mine == theirs, name
        paper, _ = PAPER[name]
        if name == "albert_xxlarge":  # the paper's 235M is not the released model's size
            assert mine == pytest.approx(223e6, rel=0.01), "the released ALBERT-xxlarge has ~223M"
        else:  # the papers round to the nearest million or so
            assert mine == pytest.approx(paper * 1e6, rel=PAPER_REL_TOLERANCE.get(name, 0.03)), name


def test_heads_add_parameters_but_tie_the_decoder():
    model = bert_jax.build_model(bert_jax.load_config("configs/bert_base.py"))
    heads = count_params(model, include_heads=True) - count_params(model)
    hidden, vocab = 768, 30522
    # transform dense + LayerNorm + decoder bias + NSP classifier; no second vocab x hidden table
    assert heads == hidden * hidden + hidden + 2 * hidden + vocab + 2 * hidden + 2
