"""STS-B (similarity, regression on the pooled output): Pearson then Spearman, BERT's GLUE recipe.

python -m bert_jax.main --config=configs/finetune/stsb.py --config.init_from=CHECKPOINT \
    --config.data.dir=GLUE/STS-B --workdir=DIR
"""

from bert_jax.config_finetune import finetune_config


def get_config():
    return finetune_config("stsb")
