"""The registry of fine-tuning tasks: `config.finetune.task` -> `Task` subclass (see tasks/base.py)."""

from __future__ import annotations

import ml_collections

from bert_jax.errors import ConfigError
from bert_jax.tasks.base import Task
from bert_jax.tasks.conll import ConllTask
from bert_jax.tasks.glue import GLUE_TASKS
from bert_jax.tasks.multiple_choice import RaceTask, SwagTask
from bert_jax.tasks.squad import SQUAD_TASKS

TASKS: dict[str, type[Task]] = {
    **GLUE_TASKS,
    "conll2003": ConllTask,
    "race": RaceTask,
    "swag": SwagTask,
    **SQUAD_TASKS,
}


def get_task(config: ml_collections.ConfigDict) -> Task:
    """The task named by `config.finetune.task`, built for `config`."""
    name = config.finetune.task
    if name not in TASKS:
        raise ConfigError(f"unknown finetune.task {name!r}; use one of {sorted(TASKS)}")
    return TASKS[name](config)
