"""ELECTRA-Large (Clark et al. 2020, Table 6): discriminator L24/H1024/A16, 335M parameters.

Generator 1/4 of the hidden size (hidden 256, 4 heads, intermediate 1024, 24
layers, as `google/electra-large-generator`). 25% of the tokens masked, batch
2048 of 512 tokens, lr 2e-4, 400K steps (the paper's comparison run; the
released model trained 1.75M).
"""

from bert_jax.config_base import electra_config


def get_config():
    config = electra_config(
        generator_hidden_fraction=0.25,
        mask_rate=0.25,
        max_seq_length=512,
        num_layers=24,
        hidden_size=1024,
        num_heads=16,
        intermediate_size=4096,
        embedding_size=1024,
    )
    config.batch_size = 2048
    config.learning_rate = 2e-4
    config.total_steps = 400_000
    return config
