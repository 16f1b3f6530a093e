"""SQuAD v2.0: answer spans or no answer ([CLS]), metrics as the official evaluate-v2.0.py computes them.

BERT's README recipe for SQuAD v2.0 (run_squad.py with
version_2_with_negative): learning rate 5e-5, 2 epochs, 384-token rows,
128-token doc stride, batch 24, null_score_diff_threshold 0 (tune it on dev
with the best_f1_thresh the metrics report). Point `--config.data.dir` at
the folder with train-v2.0.json / dev-v2.0.json.
"""

from bert_jax.config_finetune import finetune_config


def get_config():
    return finetune_config(
        "squad_v2", learning_rate=5e-5, batch_size=24, max_seq_length=384, finetune={"num_epochs": 2.0}
    )
