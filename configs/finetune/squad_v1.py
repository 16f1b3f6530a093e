"""SQuAD v1.1: answer spans, dev exact match / F1 as the official evaluate-v1.1.py computes them.

BERT's README recipe for SQuAD v1.1 (run_squad.py): learning rate 3e-5,
2 epochs, 384-token rows, 128-token doc stride (the windows' defaults live
in config_finetune.py); batch 32 as in the paper's fine-tuning grid.
Point `--config.data.dir` at the folder with train-v1.1.json / dev-v1.1.json,
or split one file by article: `--config.data.train_file=FILE
--config.finetune.squad_split_articles=N` trains on its first N articles and
evaluates on the others.
"""

from bert_jax.config_finetune import finetune_config


def get_config():
    return finetune_config(
        "squad_v1", learning_rate=3e-5, batch_size=32, max_seq_length=384, finetune={"num_epochs": 2.0}
    )
