"""Sparsifiers: magnitude pruning and sparse variational dropout."""
