"""ELECTRA-Tiny: bert_tiny's discriminator (L2/H128/A2) for CPU runs, with a half-width generator.

The generator has hidden 64 (1 head, intermediate 256), as ELECTRA's rule
derives it from `generator_hidden_fraction=0.5`; everything else follows
configs/bert_tiny.py's run sizes.
"""

from bert_jax.config_base import TINY_SIZES, electra_config, tiny_run


def get_config():
    return tiny_run(electra_config(generator_hidden_fraction=0.5, **TINY_SIZES))
