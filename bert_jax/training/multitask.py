"""Multi-task fine-tuning (MT-DNN): one shared encoder, one head per task, one task's batch per step.

`finetune.tasks="sst2,mrpc,cola"` turns a fine-tuning run into an MT-DNN
run (Liu et al. 2019) on `FineTuner`'s loop: every step draws one task,
takes the next batch of that task's own length-bucketed order and
updates the encoder and that task's head on that task's loss. Heads are
named after their tasks (`params["sst2"]`, ...).

Choices, and why:
- Task t is drawn with probability n_t^alpha / sum_s n_s^alpha (n: training
  rows), `finetune.task_sampling_alpha` = 0.5 by default. alpha = 1 is
  MT-DNN's proportional mixing (its epochs shuffle all tasks' batches
  together); with GLUE's sizes it gives MRPC under 5% of the steps next to
  SST-2. Square-root sampling (alpha = 0.5) scored better than proportional
  on GLUE in Stickland & Murray (2019, "BERT and PALs") and keeps small
  tasks in the mix without repeating them as often as uniform (alpha = 0).
- The draw of step s depends only on (seed, s) and each task keeps its own
  epoch order (finetune_data.TrainOrder), so the batch of any step is
  recomputed from s: resuming needs no data state and is exact.
- Heads not drawn in a step keep their parameters *and* optimizer state
  (as PyTorch's optimizers skip parameters without a gradient): with
  AdamW a zero gradient alone would still move them through momentum and
  weight decay.
- "An epoch" is sum_t ceil(n_t / batch_size) steps (as many batches as one
  pass over every task), so `finetune.num_epochs` keeps its meaning.
- The kept parameters are those with the best mean over tasks of each
  task's first official metric on GLUE's 0-100 scale (MCC and correlations
  x 100, as GLUE's average score).
- `data.dir` is the GLUE root: each task reads `data.dir/<GLUE folder>`
  (`SST-2`, `MRPC`, `CoLA`, ...; glue.FOLDERS) or else `data.dir/<task name>`.

Outputs: `eval_results.json` = {task: {metric: value}}, predictions in
`predictions_<task>.*`. A later single-task run with `init_from` = this
workdir takes the shared encoder (MT-DNN's per-task refinement stage).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from bert_jax.errors import ConfigError, DataError
from bert_jax.tasks import get_task
from bert_jax.tasks.base import Features, Task
from bert_jax.tasks.glue import FOLDERS
from bert_jax.training import partitioning
from bert_jax.training.finetune import RESULTS_FILE, FineTuner, _flatten, _write_json
from bert_jax.training.finetune_data import TrainOrder, local_rows
from bert_jax.training.steps import TrainState

log = logging.getLogger(__name__)
CORRELATIONS = ("mcc", "pearson", "spearman")  # in [-1, 1]; x 100 on GLUE's score scale
SAMPLER_SALT = 0x6D74646E  # keeps the task draws apart from the other streams seeded by `seed`


def parse_tasks(text: str) -> list[str]:
    names = [s.strip() for s in str(text).split(",") if s.strip()]
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"finetune.tasks {text!r} must name at least two different tasks, e.g. 'sst2,mrpc,cola'")
    return names


def task_dir(root: str, name: str) -> str:
    """The data folder of task `name` under the GLUE root `root` (its GLUE folder name, else the task's name)."""
    candidates = [os.path.join(root, FOLDERS[name])] if name in FOLDERS else []
    candidates.append(os.path.join(root, name))
    for folder in candidates:
        if os.path.isdir(folder):
            return folder
    raise ConfigError(
        f"{name}: none of {candidates} is a folder; for finetune.tasks, --config.data.dir must be the folder that "
        f"holds each task's data folder (the GLUE root with SST-2/, MRPC/, CoLA/, ...)"
    )


def glue_scale(metric: str, value: float) -> float:
    """`value` on GLUE's 0-100 score scale."""
    return 100.0 * value if metric in CORRELATIONS else value


class TaskSampler:
    """The task of each global step: task t with probability size_t^alpha / sum, from (seed, step) alone.

    Draws are made in blocks of `BLOCK` steps, one generator per (seed,
    block), with running counts per block, so `draw(step)` also says how many
    times its task was drawn before (the index of that task's next batch).
    """

    BLOCK = 1024

    def __init__(self, sizes: Sequence[int], alpha: float, seed: int):
        sizes = np.asarray(sizes, np.float64)
        if len(sizes) == 0 or np.any(sizes <= 0):
            raise DataError(f"every task needs training rows to be sampled; got sizes {sizes.tolist()}")
        if alpha < 0:
            raise ConfigError(f"finetune.task_sampling_alpha must be >= 0 (0: uniform, 1: proportional), not {alpha}")
        weights = sizes**alpha
        self.probabilities = weights / weights.sum()
        self.seed = int(seed)
        self._before = [np.zeros(len(sizes), np.int64)]  # draws of each task before block b
        self._block_cache: tuple[int, np.ndarray | None] = (-1, None)

    def _block(self, block: int) -> np.ndarray:
        if self._block_cache[0] != block:
            rng = np.random.default_rng((self.seed, SAMPLER_SALT, block))
            self._block_cache = (block, rng.choice(len(self.probabilities), self.BLOCK, p=self.probabilities))
        return self._block_cache[1]

    def tasks(self, start: int, stop: int) -> np.ndarray:
        """The task index of every step in [start, stop)."""
        first, last = start // self.BLOCK, (stop - 1) // self.BLOCK
        drawn = np.concatenate([self._block(b) for b in range(first, last + 1)])
        return drawn[start - first * self.BLOCK : stop - first * self.BLOCK]

    def draw(self, step: int) -> tuple[int, int]:
        """(task index of 0-based `step`, how many earlier steps drew that task)."""
        block, offset = divmod(step, self.BLOCK)
        while len(self._before) <= block:
            done = len(self._before) - 1
            counts = np.bincount(self._block(done), minlength=len(self.probabilities))
            self._before.append(self._before[-1] + counts)
        drawn = self._block(block)
        task = int(drawn[offset])
        return task, int(self._before[block][task] + np.count_nonzero(drawn[:offset] == task))


class TaskMixture:
    """The (task, batch) of each global step: a sampled task, then the next batch of that task's own order."""

    def __init__(self, orders: dict[str, TrainOrder], alpha: float, seed: int):
        self.names, self.orders = list(orders), orders
        self.sampler = TaskSampler([len(o.features) for o in orders.values()], alpha, seed)
        self.steps_per_epoch = sum(o.steps_per_epoch for o in orders.values())

    def batch(self, step: int) -> tuple[str, dict[str, np.ndarray]]:
        index, draws = self.sampler.draw(step)
        name = self.names[index]
        return name, self.orders[name].batch(draws)


def freeze_other_heads(step, head: str, heads: Sequence[str]):
    """`step` whose new state keeps every head but `head` (parameters and optimizer state) as it was."""
    others = frozenset(heads) - {head}

    def keep(path, old, new):
        under_other = any(isinstance(k, jax.tree_util.DictKey) and k.key in others for k in path)
        return old if under_other else new

    def frozen(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        new, metrics = step(state, batch)
        params = jax.tree_util.tree_map_with_path(keep, state.params, new.params)
        opt_state = jax.tree_util.tree_map_with_path(keep, state.opt_state, new.opt_state)
        return new.replace(params=params, opt_state=opt_state), metrics

    return frozen


class MultiTaskFineTuner(FineTuner):
    """`FineTuner` over several tasks sharing one encoder (see the module docstring)."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, devices=None):
        super().__init__(config, workdir, devices)
        self._task_steps = {
            name: self._jit_train_step(freeze_other_heads(self._train_step_fn(name), name, self.tasks))
            for name in self.tasks
        }

    def _make_tasks(self) -> dict[str, Task]:
        c = self.config
        if c.finetune.best_metric:
            raise ConfigError(
                "finetune.best_metric applies to one task; a multi-task run keeps the parameters with the best mean "
                "of each task's first metric: leave --config.finetune.best_metric empty"
            )
        tasks = {}
        for name in parse_tasks(c.finetune.tasks):
            task_config = copy.deepcopy(c)
            task_config.finetune.task, task_config.finetune.tasks = name, ""
            if c.data.dir:
                task_config.data.dir = task_dir(c.data.dir, name)
            tasks[name] = get_task(task_config)
        return tasks

    def _load_data(self) -> None:
        c = self.config
        self.task_eval_sets: dict[str, dict[str, tuple[list, Features]]] = {}
        orders = {}
        for name, task in self.tasks.items():
            features, self.task_eval_sets[name] = self._task_data(task)
            orders[name] = self.train_order(features, task)
        self.order = TaskMixture(orders, c.finetune.task_sampling_alpha, c.seed)
        shares = ", ".join(f"{n} {p:.1%}" for n, p in zip(self.order.names, self.order.sampler.probabilities))
        log.info("multi-task sampling (alpha=%g): %s of the steps", c.finetune.task_sampling_alpha, shares)

    def _eval_sets_of(self, head: str | None) -> dict[str, tuple[list, Features]]:
        return self.task_eval_sets[head or next(iter(self.tasks))]

    def compile_jobs(self, state: TrainState, start: int) -> list:
        """None: each task's step shapes are compiled on first use (finetune.compile_ahead covers single tasks)."""
        return []

    def train_step(self, state: TrainState, step: int) -> tuple[TrainState, dict]:
        """One update on the step's drawn task; its metrics are logged under the task's name (`sst2_accuracy`)."""
        name, batch = self.order.batch(step)
        state, metrics = self._task_steps[name](state, partitioning.global_batch(local_rows(batch), self.mesh))
        shared = ("loss", "grad_norm", "learning_rate")
        metrics = {k if k in shared else f"{name}_{k}": v for k, v in metrics.items()}
        return state, dict(metrics, **{f"{name}_loss": metrics["loss"]})

    def evaluate(self, params) -> dict[str, dict]:
        """{task: {split: metrics}} over every task's dev splits."""
        return {
            name: {split: self.predict(params, split, name)[1] for split in eval_sets}
            for name, eval_sets in self.task_eval_sets.items()
        }

    def score(self, results: dict[str, dict]) -> tuple[dict[str, float], str, float]:
        """eval_<task>_<metric> entries, and the mean of the tasks' first metrics (0-100 scale) as `eval_score`."""
        entries, firsts = {}, []
        for name, by_split in results.items():
            first_split = next(iter(by_split))
            entries.update(_flatten(by_split, first_split, prefix=f"eval_{name}_"))
            metric = next(k for k in by_split[first_split] if k != "loss")
            firsts.append(glue_scale(metric, by_split[first_split][metric]))
        entries["eval_score"] = float(np.mean(firsts))
        return entries, "score", entries["eval_score"]

    def _write_results(self, params, best: dict) -> dict[str, float]:
        """eval_results.json = {task: {metric: value}}; returns them flat ({"score", "<task>_<metric>"}) for seeds."""
        nested = {name: self.final_results(params, f"predictions_{name}", name) for name in self.tasks}
        if jax.process_index() == 0:
            _write_json(os.path.join(self.workdir, RESULTS_FILE), nested)
        firsts = [glue_scale(*next(iter(metrics.items()))) for metrics in nested.values()]
        flat = {"score": float(np.mean(firsts))}
        flat.update({f"{name}_{k}": v for name, metrics in nested.items() for k, v in metrics.items()})
        log.info("best mean dev score %.4g at step %d; from those parameters: %s", best["value"], best["step"], nested)
        return flat
