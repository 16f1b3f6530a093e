"""CoLA (grammatical acceptability): Matthews correlation, BERT's GLUE recipe.

python -m bert_jax.main --config=configs/finetune/cola.py --config.init_from=CHECKPOINT \
    --config.data.dir=GLUE/CoLA --workdir=DIR
"""

from bert_jax.config_finetune import finetune_config


def get_config():
    return finetune_config("cola")
