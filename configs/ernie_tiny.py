"""ERNIE with BERT-Tiny's shapes (L2/H128/A2): knowledge masking on a laptop CPU.

Sized like `bert_tiny`; pass Chinese text (`--config.data.path`, e.g. with
`--config.data.line_format=fortunes`) and a phrase/entity lexicon
(`--config.masking.lexicon`) to see phrase and entity units at work.
"""

from bert_jax.config_base import TINY_SIZES, ernie_config, tiny_run


def get_config():
    return tiny_run(ernie_config(**TINY_SIZES))
