"""Reference Hugging Face PyTorch models with random weights, and a batch to compare on."""

from __future__ import annotations

import numpy as np
import torch
import transformers

SMALL = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    type_vocab_size=2,
)
FAMILY_CONFIGS = {
    "bert": lambda **kw: transformers.BertConfig(**{**SMALL, **kw}),
    "albert": lambda **kw: transformers.AlbertConfig(**{**SMALL, "embedding_size": 16, "hidden_act": "gelu_new", **kw}),
    # RoBERTa's own layout: padding id 1, one token type, positions offset past the padding id
    "roberta": lambda **kw: transformers.RobertaConfig(
        **{**SMALL, "type_vocab_size": 1, "pad_token_id": 1, "layer_norm_eps": 1e-5, **kw}
    ),
    # ELECTRA with embedding_size != hidden_size, so that embeddings_project is exercised
    "electra": lambda **kw: transformers.ElectraConfig(**{**SMALL, "embedding_size": 16, **kw}),
}
# architecture name prefix -> family; any other architecture is BERT
FAMILY_PREFIXES = {"Albert": "albert", "Roberta": "roberta", "Electra": "electra"}


def random_hf_model(architecture: str, seed: int = 0, **config_overrides) -> torch.nn.Module:
    """An eval-mode model whose every weight is drawn at a scale that makes errors visible."""
    family = next((f for prefix, f in FAMILY_PREFIXES.items() if architecture.startswith(prefix)), "bert")
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(FAMILY_CONFIGS[family](**config_overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model


def padded_pair_batch(
    vocab_size: int, seed: int = 0, pad_token_id: int = 0, type_vocab_size: int = 2
) -> dict[str, np.ndarray]:
    """Two segments per row and right padding of varied length: what parity must hold on.

    Text ids never equal `pad_token_id`; with one token type the second segment keeps type 0.
    """
    rng = np.random.default_rng(seed)
    lengths, first = [11, 7, 4], [5, 3, 2]
    width = max(lengths) + 2
    ids = np.full((len(lengths), width), pad_token_id, np.int64)
    types = np.zeros_like(ids)
    mask = np.zeros_like(ids)
    for row, (n, a) in enumerate(zip(lengths, first)):
        text = rng.integers(0, vocab_size - 1, n)
        ids[row, :n] = text + (text >= pad_token_id)  # skips the padding id
        types[row, a:n] = 1 if type_vocab_size > 1 else 0
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def torch_outputs(model: torch.nn.Module, batch: dict[str, np.ndarray]):
    with torch.no_grad():
        return model(**{k: torch.tensor(v) for k, v in batch.items()}, output_hidden_states=True)
