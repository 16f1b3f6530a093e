"""Optimizers, partitioning, the train loop, checkpoints and metrics."""
