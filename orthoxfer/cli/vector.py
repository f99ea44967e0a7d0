"""``orthoxfer vector from-checkpoints`` and ``orthoxfer apply``: task vectors from checkpoints, and models out of them.

Checkpoints come as open_clip state dicts, transformers CLIP folders or repositories
(FusionBench's), or PEFT LoRA adapters; models go out as open_clip state dicts or
transformers folders.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from orthoxfer.cli.common import console, reports_errors
from orthoxfer.errors import UsageError

Opt = typer.Option
vector_app = typer.Typer(help="Make task vectors from what other tools wrote.", no_args_is_help=True)
CacheDir = Annotated[
    Path | None, Opt("--cache-dir", help="Weights cache (and the Hugging Face cache for hf-hub: names).")
]


@vector_app.command("from-checkpoints")
@reports_errors
def from_checkpoints_command(
    base: Annotated[
        str,
        Opt(
            "--base",
            help="The pre-trained model fine-tuning started from: ARCH:TAG, ARCH:/path, hf-hub:owner/repo, "
            "or a transformers CLIP folder.",
        ),
    ],
    finetuned: Annotated[
        str,
        Opt(
            "--finetuned",
            help="The fine-tuned weights: an open_clip .safetensors, .pt or .bin (whole CLIP or image tower, any "
            "common key layout), a transformers CLIP folder (config.json + weights), a PEFT LoRA adapter folder "
            "(read as a LoRA vector, factors kept), or hf-hub:owner/repo[/path] holding any of those.",
        ),
    ],
    out: Annotated[Path, Opt("--out", help="The task vector .safetensors to write.")],
    sites: Annotated[
        str | None,
        Opt(
            "--sites",
            help="attn | attn-qkv | attn-out | mlp | all | a glob over site names, or "
            "several joined by commas (mlp: the rectangular MLP weights, which only two-sided "
            "methods such as theseus carry). Default: attn; for a PEFT adapter, the layers it targets.",
        ),
    ] = None,
    full: Annotated[
        bool, Opt("--full", help="Also carry every other changed image-tower parameter (added unaligned).")
    ] = False,
    task: Annotated[
        str | None, Opt("--task", help="The task's name, recorded in the vector (align names the vector by it).")
    ] = None,
    cache_dir: CacheDir = None,
) -> None:
    """A task vector: fine-tuned minus base on the image tower's sites (and, with --full, its other parameters)."""
    from orthoxfer.models.loading import load_model
    from orthoxfer.vectors.checkpoints import vector_from_checkpoint

    if full and Path(finetuned, "adapter_config.json").is_file():  # before any model is loaded
        raise UsageError(f"{finetuned} is a LoRA adapter: it changes no parameter but its factors; drop --full")
    loaded = load_model(base, cache_dir=cache_dir)
    meta = {"tasks": [task] if task else [], "base": base, "architecture": loaded.arch}
    vector = vector_from_checkpoint(loaded, finetuned, sites, full, cache_dir, meta)
    lines = [_arch_line(base, loaded.open_clip_arch, loaded.quick_gelu)] if loaded.open_clip_arch else []
    if "finetuned_open_clip_arch" in vector.meta:
        m = vector.meta
        what = f"{finetuned} ({m['finetuned_class']})"
        lines.append(_arch_line(what, m["finetuned_open_clip_arch"], m["finetuned_quick_gelu"]))
    if vector.meta.get("text_modules_left_out"):
        left = vector.meta["text_modules_left_out"]
        lines.append(f"note: {left} text-tower modules of the adapter left out (task vectors live in the image tower)")
    vector.check_finite()
    vector.save(out)
    norm = math.sqrt(sum(n * n for n in vector.norms().values()))
    extra = f", plus {len(vector.extra)} other parameters (unaligned)" if vector.extra else ""
    lora = f", LoRA rank {vector.rank} (factors kept)" if vector.lora else ""
    for line in lines:  # after success: a refusal stays one line
        console.print(line, highlight=False, soft_wrap=True)
    console.print(
        f"wrote {out}: {len(vector.sites)} sites{lora}, ||dW||_F {norm:.4g}{extra}", highlight=False, soft_wrap=True
    )
    if norm == 0:
        console.print(
            f"note: {finetuned} equals {base} on these sites; was it fine-tuned from another model?", highlight=False
        )


def _arch_line(what: str, arch: str, quick_gelu: bool) -> str:
    return f"{what}: open_clip architecture {arch} ({'QuickGELU' if quick_gelu else 'GELU'})"


@reports_errors
def apply_command(
    model: Annotated[
        str,
        Opt(
            "--model",
            help="The model to edit: ARCH:TAG, ARCH:/path, ARCH:none, hf-hub:owner/repo or a transformers CLIP folder.",
        ),
    ],
    task_vector: Annotated[
        list[Path], Opt("--task-vector", help="A task vector .safetensors; repeatable (added in turn).")
    ],
    out: Annotated[
        Path,
        Opt(
            "--out",
            help="The edited model: an open_clip .safetensors state dict, or (--format transformers) a folder.",
        ),
    ],
    scale: Annotated[
        list[float] | None,
        Opt("--scale", help="lambda: once for every vector, or once per --task-vector in order (default 1)."),
    ] = None,
    cache_dir: CacheDir = None,
    out_format: Annotated[
        str,
        Opt(
            "--format",
            help="open_clip (a state dict) | transformers (a CLIPVisionModelWithProjection folder: the image tower).",
        ),
    ] = "open_clip",
) -> None:
    """Add task vectors to a model and write it as open_clip weights (open_clip.create_model(ARCH, pretrained=OUT)),
    or as a transformers CLIPVisionModelWithProjection folder (--format transformers)."""
    from orthoxfer.models.hf_clip import HF_ARCH_PREFIX
    from orthoxfer.models.loading import HUB, TRANSFORMERS, file_arch, load_model
    from orthoxfer.models.state_dicts import save_state_dict
    from orthoxfer.vectors.taskvector import TaskVector

    scales = list(scale or [1.0])
    if len(scales) == 1:
        scales *= len(task_vector)
    if len(scales) != len(task_vector):
        raise UsageError(f"give --scale once, or once per --task-vector ({len(task_vector)}), not {len(scales)} times")
    if out_format not in ("open_clip", "transformers"):
        raise UsageError(f"unknown --format {out_format!r}; use open_clip or transformers")
    if out_format == "transformers":
        from orthoxfer.models.hf_export import import_transformers

        import_transformers()  # before any model is loaded: a missing extra is one line, at once
    vectors = [TaskVector.load(path) for path in task_vector]
    loaded = load_model(model, cache_dir=cache_dir)
    for vector in vectors:
        vector.check_fits(loaded.model)  # every vector fits before any is added
    for vector, s in zip(vectors, scales):
        vector.apply_to(loaded.model, s)
    added = " + ".join(f"{s:g} x {p.name}" for s, p in zip(scales, task_vector))
    if out_format == "transformers":
        from orthoxfer.models.hf_export import write_vision_model

        written = write_vision_model(loaded.model, out, loaded.mean, loaded.std)
        console.print(
            f"wrote {out}/: {loaded.spec} + {added} as a transformers {written}; load it with "
            f"transformers.{written}.from_pretrained('{out}')",
            highlight=False,
            soft_wrap=True,
        )
        return
    if loaded.arch in (HUB, TRANSFORMERS):  # a registered hf-clip-* config exists in this process only
        known = loaded.open_clip_arch is not None and not loaded.open_clip_arch.startswith(HF_ARCH_PREFIX)
        arch = loaded.open_clip_arch if known else None
    else:
        arch = file_arch(loaded.arch, loaded.quick_gelu)
    save_state_dict(
        loaded.model,
        out,
        {
            "model": loaded.spec,
            "open_clip_arch": arch,
            "quick_gelu": loaded.quick_gelu,
            "task_vectors": [str(p) for p in task_vector],
            "scales": scales,
        },
    )
    how = (
        f"open_clip.create_model('{arch}', pretrained='{out}'), or the model {arch}:{out}"
        if arch is not None
        else f"load_state_dict(safetensors.torch.load_file('{out}')) into the open_clip model that {loaded.spec} builds"
    )
    console.print(f"wrote {out}: {loaded.spec} + {added}; load it with {how}", highlight=False, soft_wrap=True)
