"""XLA compile time of a BERT-large training step with the layer stack scanned vs unrolled.

`scan_layers=True` turns the 24 layers into one `nn.scan` (an XLA while loop
whose body is compiled once); `scan_layers=False` unrolls them, so XLA sees
24 copies of the layer and its backward. The target is a scanned compile time
under 1/3 of the unrolled one.

What is timed is `jax.jit(step).lower(...).compile()` of
`jax.value_and_grad` of an MLM cross-entropy (the real pretraining objective
without the NSP term), lowered with abstract arguments only: parameter
shapes come from `jax.eval_shape`, inputs are `jax.ShapeDtypeStruct`s, so no
weights are allocated. Every measurement builds a new Python function and a
new `jax.jit`, and the persistent compilation cache is off, so nothing is
reused between measurements; a tiny compile first takes the one-time backend
start-up out of the first measurement. The forward alone (MLM logits) is
timed too, to show how much of the compile time is the backward pass, and
the whole train step (fwd+bwd plus the optimizer update of
`configs/bert_large.py`: AdamW with its decay mask and clipping, from
`training/optimizers.py`), which is what `bert_jax.main` compiles.
`--remat-policy` compiles both settings with that rematerialisation policy.
"""

from __future__ import annotations

# isort: off
import bert_jax  # noqa: F401  (first: its import applies bert_jax/host_memory.py before numpy/torch start threads)
# isort: on

import argparse
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from common import Timing, contention_since, cpu_description, cpu_snapshot, others_share, print_table

from bert_jax import load_config
from bert_jax.config_base import model_config
from bert_jax.models import build_model, init_params
from bert_jax.training.optimizers import make_optimizer

STEPS = ("fwd+bwd", "forward", "train step")
BERT_LARGE = {"num_layers": 24, "hidden_size": 1024, "embedding_size": 1024, "num_heads": 16, "intermediate_size": 4096}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--layers", type=int, default=BERT_LARGE["num_layers"])
    parser.add_argument("--hidden", type=int, default=BERT_LARGE["hidden_size"])
    parser.add_argument("--remat-policy", default="none", help="model.remat_policy of both settings")
    parser.add_argument("--repeats", type=int, default=3, help="compiles per setting (best and median reported)")
    return parser.parse_args()


def abstract_step_args(cfg: Any, batch: int, seq: int) -> tuple[Any, dict, jax.ShapeDtypeStruct]:
    """The model, its parameters as ShapeDtypeStructs (nothing allocated) and an abstract input batch."""
    model = build_model(cfg)
    params = jax.eval_shape(functools.partial(init_params, model), jax.random.key(0))
    return model, params, jax.ShapeDtypeStruct((batch, seq), jnp.int32)


def bert_large_optimizer() -> optax.GradientTransformation:
    """The optimizer `bert_jax.main` builds for configs/bert_large.py (schedule, decay mask, clipping)."""
    return make_optimizer(load_config("configs/bert_large.py"))


def step_fn(model: Any, step: str, optimizer: optax.GradientTransformation | None = None) -> Callable:
    """A fresh function for `step`: of `(params, input_ids)`, or `(params, opt_state, input_ids)` for a train step.

    'fwd+bwd': `(loss, grads)` of the MLM cross-entropy against the inputs
    themselves (the target measurement); 'forward': the MLM logits only, for
    context (how much of the time is the backward pass); 'train step':
    fwd+bwd and `optimizer`'s update, returning the new parameters and state.
    """

    def loss_fn(params, input_ids):
        logits = model.apply({"params": params}, input_ids).mlm_logits.astype(jnp.float32)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(log_probs, input_ids[..., None], axis=-1))

    if step == "forward":
        return lambda params, input_ids: model.apply({"params": params}, input_ids).mlm_logits
    if step == "fwd+bwd":
        return jax.value_and_grad(loss_fn)

    def train_step(params, opt_state, input_ids):
        loss, grads = jax.value_and_grad(loss_fn)(params, input_ids)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def compile_seconds(cfg: Any, step: str, batch: int, seq: int) -> tuple[float, float, float]:
    """(trace + lower seconds, compile seconds, others' core share meanwhile) of one fresh jit of `step`."""
    model, params, ids = abstract_step_args(cfg, batch, seq)
    optimizer = bert_large_optimizer() if step == "train step" else None
    fn = jax.jit(step_fn(model, step, optimizer))  # new function object: no jit cache entry can match
    args = (params, jax.eval_shape(optimizer.init, params), ids) if optimizer else (params, ids)
    t0 = cpu_snapshot()
    lowered = fn.lower(*args)
    t1 = cpu_snapshot()
    lowered.compile()
    t2 = cpu_snapshot()
    return t1.wall - t0.wall, t2.wall - t1.wall, others_share(t0, t2)


def main() -> None:
    args = parse_args()
    start = cpu_snapshot()
    jax.config.update("jax_enable_compilation_cache", False)
    jax.config.update("jax_compilation_cache_dir", None)
    sizes = {
        **BERT_LARGE,
        "num_layers": args.layers,
        "hidden_size": args.hidden,
        "embedding_size": args.hidden,
        "num_heads": max(1, args.hidden // 64),
        "intermediate_size": 4 * args.hidden,
    }
    print(f"machine: {cpu_description()}; jax {jax.__version__} on {jax.devices()[0].platform}")
    print(f"batch {args.batch}, seq {args.seq}, remat_policy {args.remat_policy}, {sizes}", flush=True)
    jax.jit(lambda x: x + 1).lower(jnp.zeros(())).compile()  # backend start-up, not part of any measurement

    keys = [(step, scan) for step in STEPS for scan in (True, False)]
    samples: dict[tuple[str, bool], list[tuple[float, float, float]]] = {key: [] for key in keys}
    for _ in range(args.repeats):
        for step, scan in keys:  # alternate, so a slow period of the machine hits every setting
            cfg = model_config(
                **sizes, scan_layers=scan, scan_unroll=1, remat_policy=args.remat_policy, mlm_head=True, pair_head=False
            )
            samples[step, scan].append(compile_seconds(cfg, step, args.batch, args.seq))
            lower, comp, others = samples[step, scan][-1]
            print(
                f"  {step}, scan_layers={scan}: lower {lower:.2f}s, compile {comp:.2f}s, "
                f"other processes {100 * others:.0f}%",
                flush=True,
            )

    rows = []
    for step in STEPS:
        lower, comp = {}, {}
        for scan in (True, False):
            others = tuple(o for _, _, o in samples[step, scan])
            lower[scan] = Timing(tuple(x for x, _, _ in samples[step, scan]), others)
            comp[scan] = Timing(tuple(c for _, c, _ in samples[step, scan]), others)
            rows.append(
                [
                    step,
                    f"scan_layers={scan}",
                    lower[scan].best,
                    comp[scan].best,
                    comp[scan].median,
                    f"{comp[scan].n_clean}/{args.repeats}",
                ]
            )
        rows.append(
            [
                step,
                "**scanned / unrolled**",
                lower[True].best / lower[False].best,
                comp[True].best / comp[False].best,
                comp[True].median / comp[False].median,
                "",
            ]
        )
    print_table(
        ["step", "setting", "trace+lower s (best)", "compile s (best)", "compile s (median)", "clean repeats"],
        rows,
        title=f"Compile time of {args.repeats} fresh jits each (target: scanned / unrolled fwd+bwd compile < 0.333)",
    )
    print(f"\n{contention_since(start)}")


if __name__ == "__main__":
    main()
