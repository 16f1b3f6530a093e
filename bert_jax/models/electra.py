"""ELECTRA's pretraining model: a small MLM generator and the discriminator, sharing their embeddings.

Both are `BertModel`s (one encoder core); they share one `Embeddings` (word,
position and token-type tables and their LayerNorm, as ELECTRA ties them),
and each projects `embedding_size` to its own hidden size where they differ
(`embeddings_project`, as in Hugging Face's `ElectraModel`). The generator's
tied MLM decoder is the shared word table. Sampling the replacements and the
losses live in `objectives/electra.py`; this module only computes.

Parameter tree: `embeddings/...` (shared), `generator/{encoder, mlm_head,
embeddings_project?}`, `discriminator/{encoder, rtd_head, embeddings_project?}`.
`split_params` turns it into two standalone `BertModel` trees (the form
Hugging Face conversion and `save_pretrained` use).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import ml_collections

from bert_jax.errors import ConfigError
from bert_jax.models.bert import BertModel, EncoderOutput
from bert_jax.models.embeddings import Embeddings

TOWERS = ("discriminator", "generator")


def generator_model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The generator's `config.model`, derived from the discriminator's as ELECTRA's `get_generator_config`.

    hidden = round(H * generator_hidden_fraction), heads = max(1, hidden // 64),
    intermediate = 4 * hidden, layers = round(L * generator_layers_fraction);
    everything else (vocabulary, embedding size, dropout, dtype) is the
    discriminator's. The official generators follow this rule exactly
    (electra-small: fraction 1, base: 1/3, large: 1/4 -> hidden 256, 4 heads).
    """
    if "electra" not in config:
        raise ConfigError("objective 'electra' needs the config.electra block; start from configs/electra_*.py")
    disc, e = config.model, config.electra
    hidden = int(round(disc.hidden_size * e.generator_hidden_fraction))
    if hidden < 1:
        raise ConfigError(f"electra.generator_hidden_fraction {e.generator_hidden_fraction} leaves no hidden units")
    gen = ml_collections.ConfigDict(disc.to_dict())
    gen.update(
        hidden_size=hidden,
        num_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden,
        num_layers=max(1, int(round(disc.num_layers * e.generator_layers_fraction))),
        use_pooler=False,
        mlm_head=True,
        pair_head=False,
        rtd_head=False,
    )
    return gen


def discriminator_model_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config.model` with exactly the discriminator's heads (the RTD classifier, no pooler)."""
    disc = ml_collections.ConfigDict(config.model.to_dict())
    disc.update(use_pooler=False, mlm_head=False, pair_head=False, rtd_head=True)
    return disc


class ElectraPretrainingModel(nn.Module):
    """The generator and the discriminator over one shared `Embeddings`.

    `generate` and `discriminate` run one model each (the loss calls them in
    turn, sampling in between); `__call__` runs both on the same input and
    returns the discriminator's output with the generator's `mlm_logits`,
    which is what `init` needs to create every parameter.
    """

    config: object  # FrozenConfigDict of the discriminator's config.model
    generator_config: object  # FrozenConfigDict of the generator's

    def setup(self):
        shared = self.config.as_configdict()
        shared.hidden_size = shared.embedding_size  # the towers project to their own sizes
        self.embeddings = Embeddings(ml_collections.FrozenConfigDict(shared))
        self.generator = BertModel(self.generator_config, shared_embeddings=self.embeddings)
        self.discriminator = BertModel(self.config, shared_embeddings=self.embeddings)

    def generate(self, input_ids: jax.Array, **inputs) -> EncoderOutput:
        """The generator: MLM logits at `masked_positions` (every position without them).

        `inputs` are `BertModel`'s keyword arguments (attention_mask, token_type_ids, ...).
        """
        return self.generator(input_ids, **inputs)

    def discriminate(self, input_ids: jax.Array, **inputs) -> EncoderOutput:
        """The discriminator: one replaced-token logit per position (`rtd_logits`)."""
        return self.discriminator(input_ids, **inputs)

    def __call__(self, input_ids: jax.Array, masked_positions: jax.Array | None = None, **inputs) -> EncoderOutput:
        gen = self.generate(input_ids, masked_positions=masked_positions, **inputs)
        disc = self.discriminate(input_ids, **inputs)
        return disc.replace(mlm_logits=gen.mlm_logits)


def build_electra(config: ml_collections.ConfigDict) -> ElectraPretrainingModel:
    """The joint model of a whole ELECTRA config (`config.model` is the discriminator)."""
    return ElectraPretrainingModel(
        ml_collections.FrozenConfigDict(discriminator_model_config(config)),
        ml_collections.FrozenConfigDict(generator_model_config(config)),
    )


def split_params(params: dict) -> dict[str, dict]:
    """{'discriminator': tree, 'generator': tree}: each a standalone `BertModel` parameter tree.

    Both get the shared embedding tables; a tower's `embeddings_project`
    becomes its `embeddings/projection`, where `BertModel` keeps it.
    """
    missing = [k for k in ("embeddings", *TOWERS) if k not in params]
    if missing:
        raise ValueError(f"not the parameters of an ELECTRA pretraining model: no {', '.join(missing)}")
    out = {}
    for name in TOWERS:
        tower = dict(params[name])
        embeddings = dict(params["embeddings"])
        if "embeddings_project" in tower:
            embeddings["projection"] = tower.pop("embeddings_project")
        out[name] = {"embeddings": embeddings, **tower}
    return out
