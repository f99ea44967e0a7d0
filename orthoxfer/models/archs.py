"""Custom open_clip architectures, registered by name so that every ``ARCH:...`` code path serves them.

In a module of its own because both the loader (``register_arch`` is its public name
too) and the transformers converter, which registers the shape of a checkpoint that
matches no known config, need it, and the loader imports the converter.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip


def register_arch(name: str, config: dict) -> None:
    """Make a custom open_clip architecture (a model config dict) loadable as ``name:none`` or ``name:/path``.

    Small CLIPs (tests, the offline suite) are real open_clip classes with their own
    configs; registering one lets every ``ARCH:...`` code path serve them unchanged.
    """
    if not all(k in config for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ValueError("an open_clip model config needs embed_dim, vision_cfg and text_cfg")
    with tempfile.TemporaryDirectory() as folder:  # open_clip keeps the parsed config after the scan
        path = Path(folder) / f"{name}.json"
        path.write_text(json.dumps(config))
        open_clip.add_model_config(path)
