"""``orthoxfer vector from-checkpoints`` and ``orthoxfer apply``: task vectors from checkpoints, and models out of them."""

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
        Opt("--base", help="The pre-trained model fine-tuning started from: ARCH:TAG, ARCH:/path, hf-hub:owner/repo."),
    ],
    finetuned: Annotated[
        str,
        Opt(
            "--finetuned",
            help="The fine-tuned open_clip weights: .safetensors, .pt or .bin "
            "(whole CLIP or image tower, any common key layout), or hf-hub:owner/repo/path.",
        ),
    ],
    out: Annotated[Path, Opt("--out", help="The task vector .safetensors to write.")],
    sites: Annotated[
        str,
        Opt(
            "--sites",
            help="attn | attn-qkv | attn-out | mlp | all | a glob over site names, or "
            "several joined by commas (mlp: the rectangular MLP weights, which only two-sided "
            "methods such as theseus carry).",
        ),
    ] = "attn",
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
    from orthoxfer.models.state_dicts import checkpoint_file, finetuned_model
    from orthoxfer.vectors.taskvector import TaskVector

    loaded = load_model(base, cache_dir=cache_dir)
    tuned = finetuned_model(checkpoint_file(finetuned, cache_dir), loaded.model)
    meta = {"tasks": [task] if task else [], "base": base, "finetuned": finetuned, "architecture": loaded.arch}
    vector = TaskVector.from_models(loaded.model, tuned, sites, full=full, meta=meta)
    vector.check_finite()
    vector.save(out)
    norm = math.sqrt(sum(n * n for n in vector.norms().values()))
    extra = f", plus {len(vector.extra)} other parameters (unaligned)" if vector.extra else ""
    console.print(
        f"wrote {out}: {len(vector.sites)} sites, ||dW||_F {norm:.4g}{extra}", highlight=False, soft_wrap=True
    )
    if norm == 0:
        console.print(
            f"note: {finetuned} equals {base} on these sites; was it fine-tuned from another model?", highlight=False
        )


@reports_errors
def apply_command(
    model: Annotated[
        str, Opt("--model", help="The model to edit: ARCH:TAG, ARCH:/path, ARCH:none or hf-hub:owner/repo.")
    ],
    task_vector: Annotated[
        list[Path], Opt("--task-vector", help="A task vector .safetensors; repeatable (added in turn).")
    ],
    out: Annotated[Path, Opt("--out", help="The edited model's weights, an open_clip .safetensors state dict.")],
    scale: Annotated[
        list[float] | None,
        Opt("--scale", help="lambda: once for every vector, or once per --task-vector in order (default 1)."),
    ] = None,
    cache_dir: CacheDir = None,
) -> None:
    """Add task vectors to a model and write it as open_clip weights (open_clip.create_model(ARCH, pretrained=OUT))."""
    from orthoxfer.models.loading import HUB, file_arch, load_model
    from orthoxfer.models.state_dicts import save_state_dict
    from orthoxfer.vectors.taskvector import TaskVector

    scales = list(scale or [1.0])
    if len(scales) == 1:
        scales *= len(task_vector)
    if len(scales) != len(task_vector):
        raise UsageError(f"give --scale once, or once per --task-vector ({len(task_vector)}), not {len(scales)} times")
    vectors = [TaskVector.load(path) for path in task_vector]
    loaded = load_model(model, cache_dir=cache_dir)
    for vector in vectors:
        vector.check_fits(loaded.model)  # every vector fits before any is added
    for vector, s in zip(vectors, scales):
        vector.apply_to(loaded.model, s)
    arch = file_arch(loaded.arch, loaded.quick_gelu) if loaded.arch != HUB else None
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
        else f"open_clip.create_model('{loaded.spec}') and load_state_dict(safetensors.torch.load_file('{out}'))"
    )
    added = " + ".join(f"{s:g} x {p.name}" for s, p in zip(scales, task_vector))
    console.print(f"wrote {out}: {loaded.spec} + {added}; load it with {how}", highlight=False, soft_wrap=True)
