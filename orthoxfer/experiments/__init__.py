"""Experiments: the Table-1 benchmark and the step-cost timing."""
