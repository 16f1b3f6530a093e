"""Run as a script, after a 2-process run of `bert_jax.main` in WORKDIR: `multihost_check.py WORKDIR --config.x=y ...`.

In one process with 8 fake CPU devices it

1. replays the 2-process run without `jax.distributed`: each host's data is
   built as that host builds it (`build_pretraining_data(..., host=(i, 2))`),
   and every global batch is host 0's rows followed by host 1's, trained on a
   different mesh (pure data parallelism over 8 devices);
2. restores the 2-process run's latest checkpoint into a third mesh shape;

and prints one JSON line: the replay's logged metrics, and how far the
restored state is from the replayed one. Equal states mean the two hosts
trained exactly what one process trains on the same global batches, and the
checkpoint they wrote together restores into another mesh.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

import bert_jax  # noqa: E402
from bert_jax.data.pipeline import build_pretraining_data, make_batch_iterator  # noqa: E402
from bert_jax.training import partitioning  # noqa: E402
from bert_jax.training.checkpoints import Checkpointer  # noqa: E402
from bert_jax.training.trainer import Trainer  # noqa: E402

HOSTS = 2
REPLAY_MESH = {"mesh.data": 8, "mesh.fsdp": 1, "mesh.tensor": 1}
RESTORE_MESH = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}


def load(overrides: list[str], mesh: dict) -> ml_collections.ConfigDict:
    return bert_jax.load_config("configs/bert_tiny.py", [*overrides, *(f"{k}={v}" for k, v in mesh.items())])


def diff(a: list, b: list) -> float:
    """The largest absolute difference between two lists of arrays."""
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b, strict=True))


def concat(batches: list[dict]) -> dict:
    """The global batch: the hosts' rows in process order (process i holds devices 4i..4i+3)."""
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def evaluate(trainer: Trainer, params, datas, config) -> dict:
    """`Trainer.evaluate` of a 2-host run: each host's evaluation batches, as many as the shortest host has."""
    per_host = [list(d.eval_batches(config.batch_size // HOSTS)) for d in datas]
    totals, count = {}, 0
    for batches in zip(*per_host):
        metrics = jax.device_get(trainer._eval_step(params, partitioning.global_batch(concat(batches), trainer.mesh)))
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0.0) + float(v)
        count += 1
    return {f"eval_{k}": v / count for k, v in totals.items()}


def replay(workdir: str, overrides: list[str]):
    """`Trainer.train` of the 2-host run, both hosts' data in this one process; returns (records, state, data)."""
    config = load(overrides, REPLAY_MESH)
    trainer = Trainer(config, workdir)
    trainer.compile()
    datas = [build_pretraining_data(config, workdir, host=(i, HOSTS)) for i in range(HOSTS)]
    iterators = [make_batch_iterator(d, config, host=(i, HOSTS)) for i, d in enumerate(datas)]
    state = trainer._init(jax.random.PRNGKey(config.seed))
    initial = jax.device_get(state.params)
    records = [{"step": 0, **evaluate(trainer, state.params, datas, config)}]
    for step in range(config.total_steps):
        rows = [d.train_batch(next(it), step, it.epoch) for d, it in zip(datas, iterators)]
        state, metrics = trainer._train_step(state, partitioning.global_batch(concat(rows), trainer.mesh))
        record = {}
        if (step + 1) % config.log_every == 0 or step + 1 == config.total_steps:
            record = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if (step + 1) % config.eval_every == 0 or step + 1 == config.total_steps:
            record.update(evaluate(trainer, state.params, datas, config))
        if record:
            records.append({"step": step + 1, **record})
    hosts = {
        "param_change": diff(jax.tree.leaves(initial), jax.tree.leaves(jax.device_get(state.params))),
        "sequences": [[len(d.train.input_ids), len(d.eval.input_ids)] for d in datas],
        "iterators": [it.state_dict() for it in iterators],
    }
    return records, jax.device_get(state), hosts


def main() -> None:
    workdir, overrides = sys.argv[1], [a.removeprefix("--config.") for a in sys.argv[2:]]
    assert jax.device_count() == 8 and jax.process_count() == 1, jax.devices()
    records, replayed, hosts = replay(workdir, overrides)

    target = Trainer(load(overrides, RESTORE_MESH), workdir)
    checkpointer = Checkpointer(workdir, asynchronous=False)
    steps = checkpointer.steps()
    step, restored, data_state = checkpointer.restore_latest(target.abstract_state())
    checkpointer.close()
    want = jax.tree.leaves(target.state_sharding)
    got = jax.tree.leaves(restored)
    on_target_mesh = all(a.sharding.is_equivalent_to(s, a.ndim) for a, s in zip(got, want))
    restored = jax.device_get(restored)
    out = {
        "records": records,
        "hosts": hosts,
        "checkpoint_steps": steps,
        "restored_step": step,
        "restored_state_step": int(restored.step),
        "data_state": data_state,
        "on_target_mesh": on_target_mesh,
        "sharded_leaves": sum(not s.is_fully_replicated for s in want),
        "param_diff": diff(jax.tree.leaves(restored.params), jax.tree.leaves(replayed.params)),
        "opt_state_diff": diff(jax.tree.leaves(restored.opt_state), jax.tree.leaves(replayed.opt_state)),
        "rng_equal": bool(np.array_equal(restored.rng, replayed.rng)),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
