"""QNLI (question / sentence entailment): accuracy, BERT's GLUE recipe.

python -m bert_jax.main --config=configs/finetune/qnli.py --config.init_from=CHECKPOINT \
    --config.data.dir=GLUE/QNLI --workdir=DIR
"""

from bert_jax.config_finetune import finetune_config


def get_config():
    return finetune_config("qnli")
