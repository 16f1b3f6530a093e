"""MNLI (NLI, 3 labels): accuracy on dev matched, and on dev mismatched as dev_mismatched_accuracy.

python -m bert_jax.main --config=configs/finetune/mnli.py --config.init_from=CHECKPOINT \
    --config.data.dir=GLUE/MNLI --workdir=DIR
"""

from bert_jax.config_finetune import finetune_config


def get_config():
    return finetune_config("mnli")
