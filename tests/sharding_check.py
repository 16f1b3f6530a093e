"""Run as a script with 8 fake CPU devices: the same train steps on 1 and on 8 devices must agree.

Kept out of the pytest process because the device count is fixed when JAX starts.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

import bert_jax  # noqa: E402
from bert_jax.training import partitioning  # noqa: E402
from bert_jax.training.trainer import Trainer, abstract_batch  # noqa: E402


def synthetic_batch(config, step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(step)
    shapes = abstract_batch(config)
    b, n = shapes["input_ids"].shape
    p = shapes["masked_ids"].shape[1]
    return {
        "input_ids": rng.integers(5, config.model.vocab_size, (b, n)).astype(np.int32),
        "attention_mask": (np.arange(n)[None] < rng.integers(n // 2, n + 1, (b, 1))).astype(np.int32),
        "token_type_ids": (np.arange(n)[None] >= n // 2).astype(np.int32).repeat(b, 0),
        "masked_positions": np.sort(rng.integers(1, n // 2, (b, p)), axis=1).astype(np.int32),
        "masked_ids": rng.integers(5, config.model.vocab_size, (b, p)).astype(np.int32),
        "masked_weights": (rng.random((b, p)) < 0.9).astype(np.float32),
        "pair_labels": rng.integers(0, 2, b).astype(np.int32),
    }


LAYOUTS = {  # name -> config.mesh; the same rule table (config.sharding) everywhere
    "data8": {"mesh.data": 8},
    "fsdp8": {"mesh.data": 1, "mesh.fsdp": 8},
    "data2_tensor4": {"mesh.data": 2, "mesh.tensor": 4},
    "data2_fsdp2_tensor2": {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2},
}


def run(devices, accum: int, dropout: float, layout: dict | None = None) -> dict:
    # 4 heads and a vocabulary of 320 so that tensor=4 splits heads, FFN and vocabulary evenly
    overrides = {"batch_size": 16, "max_seq_length": 32, "model.vocab_size": 320, "grad_accum_steps": accum}
    overrides.update({"model.num_heads": 4, "model.hidden_dropout_rate": dropout})
    overrides.update({"model.attention_dropout_rate": dropout, **(layout or {})})
    config = bert_jax.load_config("configs/bert_tiny.py", overrides)
    trainer = Trainer(config, "unused", devices=devices)
    trainer.compile()
    state = trainer._init(jax.random.PRNGKey(0))
    losses = []
    for step in range(3):
        batch = partitioning.global_batch(synthetic_batch(config, step), trainer.mesh)
        state, metrics = trainer._train_step(state, batch)
        losses.append(float(metrics["loss"]))
    return {
        "losses": losses,
        "params": jax.device_get(state.params),
        # what one device really holds, read off the arrays' shards
        "param_bytes": sum(a.addressable_shards[0].data.nbytes for a in jax.tree.leaves(state.params)),
        "opt_bytes": sum(a.addressable_shards[0].data.nbytes for a in jax.tree.leaves(state.opt_state)),
        "total_param_bytes": sum(a.nbytes for a in jax.tree.leaves(state.params)),
        "planned_param_bytes": partitioning.per_device_bytes(trainer.abstract_state().params),
        "word_embedding_spec": str(state.params["embeddings"]["word_embeddings"]["embedding"].sharding.spec),
        "query_kernel_spec": str(state.params["encoder"]["layers"]["attention"]["query"]["kernel"].sharding.spec),
    }


def main() -> None:
    assert jax.device_count() == 8, jax.devices()
    diff = lambda a, b: max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.max(np.abs(x - y))), a, b)))
    # dropout on: its masks hash the global element index, so they do not depend on the sharding
    one = run(jax.devices()[:1], accum=1, dropout=0.1)
    out = {"one": one["losses"], "layouts": {}}
    for name, layout in LAYOUTS.items():
        r = run(jax.devices(), accum=1, dropout=0.1, layout=layout)
        out["layouts"][name] = {
            "losses": r["losses"],
            "param_diff": diff(one["params"], r["params"]),
            **{k: r[k] for k in r if k.endswith("_bytes") or k.endswith("_spec")},
        }
    # accumulation draws other dropout masks per micro-batch, so compare it without dropout
    plain = run(jax.devices(), accum=1, dropout=0.0)
    accum = run(jax.devices(), accum=2, dropout=0.0)
    out.update(plain=plain["losses"], accum=accum["losses"], param_diff_accum=diff(plain["params"], accum["params"]))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
