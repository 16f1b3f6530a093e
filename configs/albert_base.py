"""ALBERT-base (L12/H768/E128, shared layers, 12M parameters)."""

from bert_jax.config_base import albert_config


def get_config():
    return albert_config(num_layers=12, hidden_size=768, num_heads=12, intermediate_size=3072)
