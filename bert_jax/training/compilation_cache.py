"""JAX's persistent compilation cache, on by default for the main command.

Compiling the train and eval steps is a fixed cost of every run: ~4-8 s per
batch width for a MiniLM fine-tuning step on a 2-core CPU (several widths per
run), minutes for large models on TPU. Reruns of the same shapes (another
seed, a resumed job, a sweep over learning rates) load the executables
instead. The cache holds compiled code that the process runs, so it must be a
directory only its user can write (JAX's own warning); the default is under
the user's home.
"""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)
MIN_COMPILE_SECONDS = 0.5  # JAX's default is 1 s; the eval steps of small models compile in ~1 s


def enable(directory: str) -> str | None:
    """Points JAX's persistent cache at `directory` (`config.compilation_cache_dir`; '~' expanded, local or
    gs://) and returns the directory in use, or None when off. A JAX_COMPILATION_CACHE_DIR already in the
    environment (or set in jax.config) takes precedence. Call before the first compile."""
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    if not directory:
        return None
    path = directory if "://" in directory else os.path.expanduser(directory)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return path
