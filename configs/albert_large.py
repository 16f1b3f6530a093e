"""ALBERT-large (L24/H1024/E128, shared layers, 18M parameters)."""

from bert_jax.config_base import albert_config


def get_config():
    return albert_config(num_layers=24, hidden_size=1024, num_heads=16, intermediate_size=4096)
