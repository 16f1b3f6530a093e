"""ERNIE 1.0 base (Sun et al. 2019; L12/H768/A12, ReLU, 18k character vocabulary): knowledge masking."""

from bert_jax.config_base import ernie_config


def get_config():
    return ernie_config(num_layers=12, hidden_size=768, num_heads=12, intermediate_size=3072, embedding_size=768)
