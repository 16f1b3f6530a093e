"""Data: tokenizers, text sources, pretraining instances and task datasets."""
