"""SpanBERT-base (L12/H768/A12, cased WordPiece 28996): span masking + the span-boundary objective, no NSP."""

from bert_jax.config_base import spanbert_config


def get_config():
    return spanbert_config(num_layers=12, hidden_size=768, num_heads=12, intermediate_size=3072, embedding_size=768)
