"""CoNLL-2003 English NER: first-subword tagging, dev entity F1 as seqeval computes it.

BERT's fine-tuning recipe (Devlin et al. 2019, appendix A.3) picks batch
16/32, learning rate 5e-5/3e-5/2e-5 and 2-4 epochs; 5e-5, 32 and 3 epochs
are inside that grid. With BERT's uncased vocabulary 128 sub-tokens hold
every sentence but 1 of train and 3 of dev; those are split into several
rows (tasks/conll.py), so every word still gets a prediction.
Point `--config.data.dir` at the folder with train.txt / dev.txt / test.txt.
"""

from bert_jax.config_finetune import finetune_config


def get_config():
    return finetune_config("conll2003", learning_rate=5e-5, batch_size=32, max_seq_length=128)
