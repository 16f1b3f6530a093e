"""RACE reading comprehension (train/dev/test folders with high/ and middle/ JSON files): dev accuracy.

Articles run to several hundred sub-tokens, so each (article, question +
option) pair gets 512 and the article is truncated first. Learning rate
1e-5, batch 16 and 4 epochs are the small-rate, few-epoch setting the
RoBERTa/ALBERT RACE runs use; tune for your model. Point
`--config.data.dir` at the RACE folder.
"""

from bert_jax.config_finetune import finetune_config


def get_config():
    return finetune_config("race", learning_rate=1e-5, batch_size=16, max_seq_length=512, finetune={"num_epochs": 4.0})
