"""`training/compilation_cache.enable`: the config's directory gets the compiled programs; the environment wins;
'' turns it off. Each case runs in its own process (JAX reads its cache settings once per process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = textwrap.dedent(
    """
    import sys
    import jax, jax.numpy as jnp
    from bert_jax.training import compilation_cache
    used = compilation_cache.enable(sys.argv[1])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # cache even this tiny program
    jax.jit(lambda x: jnp.tanh(x @ x.T) + 1).lower(jnp.ones((8, 8))).compile()
    print(used)
    """
)


def run_child(directory: str, env_dir: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    if env_dir is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = env_dir
    done = subprocess.run(
        [sys.executable, "-c", CHILD, directory], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_the_configured_directory_gets_the_compiled_program(tmp_path):
    cache = tmp_path / "cache"
    assert run_child(str(cache)) == str(cache)
    assert os.listdir(cache), "nothing was written to the cache"


def test_the_environment_wins_and_empty_turns_it_off(tmp_path):
    configured, from_env = tmp_path / "configured", tmp_path / "env"
    assert run_child(str(configured), env_dir=str(from_env)) == str(from_env)
    assert os.listdir(from_env) and not configured.exists()
    assert run_child("") == "None"
