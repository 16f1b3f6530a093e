"""RoBERTa-Tiny: bert_tiny's shapes (L2/H128/A2) with RoBERTa's recipe, for CPU runs.

Byte-level BPE trained on the corpus at first use and cached in the workdir,
no NSP, packed FULL-SENTENCES, dynamic masking, Adam b2=0.98. The run is
sized like bert_tiny's; the learning rate is bert_tiny's 1e-3 (RoBERTa's
6e-4 is for batch 8K).
"""

from bert_jax.config_base import TINY_SIZES, roberta_config, tiny_run


def get_config():
    return tiny_run(roberta_config(**TINY_SIZES))
