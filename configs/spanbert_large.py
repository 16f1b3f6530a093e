"""SpanBERT-large (L24/H1024/A16, cased WordPiece 28996): span masking + the span-boundary objective, no NSP."""

from bert_jax.config_base import spanbert_config


def get_config():
    return spanbert_config(num_layers=24, hidden_size=1024, num_heads=16, intermediate_size=4096, embedding_size=1024)
