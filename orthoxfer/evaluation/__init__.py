"""Evaluation: accuracy, the baselines, diagnostics of a transfer, and how related two models are."""
