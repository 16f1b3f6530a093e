"""The config tree of a fine-tuning run (`configs/finetune/*.py` call `finetune_config`).

Same shape as a pretraining config where they overlap (optimizer, schedule,
mesh, logging, checkpoints: the trainer pieces are shared); the model block
comes from the checkpoint named by `init_from` (a Hugging Face folder or a
bert_jax workdir/checkpoint), or from `config.model` when `init_from` is
empty (random weights: tests and smoke runs). Over a checkpoint only the
fields that do not change the weights apply (training/finetune_init.py:
runtime fields, and the dropout rates and initializer_range when set).
"""

from __future__ import annotations

import ml_collections

from bert_jax.config_base import base_config, model_config

# model fields that are training choices, not architecture (the encoder's dropout, the std of freshly initialised
# tensors such as the head): unset (None) they keep the checkpoint's value, set they replace it, as
# `from_pretrained(..., hidden_dropout_prob=...)` does in transformers; without init_from, None is the default
TRAINING_FIELDS = ("hidden_dropout_rate", "attention_dropout_rate", "initializer_range")


def finetune_config(task: str, **overrides) -> ml_collections.ConfigDict:
    """Fine-tuning defaults (BERT's GLUE recipe: AdamW 2e-5, batch 32, 3 epochs, 10% warmup) for `task`."""
    finetune = overrides.pop("finetune", {})
    data = overrides.pop("data", {})
    c = base_config(model_config(), task="finetune", batch_size=32, learning_rate=2e-5, warmup_steps=0)
    for field in TRAINING_FIELDS:  # None: the checkpoint's (ALBERT v2 has no dropout, BERT 0.1)
        c.model[field] = ml_collections.config_dict.placeholder(float)
    c.init_from = ""  # Hugging Face checkpoint folder, or a bert_jax workdir / workdir/checkpoints/<step>
    c.max_seq_length = 128
    c.total_steps = 0  # 0: num_epochs over the training set
    c.eval_every = 0  # 0: once per epoch
    c.checkpoint_every = 0  # 0: with every evaluation
    c.log_every = 50
    c.finetune = ml_collections.ConfigDict()
    c.finetune.task = task  # a key of bert_jax.tasks.TASKS
    c.finetune.num_epochs = 3.0
    c.finetune.warmup_fraction = 0.1  # of the total steps; used when warmup_steps is 0
    c.finetune.layerwise_lr_decay = 1.0  # ELECTRA: < 1 scales layer l's rate by decay ** (L - l)
    c.finetune.head_dropout = 0.1  # dropout on the head's input
    # The head's initial weights, std model.initializer_range: "normal" (transformers' `_init_weights`, which
    # the reference recipes use) or "truncated_normal" (Google BERT's run_classifier.py: cut at 2 std, 0.88x
    # the std). The head barely moves in a short fine-tuning run, so its scale sets how fast logits grow.
    c.finetune.head_init = "normal"
    c.finetune.reinit_head = False  # True: a checkpoint head of another size is replaced by a fresh one
    c.finetune.best_metric = ""  # the dev metric that picks the kept checkpoint; empty: the task's first
    c.finetune.seeds = ""  # comma-separated; one run per seed, with each score, the median and the max; empty: seed
    # Random batches packed end to end into rows without padding (training/finetune_packing.py) for the
    # classification, regression and token heads without gradient accumulation; the others (and pack=False)
    # get padded batches, length-bucketed by bucket_lengths.
    c.finetune.pack = True
    c.finetune.bucket_lengths = True  # batches of similar lengths, padded to their own longest row
    c.finetune.bucket_window = 50  # batches per sorting window: fewer mix lengths more (less padding saved)
    # Each batch is padded to the next of these widths above its longest row ("32,64,128"; empty: the next
    # multiple of 16). Every width used is one XLA compile of the train and eval steps (seconds on a CPU), so
    # "auto" picks, for the batches of this run, the widths that minimise compile_cost_tokens per width plus
    # the padded tokens computed (finetune_data.choose_widths): coarse for a short run, fine for a long one.
    c.finetune.bucket_widths = "auto"
    # One more width ~ this many more padded tokens. Measured for all-MiniLM-L6-v2 on 2-core CPUs: a train-step
    # compile costs the time of ~11,000 tokens of steps on a host with slower matmuls and ~19,000 on one with
    # faster ones (bench/RESULTS_finetune.md, session 12); 16384 lies between (8192 added a shape SST-2 lost 18% to).
    c.finetune.compile_cost_tokens = 16384
    c.finetune.compile_ahead = True  # compile every batch width's train/eval step at start-up, on a thread
    # XLA:CPU backend optimisation level of those compiles (-1: XLA's default, 3). Level 1 compiles a MiniLM
    # train step in 6 CPU s instead of 10 with the same step time (training/precompile.py); 0 is 3x slower.
    c.finetune.cpu_opt_level = 1
    c.finetune.max_eval_examples = 0  # 0: the whole dev set
    c.finetune.max_train_examples = 0  # 0: the whole training set
    # SQuAD (BERT's run_squad.py defaults): windows over long contexts, span decoding, v2's no-answer margin.
    c.finetune.doc_stride = 128  # tokens between the starts of consecutive context windows
    c.finetune.max_query_length = 64  # question tokens kept
    c.finetune.max_answer_length = 30  # longest predicted answer, in tokens
    c.finetune.n_best_size = 20  # start and end candidates per window
    c.finetune.null_score_diff_threshold = 0.0  # v2: predict no answer when null - best span score > this
    c.finetune.squad_split_articles = 0  # > 0: train on the first N articles of data.train_file, eval on the rest
    c.finetune.labels = ""  # token classification: comma-separated tag set; empty: the task's own
    # Multi-task (MT-DNN, training/multitask.py): one encoder, one head per task, a task drawn per step.
    c.finetune.tasks = ""  # comma-separated task names, e.g. "sst2,mrpc,cola"; empty: the single finetune.task
    c.finetune.task_sampling_alpha = 0.5  # task t drawn with probability ∝ (training rows)^alpha; 1: proportional
    c.finetune.update(finetune)
    c.data.dir = ""  # the task's data folder (GLUE TSV layout, SQuAD json, CoNLL files, ...)
    c.data.train_file = ""  # file names in data.dir; empty: the task's usual names (e.g. train-v1.1.json)
    c.data.dev_file = ""
    c.data.update(data)
    c.update(overrides)
    return c
