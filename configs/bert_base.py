"""BERT-base (L12/H768/A12, 110M parameters)."""

from bert_jax.config_base import bert_config


def get_config():
    return bert_config(num_layers=12, hidden_size=768, num_heads=12, intermediate_size=3072, embedding_size=768)
