"""MT-DNN: SST-2, MRPC and CoLA fine-tuned together, one shared encoder and one head per task.

A task is drawn per step with probability ∝ (training rows)^finetune.task_sampling_alpha (0.5; 1 is MT-DNN's
proportional mix); data.dir is the GLUE root holding SST-2/, MRPC/ and CoLA/. See bert_jax/training/multitask.py.

python -m bert_jax.main --config=configs/finetune/mtdnn.py --config.init_from=CHECKPOINT \
    --config.data.dir=GLUE --workdir=DIR
"""

from bert_jax.config_finetune import finetune_config


def get_config():
    return finetune_config("multitask", finetune={"tasks": "sst2,mrpc,cola", "task_sampling_alpha": 0.5})
