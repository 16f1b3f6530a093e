"""Hugging Face <-> bert_jax parameter maps; `python -m bert_jax.convert` converts directories."""
