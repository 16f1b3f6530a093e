"""Entry point: `python -m bert_jax.main --config=configs/bert_tiny.py --workdir=DIR [--config.x=y ...]`.

Dispatches on `config.task`. Without `--workdir` a folder named after the
config under ./workdirs is used and printed. Rerunning the same command
resumes from the workdir's latest checkpoint.
"""

from __future__ import annotations

import logging
import os
import sys

import jax
from absl import app, flags

from bert_jax.config import load_config
from bert_jax.errors import BertJaxError
from bert_jax.training import compilation_cache

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "config file, e.g. configs/bert_tiny.py; override fields with --config.x=y")
flags.DEFINE_string("workdir", None, "where checkpoints, metrics and plots go (default: ./workdirs/<config name>)")
flags.mark_flags_as_required(["config"])
_OVERRIDES: list[str] = []  # the --config.field=value arguments, applied by load_config


def default_workdir(config_path: str) -> str:
    name = os.path.splitext(os.path.basename(config_path))[0]
    return os.path.join("workdirs", name)


def maybe_initialize_distributed() -> None:
    """Joins a multi-process job when the environment describes one (TPU pods, SLURM, explicit vars).

    Explicit: JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID on every
    process. jax reads only the address itself, so the other two are passed on here; without them jax
    detects the cluster (SLURM, TPU pods, Open MPI). On CPU the processes exchange collectives over gloo.
    """
    env = os.environ
    explicit = env.get("JAX_COORDINATOR_ADDRESS") and int(env.get("JAX_NUM_PROCESSES", "1")) > 1
    slurm = int(env.get("SLURM_NTASKS", "1")) > 1
    if not (explicit or slurm or env.get("BERT_JAX_DISTRIBUTED") == "1"):
        return
    if jax.config.jax_cpu_collectives_implementation in (None, "none"):  # older jax: CPU hosts cannot talk
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # must precede the backend's start
    kwargs = {}
    if explicit:
        if "JAX_PROCESS_ID" not in env:
            raise app.UsageError("JAX_COORDINATOR_ADDRESS and JAX_NUM_PROCESSES are set but JAX_PROCESS_ID is not")
        kwargs = dict(
            coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(env["JAX_NUM_PROCESSES"]),
            process_id=int(env["JAX_PROCESS_ID"]),
        )
    jax.distributed.initialize(**kwargs)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger().setLevel(logging.INFO)  # bert_jax's own progress lines
    for noisy in ("absl", "jax", "orbax", "tensorflow"):  # orbax logs every save through absl at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    maybe_initialize_distributed()
    workdir = FLAGS.workdir
    try:
        config = config_from_flags()
        cache = compilation_cache.enable(config.compilation_cache_dir)
        logging.info("compilation cache: %s", cache or "off (config.compilation_cache_dir='')")
        if workdir is None:
            workdir = default_workdir(FLAGS.config)
            print(f"no --workdir given; using {workdir}", flush=True)
        if config.task == "pretrain":
            from bert_jax.training.trainer import train

            train(config, workdir)
        elif config.task == "finetune":
            from bert_jax.training.finetune import finetune

            finetune(config, workdir)
        else:
            raise BertJaxError(f"unknown task {config.task!r}; use 'pretrain' or 'finetune'")
    except BertJaxError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(f"done; outputs in {workdir} (metrics.jsonl, curves.png, tensorboard/, checkpoints/)", flush=True)


def config_from_flags():
    """The config named by `--config`, with the `--config.field=value` overrides applied (main and bert_jax.plan)."""
    return load_config(FLAGS.config, _OVERRIDES)


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates `--config.field=value` arguments from absl's own flags."""
    overrides = [a[2:] for a in argv if a.startswith("--config.")]
    return [a for a in argv if not a.startswith("--config.")], overrides


def run(entry=None) -> None:
    """Runs `entry(argv)` (default: `main`) under absl, the `--config.x=y` overrides set aside for the config."""
    argv, overrides = split_overrides(sys.argv)
    _OVERRIDES[:] = overrides
    app.run(entry or main, argv=argv)


if __name__ == "__main__":
    run()
