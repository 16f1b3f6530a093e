"""MRPC (paraphrase): F1 then accuracy, BERT's GLUE recipe.

python -m bert_jax.main --config=configs/finetune/mrpc.py --config.init_from=CHECKPOINT \
    --config.data.dir=GLUE/MRPC --workdir=DIR
"""

from bert_jax.config_finetune import finetune_config


def get_config():
    return finetune_config("mrpc")
