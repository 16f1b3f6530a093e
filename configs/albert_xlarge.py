"""ALBERT-xlarge (L24/H2048/E128, shared layers, 60M parameters)."""

from bert_jax.config_base import albert_config


def get_config():
    return albert_config(num_layers=24, hidden_size=2048, num_heads=16, intermediate_size=8192)
