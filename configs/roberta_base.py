"""RoBERTa-base (L12/H768/A12, 125M parameters; Liu et al. 2019)."""

from bert_jax.config_base import roberta_config


def get_config():
    return roberta_config(num_layers=12, hidden_size=768, num_heads=12, intermediate_size=3072, embedding_size=768)
