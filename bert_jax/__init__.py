"""bert_jax: the BERT family in JAX/Flax.

Public API: `load_config`, `build_model`, `load_pretrained`, `save_pretrained`; `retain_freed_memory` for
scripts and notebooks on CPU (bert_jax/host_memory.py).
"""

# First, before numpy or jax start threads: keep freed host memory in the process (bert_jax/host_memory.py).
from bert_jax.host_memory import retain_freed_memory  # isort: skip

retain_freed_memory()

from bert_jax.config import load_config  # noqa: E402
from bert_jax.models import EncoderOutput, build_model, count_params, init_params  # noqa: E402
from bert_jax.pretrained import load_pretrained, save_pretrained  # noqa: E402

__all__ = [
    "EncoderOutput",
    "build_model",
    "count_params",
    "init_params",
    "load_config",
    "load_pretrained",
    "retain_freed_memory",
    "save_pretrained",
]
