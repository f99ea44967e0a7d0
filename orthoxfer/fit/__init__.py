"""The shared step loop and the steppers that run on it: alignment steps and fine-tuning steps, checkpoints."""
