"""ELECTRA-Small (Clark et al. 2020, Table 6): discriminator L12/H256/A4, E=128, 14M parameters.

The generator is the released `google/electra-small-generator`'s: as large as
the discriminator (hidden 256, 4 heads, intermediate 1024; the paper's Table 6
lists 1/4 for its Small runs). Recipe as ELECTRA's code: batch 128 of 128
tokens, lr 5e-4, 1M steps.
"""

from bert_jax.config_base import electra_config


def get_config():
    return electra_config(
        generator_hidden_fraction=1.0,
        num_layers=12,
        hidden_size=256,
        num_heads=4,
        intermediate_size=1024,
        embedding_size=128,
    )
