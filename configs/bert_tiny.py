"""BERT-Tiny (Turc et al. 2019, L2/H128/A2): the README's laptop-CPU default.

Shapes are the paper's; the run is sized to show falling loss and rising MLM
accuracy on the bundled sample corpus in a few minutes on two CPU cores. The
vocabulary follows the tokenizer trained on first use (`tokenizer.vocab_size`).
"""

from bert_jax.config_base import bert_config


def get_config():
    config = bert_config(num_layers=2, hidden_size=128, num_heads=2, intermediate_size=512, embedding_size=128)
    config.model.vocab_size = config.tokenizer.vocab_size = 4096
    config.max_seq_length = 128
    config.masking.max_predictions = 20
    config.batch_size = 32
    config.total_steps = 1500
    config.warmup_steps = 150
    config.learning_rate = 1e-3
    config.log_every = 50
    config.eval_every = 250
    config.checkpoint_every = 250
    return config
