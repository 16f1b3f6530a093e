"""bert_jax: the BERT family in JAX/Flax.

Public API: `load_config`, `build_model`, `load_pretrained`, `save_pretrained`.
"""

from bert_jax.config import load_config
from bert_jax.models import EncoderOutput, build_model, count_params, init_params
from bert_jax.pretrained import load_pretrained, save_pretrained

__all__ = [
    "EncoderOutput",
    "build_model",
    "count_params",
    "init_params",
    "load_config",
    "load_pretrained",
    "save_pretrained",
]
