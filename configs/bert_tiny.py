"""BERT-Tiny (Turc et al. 2019, L2/H128/A2): the README's laptop-CPU default.

Shapes are the paper's; the run is sized to show falling loss and rising MLM
accuracy on the bundled sample corpus in a few minutes on two CPU cores. The
vocabulary follows the tokenizer trained on first use (`tokenizer.vocab_size`).
"""

from bert_jax.config_base import TINY_SIZES, bert_config, tiny_run


def get_config():
    return tiny_run(bert_config(**TINY_SIZES))
