"""BERT-large (L24/H1024/A16, 340M parameters)."""

from bert_jax.config_base import bert_config


def get_config():
    return bert_config(num_layers=24, hidden_size=1024, num_heads=16, intermediate_size=4096, embedding_size=1024)
