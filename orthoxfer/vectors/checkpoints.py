"""A task vector from a fine-tuned checkpoint in any format orthoxfer reads, and its base.

The library side of ``orthoxfer vector from-checkpoints``: an open_clip state dict, a
transformers CLIP (converted, its projection taken from the base where a
``CLIPVisionModel`` has none), or a PEFT LoRA adapter (read as a LoRA vector, factors
kept). What was read is recorded in the vector's meta (``finetuned_format`` and, for
transformers, the open_clip architecture and activation its config implies), so the
command can say it and a later reader can tell.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orthoxfer.errors import UsageError
from orthoxfer.models.loading import LoadedModel
from orthoxfer.models.state_dicts import PEFT, finetuned_model, resolve_finetuned, transformers_model
from orthoxfer.vectors.peft_lora import read_adapter
from orthoxfer.vectors.sites import find_sites
from orthoxfer.vectors.taskvector import TaskVector


def vector_from_checkpoint(
    base: LoadedModel,
    finetuned: str,
    sites: str | None = None,
    full: bool = False,
    cache_dir: Path | None = None,
    meta: dict[str, Any] | None = None,
) -> TaskVector:
    """``finetuned - base`` on ``sites`` (default ``attn``; an adapter's: the layers it targets), as a TaskVector."""
    kind, found = resolve_finetuned(finetuned, cache_dir)
    if kind == PEFT and full:
        raise UsageError(f"{finetuned} is a LoRA adapter: it changes no parameter but its factors; drop --full")
    meta = {"finetuned": finetuned, **(meta or {}), "finetuned_format": kind}
    if isinstance(found, Path):  # an adapter folder or an open_clip weights file
        if kind != PEFT:
            return TaskVector.from_models(
                base.model, finetuned_model(found, base.model), sites or "attn", full=full, meta=meta
            )
        vector = read_adapter(found, base.model, meta)
        if sites is None:
            return vector
        chosen = [s.name for s in find_sites(base.model, sites) if s.name in vector.sites]
        if not chosen:
            raise UsageError(f"--sites {sites} selects none of the adapter's {len(vector.sites)} sites")
        return vector.select(chosen)
    from orthoxfer.models.hf_clip import open_clip_arch  # a transformers checkpoint, converted

    meta.update(
        finetuned_class=found.config.kind,
        finetuned_open_clip_arch=open_clip_arch(found.config),
        finetuned_quick_gelu=found.config.quick_gelu,
    )
    tuned = transformers_model(found, base)
    return TaskVector.from_models(base.model, tuned, sites or "attn", full=full, meta=meta)
