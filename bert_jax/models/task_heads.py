"""Fine-tuning heads, one per `Task.head` kind (tasks/base.py), returning the dict the task's loss reads.

Each head applies dropout to its input (`finetune.head_dropout`, BERT's
classifier dropout) and one Dense layer initialised like BERT's, from the
distribution `finetune.head_init` names (models/common.py KERNEL_INITS). Kernels
carry logical axis names like the rest of models/; the label axis is
unnamed (replicated), being small.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.models.common import dense
from bert_jax.models.dropout import Dropout


class _Head(nn.Module):
    config: object  # the model block (FrozenConfigDict)
    num_labels: int = 1
    dropout_rate: float = 0.1
    deterministic: bool = True
    init: str = "normal"  # a key of common.KERNEL_INITS

    def project(self, x: jax.Array, features: int, name: str = "classifier") -> jax.Array:
        x = Dropout(self.dropout_rate)(x, deterministic=self.deterministic)
        return dense(self.config, features, ("embed", None), name, self.init)(x).astype(jnp.float32)


class ClassificationHead(_Head):
    """Pooled output -> `num_labels` logits (GLUE classification)."""

    @nn.compact
    def __call__(self, hidden: jax.Array, pooled: jax.Array) -> dict[str, jax.Array]:
        return {"logits": self.project(pooled, self.num_labels)}


class RegressionHead(_Head):
    """Pooled output -> one score per row (STS-B)."""

    @nn.compact
    def __call__(self, hidden: jax.Array, pooled: jax.Array) -> dict[str, jax.Array]:
        return {"logits": self.project(pooled, 1)[:, 0]}


class SpanHead(_Head):
    """Every token -> start and end logits (SQuAD); position 0 ([CLS]) is the no-answer span of v2."""

    @nn.compact
    def __call__(self, hidden: jax.Array, pooled: jax.Array | None) -> dict[str, jax.Array]:
        logits = self.project(hidden, 2, "qa_outputs")
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}


class TokenHead(_Head):
    """Every token -> `num_labels` logits (NER tagging)."""

    @nn.compact
    def __call__(self, hidden: jax.Array, pooled: jax.Array | None) -> dict[str, jax.Array]:
        return {"logits": self.project(hidden, self.num_labels)}


class ChoiceHead(_Head):
    """Pooled output of each (flattened) choice -> one score; the model reshapes to [batch, choices]."""

    @nn.compact
    def __call__(self, hidden: jax.Array, pooled: jax.Array) -> dict[str, jax.Array]:
        return {"logits": self.project(pooled, 1)[:, 0]}


HEAD_MODULES: dict[str, type[_Head]] = {
    "classification": ClassificationHead,
    "regression": RegressionHead,
    "span": SpanHead,
    "token": TokenHead,
    "choice": ChoiceHead,
}
POOLED_HEADS = ("classification", "regression", "choice")  # heads that need `use_pooler`
