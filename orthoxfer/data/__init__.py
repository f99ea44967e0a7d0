"""Data: the paper's eight datasets from a local root, their class names and prompts, few-shot pools."""
