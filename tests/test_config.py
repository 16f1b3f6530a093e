"""Config files load, overrides apply, and unknown fields fail with the list of valid ones."""

import glob
import os

import pytest

import bert_jax
from bert_jax.config import apply_overrides
from bert_jax.errors import ConfigError

CONFIGS = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "configs", "*.py")))
REQUIRED_MODEL_FIELDS = [
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "embedding_size",
    "share_layers",
    "max_position_embeddings",
    "type_vocab_size",
    "dtype",
    "remat_policy",
    "activation",
    "layer_norm_eps",
]


def test_every_size_config_exists():
    names = {os.path.basename(p)[:-3] for p in CONFIGS}
    wanted = {"bert_tiny", "bert_base", "bert_large", "albert_base", "albert_large", "albert_xlarge", "albert_xxlarge"}
    assert wanted <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.basename(p))
def test_config_loads_with_required_fields(path):
    config = bert_jax.load_config(path)
    for field in REQUIRED_MODEL_FIELDS:
        assert field in config.model, field
    assert config.max_seq_length > 0
    assert config.model.hidden_size % config.model.num_heads == 0


def test_overrides_from_strings_and_mapping():
    config = bert_jax.load_config("configs/bert_tiny.py", ["config.model.num_layers=3", "learning_rate=3e-4"])
    assert config.model.num_layers == 3 and config.learning_rate == 3e-4
    apply_overrides(config, {"model.dtype": "bfloat16", "learning_rate": 1})
    assert config.model.dtype == "bfloat16" and isinstance(config.learning_rate, float)


def test_unknown_field_lists_valid_ones():
    with pytest.raises(ConfigError, match="unknown config field 'model.hidden'.*model.hidden_size"):
        bert_jax.load_config("configs/bert_tiny.py", ["model.hidden=3"])
    with pytest.raises(ConfigError, match="unknown config field 'nope'"):
        bert_jax.load_config("configs/bert_tiny.py", {"nope": 1})


def test_wrong_type_and_missing_file():
    with pytest.raises(ConfigError, match="model.num_layers"):
        bert_jax.load_config("configs/bert_tiny.py", {"model.num_layers": "many"})
    with pytest.raises(ConfigError, match="does not exist"):
        bert_jax.load_config("configs/no_such_config.py")
