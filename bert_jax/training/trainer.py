"""The pretraining loop: compile, check memory, restore, step, log, evaluate, checkpoint.

Restarting the same command resumes from the newest readable checkpoint and
reproduces an uninterrupted run exactly: the train state holds the dropout
RNG, the checkpoint holds the data position, and masking depends only on
(seed, step). SIGTERM (a preempted TPU VM) saves and exits cleanly.
"""

from __future__ import annotations

import logging
import os
import signal

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from bert_jax import fileio
from bert_jax.data.pipeline import build_pretraining_data, make_batch_iterator
from bert_jax.errors import BertJaxError, ConfigError
from bert_jax.models import build_model
from bert_jax.models.bert import max_sequence_length
from bert_jax.objectives.losses import build_loss_fn
from bert_jax.objectives.masking import SPAN_KEYS
from bert_jax.training import partitioning
from bert_jax.training.checkpoints import Checkpointer
from bert_jax.training.memory import check_fits
from bert_jax.training.metrics import MetricsWriter
from bert_jax.training.optimizers import learning_rate_schedule, make_optimizer
from bert_jax.training.steps import TrainState, make_eval_step, make_train_step, state_shardings

log = logging.getLogger(__name__)
CONFIG_FILE = "bert_jax_config.json"


class NonFiniteLossError(BertJaxError, FloatingPointError):
    """The loss became NaN or infinite; training stopped without saving the bad state."""


def check_finite(loss: float, step: int, checkpointer: Checkpointer) -> None:
    """Stops a run whose loss is NaN or infinite, naming the step and the last good checkpoint."""
    if not np.isfinite(loss):
        last = checkpointer.steps()
        raise NonFiniteLossError(
            f"loss is {loss} at step {step}; stopped without saving. The last good checkpoint is "
            + (f"step {last[-1]} in {checkpointer.directory}" if last else "none (no checkpoint yet)")
            + "; lower --config.learning_rate or check the data, then rerun to resume from it"
        )


def prepare_workdir(workdir: str, config: ml_collections.ConfigDict) -> None:
    """Creates the workdir and records the config there; a clear error when it cannot be written."""
    try:
        fileio.makedirs(workdir)  # a local folder, or gs://bucket/... (bert_jax.fileio)
        probe = os.path.join(workdir, f".write_test.{jax.process_index()}")  # hosts may share the workdir
        with fileio.open(probe, "w") as f:
            f.write("ok")
        fileio.remove(probe)
    except BertJaxError:
        raise  # a bucket path without its filesystem package
    except Exception as e:  # a bucket's client raises more than OSError (credentials, HTTP errors)
        if not isinstance(e, OSError) and not fileio.is_remote(workdir):
            raise
        raise ConfigError(
            f"workdir {workdir!r} cannot be written ({getattr(e, 'strerror', None) or e}); "
            "pass --workdir=A_WRITABLE_FOLDER"
        ) from e
    if jax.process_index() == 0:
        with fileio.open(os.path.join(workdir, CONFIG_FILE), "w") as f:
            f.write(config.to_json_best_effort(indent=2))


def abstract_batch(config: ml_collections.ConfigDict) -> dict[str, jax.ShapeDtypeStruct]:
    """The arrays of a training batch (`PretrainingData.masked`), as the jitted step expects them."""
    b, n, p = config.batch_size, config.max_seq_length, config.masking.max_predictions
    i32 = jnp.int32
    span_keys = SPAN_KEYS if config.masking.scheme == "span" else ()  # boundaries and offsets of span masking
    return {
        **{k: jax.ShapeDtypeStruct((b, p), i32) for k in span_keys},
        "input_ids": jax.ShapeDtypeStruct((b, n), i32),
        "attention_mask": jax.ShapeDtypeStruct((b, n), i32),
        "token_type_ids": jax.ShapeDtypeStruct((b, n), i32),
        "masked_positions": jax.ShapeDtypeStruct((b, p), i32),
        "masked_ids": jax.ShapeDtypeStruct((b, p), i32),
        "masked_weights": jax.ShapeDtypeStruct((b, p), jnp.float32),
        "pair_labels": jax.ShapeDtypeStruct((b,), i32),
    }


def validate_run(config: ml_collections.ConfigDict, mesh) -> None:
    """Config errors a run would otherwise hit later: batch split, sequence length, pair objective."""
    batch_devices = mesh.shape["data"] * mesh.shape["fsdp"]
    if config.batch_size % (batch_devices * config.grad_accum_steps):
        raise ConfigError(
            f"batch_size {config.batch_size} must divide evenly over {batch_devices} batch devices "
            f"x {config.grad_accum_steps} accumulation steps"
        )
    if config.max_seq_length > max_sequence_length(config.model):
        offset = config.model.max_position_embeddings - max_sequence_length(config.model)
        raise ConfigError(
            f"max_seq_length {config.max_seq_length} exceeds model.max_position_embeddings "
            f"{config.model.max_position_embeddings}" + (f" less RoBERTa's position offset {offset}" if offset else "")
        )
    if config.pair_objective not in ("nsp", "sop", "none"):
        raise ConfigError(f"unknown pair_objective {config.pair_objective!r}; use 'nsp', 'sop' or 'none'")


class Trainer:
    """Owns the compiled steps, the state and the run's outputs for one workdir."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, devices=None):
        self.config, self.workdir = config, workdir
        if config.pair_objective == "none":
            config.model.pair_head = False  # RoBERTa-style: no pair classifier to train
        self.mesh = partitioning.make_mesh(config, devices)
        validate_run(config, self.mesh)
        self.model = build_model(config)
        self.schedule = learning_rate_schedule(config)
        self.optimizer = make_optimizer(config)
        self.rules = partitioning.logical_rules(config)
        self.batch_sharding = partitioning.batch_sharding(self.mesh)
        self.state_sharding = state_shardings(self._boxed_params, self.optimizer, self.mesh, self.rules)
        self.loss_fn = build_loss_fn(config, self.model)
        step = make_train_step(self.loss_fn, self.optimizer, self.schedule, config.grad_accum_steps)
        self._train_jit = jax.jit(
            self._with_rules(step),
            in_shardings=(self.state_sharding, self.batch_sharding),
            out_shardings=(self.state_sharding, partitioning.replicated(self.mesh)),
            donate_argnums=0,
        )
        self._eval_step = jax.jit(
            self._with_rules(make_eval_step(self.loss_fn)),
            in_shardings=(self.state_sharding.params, self.batch_sharding),
        )
        self._init = jax.jit(self._init_state, out_shardings=self.state_sharding)

    def _with_rules(self, fn):
        return partitioning.traced_with_rules(fn, self.mesh, self.rules)

    def _boxed_params(self, rng: jax.Array):
        dummy = jnp.zeros((1, self.config.max_seq_length), jnp.int32)
        return self.model.init(rng, dummy)["params"]

    def _init_state(self, rng: jax.Array) -> TrainState:
        from flax import linen as nn

        init_rng, dropout_rng = jax.random.split(rng)
        params = nn.meta.unbox(self._boxed_params(init_rng))
        return TrainState(jnp.zeros((), jnp.int32), params, self.optimizer.init(params), dropout_rng)

    def abstract_state(self) -> TrainState:
        """The train state as ShapeDtypeStructs with their shardings: what compiles and restores need."""
        return partitioning.with_shardings(jax.eval_shape(self._init_state, jax.random.PRNGKey(0)), self.state_sharding)

    def abstract_batch(self) -> dict[str, jax.ShapeDtypeStruct]:
        """A global training batch as ShapeDtypeStructs carrying the batch sharding."""
        return partitioning.with_shardings(abstract_batch(self.config), self.batch_sharding)

    def lower(self):
        """The train step lowered for the abstract (sharded) state and batch; nothing is allocated."""
        return self._train_jit.lower(self.abstract_state(), self.abstract_batch())

    def compile(self, available_memory: int | None = None):
        """Compiles the train step for abstract inputs and checks it fits, allocating nothing."""
        compiled = self.lower().compile()
        batch_devices = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
        check_fits(compiled, self.config, available_memory, batch_devices=batch_devices)
        self._train_step = compiled
        return compiled

    def train(self) -> TrainState:
        config, workdir = self.config, self.workdir
        prepare_workdir(workdir, config)
        self.compile()
        data = build_pretraining_data(config, workdir)
        iterator = make_batch_iterator(data, config)
        checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints)
        restored = checkpointer.restore_latest(self.abstract_state())
        if restored:
            step, state, data_state = restored
            iterator.load_state_dict(own_iterator_state(data_state))
            log.info("resumed from the checkpoint of step %d in %s", step, checkpointer.directory)
        else:
            state = self._init(jax.random.PRNGKey(config.seed))
        step = int(state.step)
        writer = MetricsWriter(workdir, config.total_steps, enabled=jax.process_index() == 0, start_step=step)
        stop = SigtermFlag()
        try:
            if step == 0:  # the untrained baseline, so curves start where learning starts
                baseline = self.evaluate(state.params, data)
                if baseline:
                    writer.write(0, baseline)
                    writer.progress(0, baseline, 0.0)
            while step < config.total_steps:
                index = next(iterator)
                batch = partitioning.global_batch(data.train_batch(index, step, iterator.epoch), self.mesh)
                state, metrics = self._train_step(state, batch)
                step += 1
                check_finite(float(metrics["loss"]), step, checkpointer)
                record, rate = {}, 0.0
                if step % config.log_every == 0 or step == config.total_steps:
                    rate = writer.steps_per_sec(step)
                    record = {k: float(v) for k, v in jax.device_get(metrics).items()}
                    record["tokens_per_sec"] = rate * config.batch_size * config.max_seq_length
                if step % config.eval_every == 0 or step == config.total_steps:
                    record.update(self.evaluate(state.params, data))
                if record:
                    writer.write(step, record)
                    writer.progress(step, record, rate)
                if step % config.checkpoint_every == 0 or step == config.total_steps or stop.raised:
                    checkpointer.save(step, state, iterator_states(iterator))
                    writer.plot()
                if stop.raised:
                    log.info("SIGTERM: saved step %d and stopping", step)
                    break
        finally:
            checkpointer.close()
            writer.plot()
            writer.close()
            stop.restore()
        return state

    def evaluate(self, params, data) -> dict[str, float]:
        """Mean metrics over the fixed evaluation batches, prefixed with `eval_`."""
        local = self.config.batch_size // jax.process_count()
        batches = list(data.eval_batches(local))
        if jax.process_count() > 1:  # every host runs the same number of steps, or the collectives hang
            batches = batches[: int(np.min(multihost_utils.process_allgather(np.int32(len(batches)))))]
        totals, count = {}, 0
        for batch in batches:
            metrics = jax.device_get(self._eval_step(params, partitioning.global_batch(batch, self.mesh)))
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + float(v)
            count += 1
        if not count:
            log.warning("the evaluation set has fewer than %d sequences; no evaluation", local)
        return {f"eval_{k}": v / count for k, v in totals.items()} if count else {}


def iterator_states(iterator) -> dict:
    """The data position to checkpoint: this host's, and with several hosts every host's (their shards differ
    in size, so their epochs end at different steps); orbax writes this JSON from process 0 only."""
    own = iterator.state_dict()
    if jax.process_count() == 1:
        return {"iterator": own}
    every = multihost_utils.process_allgather(np.asarray([own["epoch"], own["position"]], np.int32))
    return {"iterator": own, "iterators": [{"epoch": int(e), "position": int(p)} for e, p in every]}


def own_iterator_state(data_state: dict) -> dict:
    """This host's data position from a checkpoint's JSON (`iterator_states`)."""
    every = data_state.get("iterators")
    if every and len(every) == jax.process_count():
        return every[jax.process_index()]
    return data_state["iterator"]


class SigtermFlag:
    """Records SIGTERM (a preempted TPU VM) so the loop can save and stop; `restore` puts the old handler back."""

    def __init__(self):
        self.raised = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.raised = True

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Runs (or resumes) pretraining for `config` in `workdir`."""
    return Trainer(config, workdir).train()
