"""RoBERTa-large (L24/H1024/A16, 355M parameters; Liu et al. 2019): lr 4e-4 and 30K warmup steps (Table 9)."""

from bert_jax.config_base import roberta_config


def get_config():
    config = roberta_config(num_layers=24, hidden_size=1024, num_heads=16, intermediate_size=4096, embedding_size=1024)
    config.learning_rate = 4e-4
    config.warmup_steps = 30_000
    return config
