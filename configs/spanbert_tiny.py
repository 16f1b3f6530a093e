"""A tiny SpanBERT (BERT-Tiny shapes, L2/H128/A2) for CPU runs.

SpanBERT's recipe (span masking, span-boundary objective, single segments, no
NSP) at bert_tiny's sizes and run length, so it compares with configs/bert_tiny.py.
The vocabulary follows the tokenizer trained on first use (`tokenizer.vocab_size`).
"""

from bert_jax.config_base import TINY_SIZES, spanbert_config, tiny_run


def get_config():
    return tiny_run(spanbert_config(**TINY_SIZES))
