"""Shared building blocks of the files in `configs/`.

Every size config calls these helpers so that sizes differ only in numbers:
`model_config(...)` gives the `config.model` block and `base_config(...)` the
whole tree. Fields not set here do not exist, and `load_config` refuses
overrides of unknown fields.
"""

from __future__ import annotations

import ml_collections

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
REMAT_POLICIES = ("none", "nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable")


def model_config(**overrides) -> ml_collections.ConfigDict:
    """The `config.model` block: BERT-base shapes unless overridden."""
    m = ml_collections.ConfigDict()
    m.family = "bert"  # naming family for Hugging Face interop: 'bert' | 'albert'
    m.vocab_size = 30522
    m.hidden_size = 768
    m.num_layers = 12
    m.num_heads = 12
    m.intermediate_size = 3072
    m.embedding_size = 768  # < hidden_size adds ALBERT's factorized E->H projection
    m.share_layers = False  # ALBERT: one parameter set broadcast to every layer
    m.max_position_embeddings = 512
    m.type_vocab_size = 2
    m.pad_token_id = 0
    m.activation = "gelu"  # 'gelu' (exact, BERT), 'gelu_tanh' (ALBERT's gelu_new), 'relu'
    m.layer_norm_eps = 1e-12
    m.hidden_dropout_rate = 0.1
    m.attention_dropout_rate = 0.1
    m.classifier_dropout_rate = 0.0  # dropout before the NSP/SOP classifier (ALBERT: 0.1)
    m.initializer_range = 0.02
    m.dtype = "float32"  # compute dtype: 'float32' or 'bfloat16'; parameters stay float32
    m.remat_policy = "none"  # one of REMAT_POLICIES
    m.scan_layers = True  # one nn.scan over the stack (False: unrolled Python loop)
    m.use_pooler = True
    m.mlm_head = True
    m.pair_head = True  # NSP (BERT) or SOP (ALBERT) classifier on the pooled output
    m.update(overrides)
    return m


def base_config(model: ml_collections.ConfigDict, **overrides) -> ml_collections.ConfigDict:
    """The whole config tree around a model block, with pretraining defaults.

    Training fields carry the papers' hyperparameters; `max_seq_length` is the
    sequence length the data pipeline produces.
    """
    c = ml_collections.ConfigDict()
    c.task = "pretrain"
    c.model = model
    c.max_seq_length = 128
    c.seed = 0
    c.batch_size = 256  # global, over all devices and hosts
    c.total_steps = 1_000_000
    c.warmup_steps = 10_000
    c.learning_rate = 1e-4
    c.optimizer = "adamw"  # 'adamw' | 'lamb'
    c.weight_decay = 0.01
    c.schedule = "linear"  # decay after warmup: 'linear' | 'polynomial'
    c.schedule_power = 1.0
    c.max_grad_norm = 1.0  # 0 disables clipping
    c.grad_accum_steps = 1  # micro-batches per update; batch_size stays the global batch per update
    c.objective = "mlm"  # loss family (objectives/losses.py): 'mlm' (MLM + pair_objective)
    c.pair_objective = "nsp"  # 'nsp' (BERT) | 'sop' (ALBERT) | 'none' (RoBERTa-style packed sentences)
    c.short_seq_prob = 0.1
    c.masking = ml_collections.ConfigDict()
    c.masking.scheme = "token"  # 'token' | 'whole_word' | 'ngram' (ALBERT)
    c.masking.rate = 0.15
    c.masking.max_predictions = 20
    c.masking.max_ngram = 3
    c.masking.dynamic = True  # a fresh mask every time a sequence is seen; False: dupe_factor static copies
    c.masking.dupe_factor = 10
    c.data = ml_collections.ConfigDict()
    c.data.source = "sample"  # 'sample' (made offline by the package) | 'text' | 'tfds'
    c.data.path = ""  # text: a file, folder or glob; one sentence per line, blank line between documents
    c.data.line_format = "sentences"  # 'sentences' (BERT format) | 'paragraphs' (one document per line)
    c.data.eval_path = ""  # held-out text; empty: the last eval_fraction of the documents
    c.data.eval_fraction = 0.05
    c.data.tfds_name = ""
    c.data.tfds_split = "train"
    c.data.tfds_text_key = "text"
    c.data.tfds_data_dir = ""
    c.tokenizer = ml_collections.ConfigDict()
    c.tokenizer.path = ""  # .model (sentencepiece) or vocab.txt (WordPiece); empty: train one on the corpus
    c.tokenizer.do_lower_case = True
    c.tokenizer.vocab_size = model.vocab_size  # for a tokenizer trained on first use
    c.eval_batches = 10
    c.keep_checkpoints = 3
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: every device not used by the other axes
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.log_every = 100
    c.eval_every = 1000
    c.checkpoint_every = 1000
    masking = overrides.pop("masking", {})
    c.update(overrides)
    c.masking.update(masking)
    return c


def bert_config(**sizes) -> ml_collections.ConfigDict:
    """BERT (Devlin et al. 2019): WordPiece vocab 30522, MLM + NSP, Adam 1e-4, batch 256."""
    return base_config(
        model_config(family="bert", **sizes),
        max_seq_length=512,
        batch_size=256,
        total_steps=1_000_000,
        pair_objective="nsp",
        warmup_steps=10_000,
        learning_rate=1e-4,
        optimizer="adamw",
        weight_decay=0.01,
        masking=dict(max_predictions=77),  # round(0.15 * 512), as BERT's README advises
    )


def albert_config(**sizes) -> ml_collections.ConfigDict:
    """ALBERT (Lan et al. 2020): E=128, shared layers, SOP, LAMB 0.00176, batch 4096, seq 512.

    Follows the released v2 checkpoints where they differ from the paper:
    gelu_new (tanh) activation and no dropout.
    """
    return base_config(
        model_config(
            family="albert",
            vocab_size=30000,
            embedding_size=128,
            share_layers=True,
            activation="gelu_tanh",
            hidden_dropout_rate=0.0,
            attention_dropout_rate=0.0,
            classifier_dropout_rate=0.1,
            **sizes,
        ),
        max_seq_length=512,
        pair_objective="sop",
        batch_size=4096,
        total_steps=125_000,
        warmup_steps=3_125,
        learning_rate=0.00176,
        optimizer="lamb",
        weight_decay=0.01,
        masking=dict(scheme="ngram", max_predictions=20),  # ALBERT's n-gram masking, 20 per sequence
    )
