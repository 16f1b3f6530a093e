"""The fine-tuning model: a `BertModel` encoder without pretraining heads, plus one or more task heads.

Parameters are `{"backbone": <BertModel tree>, <head name>: <head tree>, ...}`:
the backbone has exactly the layout of a pretrained `BertModel` (so a
checkpoint's encoder is grafted in by key), and each head sits under its
own name ("head" for a single task; MT-DNN names one per task).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import ml_collections

from bert_jax.config_base import with_defaults_for_unset
from bert_jax.errors import ConfigError
from bert_jax.models.bert import BertModel
from bert_jax.models.common import KERNEL_INITS
from bert_jax.models.task_heads import HEAD_MODULES, POOLED_HEADS

BACKBONE = "backbone"
SINGLE_HEAD = "head"


def backbone_config(model_cfg: ml_collections.ConfigDict, head_kinds: Sequence[str]) -> ml_collections.ConfigDict:
    """`model_cfg` without pretraining heads, with the pooler exactly when a head reads the pooled output, and
    unset dropout rates (a fine-tuning config without a checkpoint) at their defaults."""
    cfg = ml_collections.ConfigDict(with_defaults_for_unset(model_cfg).to_dict())
    cfg.mlm_head = cfg.pair_head = cfg.rtd_head = cfg.sbo_head = False
    cfg.use_pooler = any(kind in POOLED_HEADS for kind in head_kinds)
    return cfg


class TaskModel(nn.Module):
    """Encoder + heads; `heads` is a tuple of (name, kind, num_labels). Returns the named head's output dict."""

    config: object  # FrozenConfigDict of the backbone's model block (see `backbone_config`)
    heads: tuple[tuple[str, str, int], ...]
    head_dropout: float = 0.1
    head_init: str = "normal"  # a key of common.KERNEL_INITS

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array | None = None,
        token_type_ids: jax.Array | None = None,
        deterministic: bool = True,
        head: str | None = None,
        position_ids: jax.Array | None = None,
        pool_index: jax.Array | None = None,
        mask_kind: str = "padding",
    ) -> dict[str, jax.Array]:
        """The head's outputs; `position_ids`, `pool_index` and mask_kind='packed' for packed rows (BertModel)."""
        kinds = {name: kind for name, kind, _ in self.heads}
        if head is None and len(self.heads) != 1:
            raise ValueError(f"pick one of the heads {sorted(kinds)} with head=NAME")
        head = head or self.heads[0][0]
        choices = input_ids.shape[1] if kinds[head] == "choice" and input_ids.ndim == 3 else None
        if choices is not None:  # [B, C, L] -> [B*C, L]: each choice is scored alone
            flat = lambda x: None if x is None else x.reshape(-1, x.shape[-1])  # noqa: E731
            input_ids, attention_mask, token_type_ids = map(flat, (input_ids, attention_mask, token_type_ids))
        out = BertModel(self.config, name=BACKBONE)(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            deterministic=deterministic,
            mask_kind=mask_kind,
            pool_index=pool_index,
        )
        results = {}
        for name, kind, num_labels in self.heads:  # every head at init, so all get parameters
            if name != head and not self.is_initializing():
                continue
            module = HEAD_MODULES[kind](
                self.config, num_labels, self.head_dropout, deterministic, self.head_init, name=name
            )
            results[name] = module(out.last_hidden_state, out.pooled_output)
        result = results[head]
        if choices is not None:
            result = {"logits": result["logits"].reshape(-1, choices)}
        return result


def build_task_model(
    model_cfg: ml_collections.ConfigDict, heads, head_dropout: float, head_init: str = "normal"
) -> TaskModel:
    """A `TaskModel` for `heads` ((name, kind, num_labels), ...) on the encoder of `model_cfg`; `head_init`
    names the heads' initial weight distribution (`finetune.head_init`)."""
    for name, kind, _ in heads:
        if kind not in HEAD_MODULES:
            raise ConfigError(f"head {name!r} has unknown kind {kind!r}; use one of {sorted(HEAD_MODULES)}")
    if head_init not in KERNEL_INITS:
        raise ConfigError(f"finetune.head_init={head_init!r} is unknown; use one of {sorted(KERNEL_INITS)}")
    cfg = backbone_config(model_cfg, [kind for _, kind, _ in heads])
    return TaskModel(ml_collections.FrozenConfigDict(cfg), tuple(tuple(h) for h in heads), head_dropout, head_init)
