"""Pretraining objectives: masking schemes for masked-LM (and, later, their losses)."""
