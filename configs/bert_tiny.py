"""BERT-Tiny (Turc et al. 2019, L2/H128): the laptop-CPU default of the README."""

from bert_jax.config_base import bert_config


def get_config():
    return bert_config(num_layers=2, hidden_size=128, num_heads=2, intermediate_size=512, embedding_size=128)
