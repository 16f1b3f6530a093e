"""SST-2 (sentiment): accuracy, BERT's GLUE recipe.

python -m bert_jax.main --config=configs/finetune/sst2.py --config.init_from=CHECKPOINT \
    --config.data.dir=GLUE/SST-2 --workdir=DIR
"""

from bert_jax.config_finetune import finetune_config


def get_config():
    return finetune_config("sst2")
