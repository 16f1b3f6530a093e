"""A tiny ALBERT (L4 shared / H128 / E64 / A2) for CPU runs and the family comparison in bench/.

ALBERT's recipe (SOP, n-gram masking, LAMB, factorized embeddings, one shared
layer) at bert_tiny's width, sized like configs/bert_tiny.py.
"""

from bert_jax.config_base import TINY_SIZES, albert_config, tiny_run


def get_config():
    sizes = dict(TINY_SIZES, num_layers=4)
    del sizes["embedding_size"]  # ALBERT's factorization: E = 64 < H = 128
    config = tiny_run(albert_config(**sizes))
    config.model.embedding_size = 64
    return config
