"""bert_tiny learns on real text: WikiText-2 validation for training, its test split held out.

A CI-sized run (300 steps of 32 x 64 tokens). Thresholds come from measured
runs and leave room for noise; see the issue note and bench/RESULTS.md for a
longer run and its curve.
"""

from __future__ import annotations

from tests.wikitext_runs import evaluations, run_on_wikitext, summary, training_loss_drop


def test_loss_falls_and_heldout_mlm_accuracy_rises(data_dir, tmp_path):
    records = run_on_wikitext("bert_tiny", data_dir, tmp_path)
    evals = evaluations(records, "eval_mlm_accuracy")
    first, last = evals[0], evals[-1]
    report = summary(evals, ("eval_loss", "eval_mlm_accuracy"))
    assert last["eval_mlm_loss"] < first["eval_mlm_loss"] - THRESHOLDS["eval_mlm_loss_drop"], report
    assert last["eval_mlm_accuracy"] > first["eval_mlm_accuracy"] + THRESHOLDS["eval_mlm_accuracy_gain"], report
    assert training_loss_drop(records) > THRESHOLDS["train_loss_drop"]


# Measured on 2 CPU cores (two runs): held-out MLM loss 7.63 -> 5.16 / 5.08, held-out MLM accuracy
# 0.00 -> 0.179 / 0.186, training loss (mean of the first three logs -> last three) 6.41 -> 5.83 / 6.39 -> 5.68.
# Held-out NSP accuracy stays at the majority rate (~0.75): at 64 tokens many WikiText chunks hold one
# sentence, and BERT's recipe then always draws a random B, so it is not asserted here.
THRESHOLDS = {"eval_mlm_loss_drop": 1.5, "eval_mlm_accuracy_gain": 0.12, "train_loss_drop": 0.3}
