"""The fine-tuning loop: a task's data and head on a pretrained encoder, with the pretraining trainer's pieces.

The same train step (steps.py, with the task's loss and its accumulation
denominators), optimizer (plus ELECTRA's layer-wise decay), Checkpointer,
MetricsWriter, mesh and SIGTERM/NaN handling as `training/trainer.py`.
What is particular to fine-tuning: epochs become steps, batches are random
examples packed into rows (finetune_packing.py) or, for the heads packing
does not serve, length-bucketed and padded (finetune_data.py), the
dev set is evaluated every `eval_every` steps with the task's official
metrics and the best parameters are kept in `DIR/best`, and the end of a run
writes `eval_results.json` and `predictions.*` from those best parameters.
`finetune.seeds="1,2,3"` runs once per seed in `DIR/seed_<s>` and reports
each seed's scores, their median and their max. `finetune.tasks="sst2,mrpc,cola"`
trains several tasks on one encoder (MT-DNN, `multitask.py`, a subclass:
loss, evaluation and outputs take the head's name).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import math
import os
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from bert_jax import fileio
from bert_jax.errors import ConfigError
from bert_jax.models.bert import first_position
from bert_jax.models.dropout import dropout_rngs
from bert_jax.models.task_model import SINGLE_HEAD, build_task_model
from bert_jax.tasks import get_task
from bert_jax.tasks.base import Features, Task
from bert_jax.training import partitioning
from bert_jax.training.checkpoints import Checkpointer
from bert_jax.training.finetune_data import (
    AUTO,
    TrainOrder,
    batch_width,
    choose_widths,
    eval_batches,
    eval_rows,
    local_rows,
    parse_widths,
    subset,
)
from bert_jax.training.finetune_init import check_token_types, graft, load_init, task_tokenizer, to_numpy
from bert_jax.training.finetune_packing import PACKABLE_HEADS, PackedTrainOrder, packing_unsupported
from bert_jax.training.metrics import MetricsWriter
from bert_jax.training.optimizers import learning_rate_schedule, make_optimizer, with_layerwise_decay
from bert_jax.training.precompile import AheadOfTime
from bert_jax.training.precompile import abstract as precompile_abstract
from bert_jax.training.steps import TrainState, make_train_step, state_shardings
from bert_jax.training.trainer import SigtermFlag, check_finite, prepare_workdir, validate_run

log = logging.getLogger(__name__)
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
PACKED_INPUTS = ("position_ids", "pool_index")  # packed batches only (finetune_packing.py)
RESULTS_FILE = "eval_results.json"


class FineTuner:
    """One seed's run of one task in one workdir."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, devices=None):
        self.config, self.workdir = config, workdir
        self.tasks = self._make_tasks()  # {head name: task}; one ("head") unless multi-task (multitask.py)
        self.task = next(iter(self.tasks.values()))
        model_cfg, loaded, saved = load_init(config)
        config.model = ml_collections.ConfigDict(model_cfg.to_dict())
        self.mesh = partitioning.make_mesh(config, devices)
        validate_run(config, self.mesh)
        self.tokenizer = task_tokenizer(config, saved)
        self.heads = tuple((name, task.head, task.num_labels) for name, task in self.tasks.items())
        self.model = build_task_model(config.model, self.heads, config.finetune.head_dropout, config.finetune.head_init)
        self._loaded = loaded
        self._aot = AheadOfTime(compiler_options=_compiler_options(config))  # finetune.compile_ahead
        self._recording: dict | None = None  # while evaluating in the loop: {(split, head): predict()'s result}
        self._reuse: dict | None = None  # in _finish: those results, when they are the best parameters'
        self.widths = parse_widths(config.finetune.bucket_widths)  # a tuple, or AUTO: chosen per batch set
        self._eval_widths: dict[int, tuple[int, ...]] = {}  # id(dev features) -> their batch widths
        self._load_data()
        self._set_schedule()
        self._choose_train_widths()
        self.schedule = learning_rate_schedule(config)
        self.optimizer = with_layerwise_decay(make_optimizer(config), config.model, config.finetune.layerwise_lr_decay)
        self.replicated = partitioning.replicated(self.mesh)
        self.rules = partitioning.logical_rules(config)
        self.state_sharding = state_shardings(self._boxed_params, self.optimizer, self.mesh, self.rules)
        self.batch_sharding = partitioning.batch_sharding(self.mesh)
        self._train_step = self._jit_train_step(self._train_step_fn())
        self._eval_step = jax.jit(
            partitioning.traced_with_rules(self._eval_outputs, self.mesh, self.rules), static_argnames="head"
        )

    def _make_tasks(self) -> dict[str, Task]:
        return {SINGLE_HEAD: get_task(self.config)}

    def _task_of(self, head: str | None) -> Task:
        return self.task if head is None else self.tasks[head]

    def _train_step_fn(self, head: str | None = None):
        """The (unjitted) train step on the loss of `head`'s task; None: the single task's."""
        return make_train_step(
            functools.partial(self.loss_fn, head=head),
            self.optimizer,
            self.schedule,
            self.config.grad_accum_steps,
            totals_fn=functools.partial(self.totals, head=head),
        )

    def _jit_train_step(self, step):
        return jax.jit(
            partitioning.traced_with_rules(step, self.mesh, self.rules),
            in_shardings=(self.state_sharding, self.batch_sharding),
            out_shardings=(self.state_sharding, self.replicated),
            donate_argnums=0,
        )

    # -- data ------------------------------------------------------------------------------------------------------
    def _task_data(self, task: Task) -> tuple[Features, dict[str, tuple[list, Features]]]:
        """(training features, {dev split: (examples, features)}) of `task`, cut to the max_*_examples limits."""
        c, n = self.config, self.config.max_seq_length
        train = subset(task.read("train"), c.finetune.max_train_examples)
        train_features = task.featurize(train, self.tokenizer, n)
        check_token_types(train_features, c.model, self.tokenizer, task.name)
        eval_sets = {}
        for split in task.splits[1:]:
            examples = subset(task.read(split), c.finetune.max_eval_examples)
            eval_sets[split] = (examples, task.featurize(examples, self.tokenizer, n))
        log.info(
            "%s: %d training rows, %s",
            task.name,
            len(train_features),
            ", ".join(f"{s}: {len(f)} rows" for s, (_, f) in eval_sets.items()),
        )
        return train_features, eval_sets

    def _load_data(self) -> None:
        self.train_features, self.eval_sets = self._task_data(self.task)
        self.order = self.train_order(self.train_features, self.task)

    def train_order(self, features: Features, task: Task) -> TrainOrder:
        """Packed random batches (`finetune.pack`) where the task's head and the run allow, else padded ones."""
        c = self.config
        if c.finetune.pack:
            why_not = packing_unsupported(task.head, c.grad_accum_steps)
            if why_not is None:
                divisor = int(np.prod([self.mesh.shape[a] for a in partitioning.BATCH_AXES]))
                per_example, first = PACKABLE_HEADS[task.head], first_position(c.model)
                order = PackedTrainOrder(features, c.batch_size, c.seed, per_example, divisor, first)
                log.info("%s: random batches packed into rows (finetune.pack)", task.name)
                return order
            log.info("%s: finetune.pack does not apply (%s); padded batches", task.name, why_not)
        return TrainOrder(
            features, c.batch_size, c.seed, c.finetune.bucket_lengths, self.fixed_widths, c.finetune.bucket_window
        )

    @property
    def fixed_widths(self) -> tuple[int, ...]:
        """`finetune.bucket_widths` when it lists widths; () (multiples of 16) when it is empty or auto."""
        return () if self.widths == AUTO else self.widths

    def _choose_train_widths(self) -> None:
        """bucket_widths=auto: the training batches' sizes for this run's steps (finetune_data.choose_widths):
        widths of padded batches, row counts of packed ones (always chosen: a list of widths does not apply)."""
        c = self.config
        mixture = getattr(self.order, "orders", None)  # multi-task: each task's order over its first epoch
        orders = mixture.values() if mixture else [self.order]
        for order in orders:
            steps = order.steps_per_epoch if mixture else c.total_steps
            if isinstance(order, PackedTrainOrder):
                # one token's attention costs ~width / (2 hidden) of its dense layers' work (matmuls, softmax)
                attention_tokens = 2 * c.model.hidden_size
                order.choose(steps, c.finetune.compile_cost_tokens, c.max_seq_length, attention_tokens)
                log.info("packed batches: %s rows of %d tokens for %d steps", order.widths, order.width, steps)
            elif self.widths == AUTO:
                order.widths = choose_widths(order.own_sizes(0, steps), c.batch_size, c.finetune.compile_cost_tokens)
                log.info("batch widths %s for %d steps (bucket_widths=auto)", order.widths, steps)

    def eval_widths(self, features: Features) -> tuple[int, ...]:
        """The batch widths of evaluating `features`; auto: chosen for every evaluation of the run together."""
        if self.widths != AUTO:
            return self.widths
        if id(features) not in self._eval_widths:
            c = self.config
            evaluations = math.ceil(c.total_steps / c.eval_every)
            own = [batch_width(features, rows) for rows in eval_rows(features, c.batch_size)] * evaluations
            # An eval-step compile costs ~1/6 of a train step's and an eval token ~1/3 of a train token: half.
            cost = c.finetune.compile_cost_tokens / 2
            self._eval_widths[id(features)] = choose_widths(own, c.batch_size, cost)
        return self._eval_widths[id(features)]

    def _eval_sets_of(self, head: str | None) -> dict[str, tuple[list, Features]]:
        return self.eval_sets

    def _set_schedule(self) -> None:
        """Epochs -> total_steps, warmup fraction -> warmup_steps, 0 -> once per epoch for evaluation."""
        c, per_epoch = self.config, self.order.steps_per_epoch
        if not c.total_steps:
            c.total_steps = max(math.ceil(c.finetune.num_epochs * per_epoch), 1)
        if not c.warmup_steps:
            c.warmup_steps = int(round(c.finetune.warmup_fraction * c.total_steps))
        if not c.eval_every:
            c.eval_every = per_epoch
        if not c.checkpoint_every:
            c.checkpoint_every = c.eval_every

    # -- model and loss --------------------------------------------------------------------------------------------
    def _apply(self, params, batch, rng, head: str | None = None):
        deterministic = rng is None
        packed = {k: batch[k] for k in PACKED_INPUTS if k in batch}
        return self.model.apply(
            {"params": params},
            *(batch[k] for k in INPUTS),
            **packed,
            mask_kind="packed" if "position_ids" in packed else "padding",
            deterministic=deterministic,
            head=head,
            rngs=dropout_rngs(rng),
        )

    def loss_fn(self, params, batch, rng, totals=None, head: str | None = None):
        """The loss of `head`'s task (None: the single task) on `batch`; the other heads are not run."""
        task = self._task_of(head)
        loss, metrics = task.loss(self._apply(params, batch, rng, head), batch)
        if totals is not None:  # a micro-batch: its share of the global batch's mean
            share = task.loss_weight(batch) / totals["weight"]
            loss, metrics = loss * share, {k: v * share for k, v in metrics.items()}
        return loss, dict(metrics, loss=loss)

    def totals(self, batch, head: str | None = None) -> dict:
        return {"weight": jnp.maximum(self._task_of(head).loss_weight(batch), 1e-9)}

    def _eval_outputs(self, params, batch, head: str | None = None):
        task = self._task_of(head)
        outputs = self._apply(params, batch, None, head)
        loss, _ = task.loss(outputs, batch)
        return outputs, loss * task.loss_weight(batch), task.loss_weight(batch)

    def _boxed_params(self, rng: jax.Array):
        """Freshly initialised parameters, boxed with their logical axis names."""
        dummy = jnp.zeros((1, 8), jnp.int32)
        first_head, first_kind, _ = self.heads[0]
        if first_kind == "choice":
            dummy = dummy[:, None]
        return self.model.init(rng, dummy, head=first_head)["params"]

    def _fresh_params(self, rng: jax.Array) -> dict:
        """The initial parameters (numpy) that `graft` completes with the checkpoint's tensors.

        Only the tensors the checkpoint does not supply (the head, a missing
        pooler) are computed, by a jitted init whose other outputs XLA drops;
        the rest are ShapeDtypeStructs that `graft` replaces. An eager
        `model.init` of the whole encoder took 5-12 s of a MiniLM run's start-up.
        """
        shapes = flatten_dict(nn.meta.unbox(jax.eval_shape(self._boxed_params, rng)))
        have = flatten_dict(self._loaded) if self._loaded is not None else {}
        needed = [k for k, v in shapes.items() if k not in have or tuple(np.shape(have[k])) != tuple(v.shape)]
        if not needed:
            return unflatten_dict(shapes)

        def init(key):
            flat = flatten_dict(nn.meta.unbox(self._boxed_params(key)))
            return [flat[k] for k in needed]

        values = dict(zip(needed, to_numpy(jax.jit(init)(rng))))
        return unflatten_dict({k: values.get(k, v) for k, v in shapes.items()})

    def init_state(self, seed: int) -> TrainState:
        init_rng, dropout_rng = jax.random.split(jax.random.PRNGKey(seed))
        params = self._fresh_params(init_rng)
        params = graft(params, self._loaded, self.config.finetune.reinit_head, self.config.init_from)
        params = jax.device_put(jax.tree.map(jnp.asarray, params), self.state_sharding.params)
        opt_state = jax.jit(self.optimizer.init, out_shardings=self.state_sharding.opt_state)(params)
        step = jnp.zeros((), jnp.int32)  # placed like the step's output, or the second step compiles again
        step, dropout_rng = jax.device_put((step, dropout_rng), self.replicated)
        return TrainState(step, params, opt_state, dropout_rng)

    # -- evaluation ------------------------------------------------------------------------------------------------
    def predict(self, params, split: str, head: str | None = None) -> tuple[list, dict[str, float]]:
        """(predictions, metrics with eval_loss) of `split` of `head`'s task (None: the single task) under `params`."""
        task = self._task_of(head)
        examples, features = self._eval_sets_of(head)[split]
        width = features.arrays["input_ids"].shape[-1]
        collected: dict[str, np.ndarray] = {}
        loss_sum = weight_sum = 0.0
        reused = (self._reuse or {}).get((split, head))
        if reused is not None:
            return reused
        for rows, batch in eval_batches(features, self.config.batch_size, self.eval_widths(features)):
            cut = batch["input_ids"].shape[-1]
            batch = partitioning.global_batch(local_rows(batch), self.mesh)
            outputs, loss, weight = _gather(self._aot.call(self._eval_step, params, batch, head=head))
            loss_sum, weight_sum = loss_sum + float(loss), weight_sum + float(weight)
            for key, value in outputs.items():
                value = value[: len(rows)]
                if value.ndim >= 2 and value.shape[1] == cut:  # per-token outputs: pad back to the full width
                    pad = [(0, 0)] * value.ndim
                    pad[1] = (0, width - value.shape[1])
                    value = np.pad(value, pad)
                if key not in collected:
                    collected[key] = np.zeros((len(features), *value.shape[1:]), value.dtype)
                collected[key][rows] = value
        predictions = task.predict(collected, features, examples)
        metrics = task.metrics(predictions, examples)
        result = predictions, {**metrics, "loss": loss_sum / max(weight_sum, 1e-9)}
        if self._recording is not None:
            self._recording[(split, head)] = result
        return result

    def evaluate(self, params) -> dict[str, dict]:
        """Metrics of every dev split: {split: {metric: value}}."""
        return {split: self.predict(params, split)[1] for split in self.eval_sets}

    def best_metric(self, results: dict[str, dict]) -> str:
        """`finetune.best_metric`, or the task's first official metric (e.g. MRPC's f1, CoLA's mcc)."""
        names = [k for k in next(iter(results.values())) if k != "loss"]
        chosen = self.config.finetune.best_metric or names[0]
        if chosen not in names:
            raise ConfigError(f"finetune.best_metric {chosen!r} is not one of {self.task.name}'s metrics {names}")
        return chosen

    def score(self, results: dict[str, dict]) -> tuple[dict[str, float], str, float]:
        """(the metrics log's eval_* entries, the name and value of the score that picks the kept parameters)."""
        first_split = next(iter(results))
        chosen = self.best_metric(results)
        return _flatten(results, first_split, prefix="eval_"), chosen, results[first_split][chosen]

    # -- the loop --------------------------------------------------------------------------------------------------
    def train_step(self, state: TrainState, step: int) -> tuple[TrainState, dict]:
        """One update on the global batch of 0-based `step`.

        While a packed batch's own row count is still compiling in the
        background, it runs in the smallest larger row count already compiled
        (empty rows added, the same update) instead of waiting: the largest is
        compiled first, so after the first compile no step waits.
        """
        rows = self.order.rows(step)
        own = self.order.size(rows)
        batch = self.order.make(rows, own)
        if self.order.runs_in_larger_sizes and self._aot.pending(self._train_step, state, batch):
            for size in sorted(s for s in self.order.widths if s > own):
                bigger = self.order.make(rows, size)
                if self._aot.ready(self._train_step, state, bigger):
                    batch = bigger
                    break
        return self._aot.call(self._train_step, state, partitioning.global_batch(local_rows(batch), self.mesh))

    def _abstract_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.ShapeDtypeStruct]:
        """The global arrays a step gets for `batch` (a global batch from make_batch), as ShapeDtypeStructs."""
        return partitioning.with_shardings(batch, self.batch_sharding)

    def compile_jobs(self, state: TrainState, start: int) -> list[tuple[int, Callable, tuple, dict]]:
        """(first step that needs it, jitted fn, args, static args and label) of every train-step shape of steps
        [start, total_steps) and every eval-step shape of the dev sets, for `finetune.compile_ahead`."""
        c = self.config
        jobs = []
        firsts = self.order.first_steps_by_size(start, c.total_steps)
        largest = max(firsts, default=None)
        for size, first in firsts.items():
            batch = self.order.batch(first)
            label = "the train step for {} x {}".format(*batch["input_ids"].shape)
            # packed rows: the largest row count first, as every batch can run in it (train_step)
            when = start - 1 if size == largest and self.order.runs_in_larger_sizes else first
            jobs.append((when, self._train_step, (state, self._abstract_batch(batch)), {"label": label}))
        first_eval = min((start // c.eval_every + 1) * c.eval_every, c.total_steps) - 1
        for _, features in self.eval_sets.values():
            seen = set()
            for _, batch in eval_batches(features, c.batch_size, self.eval_widths(features)):
                if batch["input_ids"].shape[-1] not in seen:
                    seen.add(batch["input_ids"].shape[-1])
                    args = (state.params, self._abstract_batch(batch))
                    label = f"the eval step for width {batch['input_ids'].shape[-1]}"
                    jobs.append((first_eval, self._eval_step, args, {"head": None, "label": label}))
        return jobs

    def _compile_ahead(self, state: TrainState, start: int) -> None:
        """Starts compiling every shape the run will need, in the order the steps need them (precompile.py)."""
        if not self.config.finetune.compile_ahead or start >= self.config.total_steps:
            return
        jobs = sorted(self.compile_jobs(precompile_abstract(state), start), key=lambda job: job[0])
        for _, fn, args, static in jobs:
            self._aot.submit(fn, args, **static)
        if jobs:
            log.info("compiling %d step shapes ahead of time in the background", len(jobs))

    def train(self) -> dict[str, float]:
        c, workdir = self.config, self.workdir
        prepare_workdir(workdir, c)
        fresh = self.init_state(c.seed)
        abstract = partitioning.with_shardings(fresh, self.state_sharding)
        checkpointer = Checkpointer(workdir, keep=c.keep_checkpoints)
        restored = checkpointer.restore_latest(abstract)
        best = {"step": -1, "value": -math.inf}
        if restored:
            _, state, data_state = restored
            best = data_state.get("best", best)
            log.info("resumed from step %d in %s", int(state.step), checkpointer.directory)
        else:
            state = fresh
        del fresh
        step = int(state.step)
        self._compile_ahead(state, step)
        _drop_steps_after(os.path.join(workdir, "best", "checkpoints"), best["step"])  # saved after the resumed one
        best_keeper = Checkpointer(os.path.join(workdir, "best"), keep=1, asynchronous=False)
        writer = MetricsWriter(workdir, c.total_steps, enabled=jax.process_index() == 0, start_step=step)
        stop = SigtermFlag()
        evaluated = None  # (step, {(split, head): predict()'s result}) of the last evaluation
        try:
            while step < c.total_steps:
                state, metrics = self.train_step(state, step)
                step += 1
                check_finite(float(metrics["loss"]), step, checkpointer)
                record, rate = {}, 0.0
                if step % c.log_every == 0 or step == c.total_steps:
                    rate = writer.steps_per_sec(step)
                    record = {k: float(v) for k, v in jax.device_get(metrics).items()}
                if step % c.eval_every == 0 or step == c.total_steps:
                    self._recording = {}  # predict() keeps each split's results, for _finish to reuse
                    entries, chosen, value = self.score(self.evaluate(state.params))
                    evaluated, self._recording = (step, self._recording), None
                    record.update(entries)
                    if value > best["value"]:
                        best = {"step": step, "value": value}
                        best_keeper.save(step, state.params, {"metric": chosen, **best})
                        best_keeper.wait()
                if record:
                    writer.write(step, record)
                    writer.progress(step, record, rate)
                if step % c.checkpoint_every == 0 or step == c.total_steps or stop.raised:
                    checkpointer.save(step, state, {"best": best})
                    writer.plot()
                if stop.raised:
                    log.info("SIGTERM: saved step %d and stopping", step)
                    return {}
            checkpointer.wait()
            reuse = evaluated[1] if evaluated is not None and evaluated[0] == best["step"] else None
            return self._finish(state.params, best_keeper, best, reuse)
        finally:
            self._aot.close()
            checkpointer.close()
            best_keeper.close()
            writer.plot()
            writer.close()
            stop.restore()

    def _finish(self, params, best_keeper: Checkpointer, best: dict, reuse: dict | None = None) -> dict[str, float]:
        """eval_results.json and predictions from the best evaluated parameters.

        `reuse`: the predictions and metrics of the last evaluation when it
        was the best (its parameters are `params`), written as they are
        instead of restoring the kept parameters and evaluating them again.
        """
        if reuse is None:
            abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
            restored = best_keeper.restore_latest(abstract)
            if restored:
                params = restored[1]
        self._reuse = reuse
        try:
            return self._write_results(params, best)
        finally:
            self._reuse = None

    def _write_results(self, params, best: dict) -> dict[str, float]:
        final = self.final_results(params, "predictions")
        if jax.process_index() == 0:
            _write_json(os.path.join(self.workdir, RESULTS_FILE), final)
        log.info("best dev score %.4g at step %d; from those parameters: %s", best["value"], best["step"], final)
        return final

    def final_results(self, params, prefix: str, head: str | None = None) -> dict[str, float]:
        """Official dev metrics of `head`'s task; writes `prefix`.* (and `prefix`_<split>.* for further splits)."""
        eval_sets = self._eval_sets_of(head)
        first_split = next(iter(eval_sets))
        results = {}
        for split, (examples, _) in eval_sets.items():
            predictions, results[split] = self.predict(params, split, head)
            if jax.process_index() == 0:
                name = prefix if split == first_split else f"{prefix}_{split}"
                self._task_of(head).write_predictions(predictions, examples, os.path.join(self.workdir, name))
        return {k.lower(): v for k, v in _flatten(results, first_split).items() if not k.endswith("loss")}


def _compiler_options(config: ml_collections.ConfigDict) -> dict | None:
    """XLA options of the steps compiled ahead of time: `finetune.cpu_opt_level` on a CPU backend."""
    level = config.finetune.cpu_opt_level
    if jax.default_backend() != "cpu" or level is None or level < 0:
        return None
    return {"xla_backend_optimization_level": int(level)}


def _drop_steps_after(directory: str, step: int) -> None:
    """Removes best-parameter steps newer than the resumed run's best (a crash between the two saves)."""
    if fileio.isdir(directory):
        for name in fileio.listdir(directory):
            if name.isdigit() and int(name) > step:
                fileio.rmtree(os.path.join(directory, name))


def _gather(tree):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _flatten(results: dict[str, dict], first_split: str, prefix: str = "") -> dict[str, float]:
    """{split: {m: v}} -> {prefix+m: v} for the first dev split, {prefix+split_m: v} for the others (MNLI-mm)."""
    flat = {}
    for split, metrics in results.items():
        for name, value in metrics.items():
            flat[prefix + (name if split == first_split else f"{split}_{name}")] = float(value)
    return flat


def _write_json(path: str, value: dict) -> None:
    if fileio.is_remote(path):  # a bucket object appears whole when written
        with fileio.open(path, "w") as f:
            json.dump(value, f, indent=2)
        return
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
    os.replace(path + ".tmp", path)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"finetune.seeds {text!r} must be comma-separated integers, e.g. '1,2,3'") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"finetune.seeds {text!r} must name at least one seed, each once")
    return seeds


def finetune(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs (or resumes) fine-tuning; one seed in `workdir`, several in `workdir/seed_<s>` plus a summary."""
    seeds = parse_seeds(config.finetune.seeds) if str(config.finetune.seeds).strip() else [config.seed]
    runner = FineTuner
    if config.finetune.get("tasks"):  # MT-DNN: several tasks, one shared encoder
        from bert_jax.training.multitask import MultiTaskFineTuner

        runner = MultiTaskFineTuner
    if len(seeds) == 1:
        config.seed = seeds[0]
        return runner(config, workdir).train()
    per_seed = {}
    for seed in seeds:
        run_config = copy.deepcopy(config)
        run_config.seed = seed
        per_seed[seed] = runner(run_config, os.path.join(workdir, f"seed_{seed}")).train()
        if not per_seed[seed]:  # stopped by SIGTERM: rerun the command to resume
            return {}
    names = list(per_seed[seeds[0]])
    summary = {
        "seeds": {str(s): r for s, r in per_seed.items()},
        "median": {k: float(np.median([r[k] for r in per_seed.values()])) for k in names},
        "max": {k: float(np.max([r[k] for r in per_seed.values()])) for k in names},
    }
    key = config.finetune.best_metric or names[0]
    best_seed = max(seeds, key=lambda s: per_seed[s].get(key, -math.inf))
    if jax.process_index() == 0:
        _write_json(os.path.join(workdir, RESULTS_FILE), summary)
        for name in fileio.listdir(os.path.join(workdir, f"seed_{best_seed}")):
            if name.startswith("predictions"):
                fileio.copy(os.path.join(workdir, f"seed_{best_seed}", name), os.path.join(workdir, name))
    log.info("seeds %s: median %s, max %s; predictions of seed %d", seeds, summary["median"], summary["max"], best_seed)
    return summary
