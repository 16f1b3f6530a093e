"""ALBERT-xxlarge (L12/H4096/E128, shared layers, 235M in the paper, 223M released)."""

from bert_jax.config_base import albert_config


def get_config():
    return albert_config(num_layers=12, hidden_size=4096, num_heads=64, intermediate_size=16384)
