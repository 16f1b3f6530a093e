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
    m.family = "bert"  # naming family for Hugging Face interop: 'bert' | 'albert' | 'roberta'
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
    # RoBERTa (fairseq): positions count real tokens from pad_token_id + 1, padding sits at pad_token_id
    m.position_ids_from_padding = False
    m.activation = "gelu"  # 'gelu' (exact, BERT), 'gelu_tanh' (ALBERT's gelu_new), 'relu'
    m.layer_norm_eps = 1e-12
    m.hidden_dropout_rate = 0.1
    m.attention_dropout_rate = 0.1
    m.classifier_dropout_rate = 0.0  # dropout before the NSP/SOP classifier (ALBERT: 0.1)
    m.initializer_range = 0.02
    m.dtype = "float32"  # compute dtype: 'float32' or 'bfloat16'; parameters stay float32
    m.remat_policy = "none"  # one of REMAT_POLICIES
    m.scan_layers = True  # one nn.scan over the stack (False: unrolled Python loop, per-layer parameter names)
    # layers per iteration of the scan's loop: 1 = a loop (compiles once per layer, for GPU/TPU), num_layers =
    # straight-line code on the same parameters (XLA:CPU runs it faster); 0 = auto: all on CPU, 1 elsewhere
    m.scan_unroll = 0
    m.use_pooler = True
    m.mlm_head = True
    m.pair_head = True  # NSP (BERT) or SOP (ALBERT) classifier on the pooled output
    m.rtd_head = False  # ELECTRA's replaced-token-detection classifier on every token (the discriminator)
    m.sbo_head = False  # SpanBERT's span-boundary objective (pretraining only; needs masking.scheme='span')
    m.sbo_positions = 200  # its relative-position table: offsets in tokens (SpanBERT's code also uses 200)
    m.update(overrides)
    return m


def with_defaults_for_unset(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`model` with each field left unset (None, e.g. a fine-tuning config's dropout rates, which mean "the
    checkpoint's") at `model_config`'s default, for a model built without a checkpoint to take them from."""
    defaults = model_config()
    unset = {k: defaults[k] for k, v in model.items() if v is None and defaults.get(k) is not None}
    if not unset:
        return model
    filled = ml_collections.ConfigDict(model.to_dict())
    filled.update(unset)
    return filled


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
    c.adam_b1 = 0.9  # Adam moments of both optimizers (RoBERTa: b2=0.98 for stability at large batch)
    c.adam_b2 = 0.999
    c.adam_eps = 1e-6
    c.weight_decay = 0.01
    c.schedule = "linear"  # decay after warmup: 'linear' | 'polynomial'
    c.schedule_power = 1.0
    c.max_grad_norm = 1.0  # 0 disables clipping
    c.grad_accum_steps = 1  # micro-batches per update; batch_size stays the global batch per update
    c.objective = "mlm"  # loss family (objectives/losses.py): 'mlm' (MLM + pair_objective)
    c.pair_objective = "nsp"  # 'nsp' (BERT) | 'sop' (ALBERT) | 'none' (RoBERTa-style packed sentences)
    c.short_seq_prob = 0.1
    c.masking = ml_collections.ConfigDict()
    c.masking.scheme = "token"  # 'token' | 'whole_word' | 'ngram' (ALBERT) | 'knowledge' (ERNIE) | 'span' (SpanBERT)
    c.masking.rate = 0.15
    c.masking.max_predictions = 20
    c.masking.max_ngram = 3
    c.masking.max_span_length = 10  # 'span' (SpanBERT): span lengths in words, Geometric(span_p) on 1..this
    c.masking.span_p = 0.2
    c.masking.replace_probs = (0.8, 0.1, 0.1)  # a chosen token becomes ([MASK], a random id, itself)
    c.masking.dynamic = True  # a fresh mask every time a sequence is seen; False: dupe_factor static copies
    c.masking.dupe_factor = 10
    # Knowledge units (data/knowledge_units.py). segmenter: '' (the tokenizer's words) | 'jieba' (Chinese words,
    # pip install "bert_jax[chinese]"); with one, 'whole_word' and 'ngram' use its words (Chinese-BERT-wwm).
    c.masking.segmenter = ""
    c.masking.lexicon = ""  # phrase/entity lexicon: one entry a line, optional '\t' type ('phrase' or an entity type)
    # 'knowledge' (ERNIE 1.0): each row masks units of one level drawn with these probabilities
    c.masking.unit_level_probs = "basic=0.5,phrase=0.25,entity=0.25"
    c.data = ml_collections.ConfigDict()
    c.data.source = "sample"  # 'sample' (made offline by the package) | 'text' | 'tfds'
    c.data.path = ""  # text: a file, folder or glob; one sentence per line, blank line between documents
    c.data.line_format = "sentences"  # 'sentences' (BERT format) | 'paragraphs' (one document per line) | 'fortunes'
    # Multilingual (data/multilingual.py): 'lang=path,lang=path' (file, folder or glob each) or a glob of
    # per-language folders ('corpus/*', the language is the folder name); replaces data.path when set.
    c.data.languages = ""
    c.data.language_smoothing = 0.7  # S: language i is sampled with q_i ∝ p_i^S (XLM, multilingual BERT)
    c.data.pack_mode = "full_sentences"  # pair_objective 'none': 'full_sentences' | 'doc_sentences' (RoBERTa)
    c.data.eval_path = ""  # held-out text; empty: the last eval_fraction of the documents
    c.data.eval_fraction = 0.05
    c.data.tfds_name = ""
    c.data.tfds_split = "train"
    c.data.tfds_text_key = "text"
    c.data.tfds_data_dir = ""
    c.tokenizer = ml_collections.ConfigDict()
    c.tokenizer.kind = "sentencepiece"  # trained on first use when path is empty: 'sentencepiece' | 'bpe'
    c.tokenizer.path = ""  # .model (sentencepiece), vocab.txt (WordPiece), vocab.json (BPE); empty: train one
    c.tokenizer.do_lower_case = True
    c.tokenizer.vocab_size = model.vocab_size  # for a tokenizer trained on first use
    c.tokenizer.character_coverage = 0.9995  # of a trained sentencepiece model: sentencepiece's advice for CJK text
    c.eval_batches = 10
    c.keep_checkpoints = 3
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: every device not used by the other axes
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    # The rule table (training/partitioning.py): logical axis -> mesh axes ('a,b'; '' replicated). With these
    # defaults the mesh shape picks the layout: data parallel, FSDP (mesh.fsdp), tensor parallel (mesh.tensor).
    c.sharding = ml_collections.ConfigDict()
    c.sharding.batch = "data,fsdp"
    c.sharding.length = ""
    c.sharding.vocab = "tensor"
    c.sharding.heads = "tensor"
    c.sharding.kv = ""
    c.sharding.mlp = "tensor"
    c.sharding.embed = "fsdp"
    c.sharding.layers = ""
    # JAX's persistent compilation cache (training/compilation_cache.py): a rerun of the same shapes loads the
    # compiled steps instead of compiling them again. '' turns it off; JAX_COMPILATION_CACHE_DIR, if set, wins.
    c.compilation_cache_dir = "~/.cache/bert_jax/xla"
    c.log_every = 100
    c.eval_every = 1000
    c.checkpoint_every = 1000
    masking = overrides.pop("masking", {})
    c.update(overrides)
    c.masking.update(masking)
    return c


TINY_SIZES = dict(num_layers=2, hidden_size=128, num_heads=2, intermediate_size=512, embedding_size=128)


def tiny_run(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Sizes a family's config for a laptop CPU (the `*_tiny` configs): minutes, not days.

    The family's recipe (objective, masking, optimizer) stays; the run gets a
    4096-piece vocabulary (a tokenizer trained on first use), 128 tokens,
    batch 32, 1500 steps at lr 1e-3, and frequent logs and evaluations.
    """
    config.model.vocab_size = config.tokenizer.vocab_size = 4096
    config.max_seq_length = 128
    config.masking.max_predictions = 20
    config.batch_size = 32
    config.total_steps = 1500
    config.warmup_steps = 150
    config.learning_rate = 1e-3
    config.log_every = 50
    config.eval_every = 250
    config.checkpoint_every = 250
    return config


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


def spanbert_config(**sizes) -> ml_collections.ConfigDict:
    """SpanBERT (Joshi et al. 2020): BERT's encoder, span masking + the span-boundary objective, no NSP.

    Section 3 and 4.1 of the paper: spans of whole words, lengths
    Geometric(0.2) on 1..10 words, 15% of the tokens with 80/10/10 per span;
    MLM + SBO losses summed; single contiguous segments of up to 512 tokens
    that stop at a document boundary (here `pack_mode='doc_sentences'`:
    whole sentences of one document, no NSP); a fresh mask each epoch
    (dynamic); cased WordPiece (28996 tokens, as the released models); Adam
    lr 1e-4, betas (0.9, 0.999), weight decay 0.01, 10K warmup steps then
    linear decay, dropout 0.1, batch 256 for 2.4M steps. `model.family`
    stays 'bert': the released checkpoints are BERT layout, and the SBO head
    is not exported (pretraining only).
    """
    config = bert_config(vocab_size=28996, pair_head=False, sbo_head=True, **sizes)
    config.total_steps = 2_400_000
    config.pair_objective = "none"
    config.masking.update(scheme="span", max_span_length=10, span_p=0.2, dynamic=True)
    config.data.pack_mode = "doc_sentences"
    config.tokenizer.do_lower_case = False  # cased, as the released SpanBERT models
    return config


def ernie_config(**sizes) -> ml_collections.ConfigDict:
    """ERNIE 1.0 (Sun et al. 2019): BERT's encoder and NSP with knowledge masking of words, phrases and entities.

    Shapes follow the released Chinese model (`ernie_config.json`): ReLU, 513
    positions, an 18,000-token character vocabulary, lower-cased. Phrases are
    jieba's words plus `masking.lexicon`'s phrase entries; entities are the
    lexicon's typed entries (the paper used its own chunker and NER tagger).
    """
    config = bert_config(vocab_size=18000, activation="relu", max_position_embeddings=513, **sizes)
    config.masking.update(scheme="knowledge", segmenter="jieba")
    return config


def roberta_config(**sizes) -> ml_collections.ConfigDict:
    """RoBERTa (Liu et al. 2019, Table 9): BERT's encoder trained without NSP on packed FULL-SENTENCES.

    Byte-level BPE vocab 50265 ('<s>'=0, '<pad>'=1, '</s>'=2, '<unk>'=3,
    '<mask>' last), positions offset past the padding id (hence 514 of them
    for 512 tokens), one token type, dynamic masking, Adam b2=0.98 eps=1e-6,
    no gradient clipping, batch 8K for 500K steps, lr 6e-4 (base; the large
    config sets 4e-4 and 30K warmup steps).
    """
    config = base_config(
        model_config(
            family="roberta",
            vocab_size=50265,
            max_position_embeddings=514,
            type_vocab_size=1,
            pad_token_id=1,
            layer_norm_eps=1e-5,
            position_ids_from_padding=True,
            pair_head=False,
            **sizes,
        ),
        max_seq_length=512,
        pair_objective="none",
        batch_size=8192,
        total_steps=500_000,
        warmup_steps=24_000,
        learning_rate=6e-4,
        optimizer="adamw",
        adam_b2=0.98,
        adam_eps=1e-6,
        weight_decay=0.01,
        max_grad_norm=0.0,
        masking=dict(max_predictions=77, dynamic=True),  # round(0.15 * 512); a fresh mask every time
    )
    config.data.pack_mode = "full_sentences"
    config.tokenizer.kind = "bpe"
    config.tokenizer.do_lower_case = False  # byte-level BPE is cased and lossless
    return config


def electra_config(
    generator_hidden_fraction: float = 0.25, mask_rate: float = 0.15, max_seq_length: int = 128, **sizes
) -> ml_collections.ConfigDict:
    """ELECTRA (Clark et al. 2020): a small MLM generator corrupts the input, the discriminator finds the fakes.

    `config.model` is the discriminator (the model ELECTRA releases and
    fine-tunes: no pooler, the RTD head); `config.electra` sizes the generator
    as ELECTRA's `get_generator_config` does (hidden = round(H * fraction),
    heads = max(1, hidden // 64), intermediate = 4 * hidden, layers =
    round(L * generator_layers_fraction)) and weighs the loss: MLM + 50 * RTD.
    Both share the word, position and token-type embeddings and their
    LayerNorm (`models/electra.py`).

    The recipe is ELECTRA's code (configure_pretraining.py, paper Table 6),
    Small's values here: AdamW lr 5e-4, 10k warmup, linear decay, batch 128
    of 128 tokens, 1M steps. Masking as `pretrain_helpers.mask`: 15% of the
    tokens (Large: 25%), of which 85% become [MASK] and 15% stay as they
    are (no random ids: the generator makes the replacements), at most
    `int((rate + 0.005) * max_seq_length)` per sequence. No NSP: sentences are
    packed up to the sequence length, close to ELECTRA's `ExampleBuilder`.
    """
    config = base_config(
        model_config(family="electra", use_pooler=False, mlm_head=False, pair_head=False, rtd_head=True, **sizes),
        objective="electra",
        pair_objective="none",
        max_seq_length=max_seq_length,
        batch_size=128,
        total_steps=1_000_000,
        warmup_steps=10_000,
        learning_rate=5e-4,
        optimizer="adamw",
        weight_decay=0.01,
        masking=dict(
            rate=mask_rate,
            max_predictions=int((mask_rate + 0.005) * max_seq_length),
            replace_probs=(0.85, 0.0, 0.15),
        ),
    )
    config.electra = ml_collections.ConfigDict()
    config.electra.generator_hidden_fraction = generator_hidden_fraction  # of the discriminator's hidden size
    config.electra.generator_layers_fraction = 1.0  # of the discriminator's layers
    config.electra.rtd_weight = 50.0  # ELECTRA's disc_weight; the generator's MLM loss has weight 1
    config.electra.temperature = 1.0  # of the generator's softmax when sampling replacements
    return config
