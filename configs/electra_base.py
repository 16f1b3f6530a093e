"""ELECTRA-Base (Clark et al. 2020, Table 6): discriminator L12/H768/A12, 110M parameters.

Generator 1/3 of the hidden size (hidden 256, 4 heads, intermediate 1024, as
`google/electra-base-generator`). Batch 256 of 512 tokens, lr 2e-4, 766K steps.
"""

from bert_jax.config_base import electra_config


def get_config():
    config = electra_config(
        generator_hidden_fraction=1 / 3,
        max_seq_length=512,
        num_layers=12,
        hidden_size=768,
        num_heads=12,
        intermediate_size=3072,
        embedding_size=768,
    )
    config.batch_size = 256
    config.learning_rate = 2e-4
    config.total_steps = 766_000
    return config
