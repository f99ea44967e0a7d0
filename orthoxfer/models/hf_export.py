"""An open_clip image tower written out as a transformers ``CLIPVisionModelWithProjection`` folder.

The way back for users whose evaluation or serving code is transformers (FusionBench's
is): ``CLIPVisionModelWithProjection.from_pretrained(folder)`` (or ``CLIPVisionModel``,
which ignores the projection) computes the same image features as the open_clip model.
transformers itself writes the folder, so the files are whatever its version expects;
it is imported here only, and only an open_clip ViT that transformers' CLIP can express
is accepted (no attention pooling, layer scale, average pooling or missing ``ln_pre``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from open_clip.transformer import QuickGELU, VisionTransformer
from torch import nn

from orthoxfer.errors import OrthoxferError, UsageError
from orthoxfer.models import hf_names

OWN_FILES = {"config.json", "model.safetensors", "preprocessor_config.json"}


def import_transformers():
    try:
        import transformers
    except ImportError:
        raise UsageError(
            "writing a transformers model needs transformers: pip install 'orthoxfer[hf]' (or pip install transformers)"
        ) from None
    return transformers


def _check_expressible(visual: nn.Module) -> None:
    why = None
    if not isinstance(visual, VisionTransformer):
        why = f"its image tower is a {type(visual).__name__}, not open_clip's ViT"
    elif getattr(visual, "attn_pool", None) is not None:
        why = "it pools with attention"
    elif not isinstance(visual.ln_pre, nn.LayerNorm):
        why = "it has no ln_pre"
    elif visual.pool_type != "tok" or visual.final_ln_after_pool:
        why = f"it pools with {visual.pool_type!r}"
    elif not isinstance(visual.transformer.resblocks[0].ls_1, nn.Identity):
        why = "it has layer scale"
    elif visual.proj is None:
        why = "it has no projection"
    if why is not None:
        raise UsageError(f"--format transformers writes CLIP ViTs only, and this model cannot be one: {why}")


def write_vision_model(model: nn.Module, folder: Path | str, mean: tuple, std: tuple) -> str:
    """Write ``model.visual`` as a transformers folder (config, weights, image processor); returns the class written."""
    folder = Path(folder)
    transformers = import_transformers()
    visual: Any = model.visual  # open_clip's VisionTransformer, checked next
    _check_expressible(visual)
    block = visual.transformer.resblocks[0]
    width, layers = visual.conv1.out_channels, len(visual.transformer.resblocks)
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
    config = transformers.CLIPVisionConfig(
        hidden_size=width,
        intermediate_size=block.mlp.c_fc.out_features,
        num_hidden_layers=layers,
        num_attention_heads=block.attn.num_heads,
        image_size=size,
        patch_size=visual.conv1.kernel_size[0],
        projection_dim=visual.proj.shape[1],
        hidden_act="quick_gelu" if isinstance(block.mlp.gelu, QuickGELU) else "gelu",
        layer_norm_eps=visual.ln_pre.eps,
    )
    hf = transformers.CLIPVisionModelWithProjection(config)
    state = {f"visual.{k}": v.detach().cpu() for k, v in visual.state_dict().items()}
    result = hf.load_state_dict(hf_names.from_open_clip(state, layers), strict=False)
    if result.missing_keys or result.unexpected_keys:  # a transformers version with other names: say so, write nothing
        odd = (result.missing_keys or result.unexpected_keys)[0]
        raise OrthoxferError(f"transformers {transformers.__version__} names CLIP weights differently ({odd!r})")
    processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=list(mean),
        image_std=list(std),
    )
    _replace_folder(folder, lambda tmp: (hf.save_pretrained(tmp), processor.save_pretrained(tmp)))
    return type(hf).__name__


def _replace_folder(folder: Path, write) -> None:
    """Write into a sibling temp folder and move it in place: a failed write leaves no half model behind.

    An existing folder is replaced only if it holds nothing but what this writes.
    """
    if folder.exists() and (not folder.is_dir() or {p.name for p in folder.iterdir()} - OWN_FILES):
        raise UsageError(f"{folder} exists and holds other files: give a new folder for --out")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        write(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
