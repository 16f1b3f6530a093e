"""SWAG multiple choice (train.csv / val.csv of rowanz/swagaf): dev accuracy.

BERT's SWAG recipe (Devlin et al. 2019, section 4.4): 3 epochs, learning
rate 2e-5, batch 16. Contexts and endings are short; 128 sub-tokens per
(context, ending) pair truncate almost nothing. Point `--config.data.dir`
at the folder holding the CSVs.
"""

from bert_jax.config_finetune import finetune_config


def get_config():
    return finetune_config("swag", learning_rate=2e-5, batch_size=16, max_seq_length=128)
