"""``orthoxfer align``: carry task vectors into a target model, writing a run folder.

Settings resolve as defaults <- ``--config FILE.toml`` (its ``[align]`` table, or the
top level) <- flags given on the command line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from orthoxfer.cli.common import VAL_FRACTION, Budget, command_suite, console, launch, reports_errors
from orthoxfer.errors import UsageError
from orthoxfer.terminal import Grid
from orthoxfer.version import __version__

if TYPE_CHECKING:
    from orthoxfer.vectors.taskvector import TaskVector

Opt = typer.Option


def parse_vector_args(values: list[str]) -> list[tuple[str | None, Path]]:
    """``NAME=PATH`` or ``PATH``; a bare path is named after the task its metadata records."""
    out = []
    for value in values:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)=(.+)", value)
        out.append(
            (match.group(1), Path(match.group(2))) if match and not Path(value).exists() else (None, Path(value))
        )
    return out


def load_vectors(values: list[str], read: Callable[[str], TaskVector] | None = None) -> dict[str, TaskVector]:
    """Task vectors by name; ``read`` turns a value into a vector (a suite's, which also knows names such as ``mini:surfaces``)."""
    from orthoxfer.vectors.taskvector import TaskVector

    vectors: dict[str, TaskVector] = {}
    for name, path in parse_vector_args(values):
        tv = (read or TaskVector.load)(str(path))
        tasks = tv.meta.get("tasks") or []
        key = name or (tasks[0] if len(tasks) == 1 else path.stem)
        if key in vectors:
            raise UsageError(f"two task vectors are named {key!r}; name them with --task-vector NAME=PATH")
        vectors[key] = tv
    return vectors


def resolve_settings(config: Path | None, flags: dict[str, Any], defaults: dict[str, Any] | None = None):
    from orthoxfer.strategies.settings import AlignSettings, read_config

    values: dict[str, Any] = dict(defaults or {})
    if config is not None:
        data = read_config(config, section="align") if _has_section(config) else read_config(config)
        values.update(data)
    values.update({k: v for k, v in flags.items() if v is not None})
    return AlignSettings(**values)


def _has_section(config: Path) -> bool:
    from orthoxfer._toml import tomllib

    try:
        return isinstance(tomllib.loads(config.read_text()).get("align"), dict)
    except (OSError, tomllib.TOMLDecodeError):
        return False  # read_config reports it with the file name


def summary_table(alignment, title: str) -> Grid:
    table = Grid(title, ["scope", "sites", "||dW|| ratio", "rank kept", "max ||U^TU-I||", "mean ||U-I||", "det<0"])
    for scope, agg in alignment.meta["diagnostics"].items():
        table.add_row(
            scope,
            str(agg["sites"]),
            f"{agg['norm_ratio']:.6f}",
            f"{agg['rank_kept']}/{agg['sites']}",
            f"{agg['orth_error_max']:.2e}",
            f"{agg['dist_identity_mean']:.4g}",
            str(agg["det_negative"]),
        )
    return table


@reports_errors
def align_command(
    target: Annotated[
        str,
        Opt(
            "--target",
            help="Target model: ARCH:TAG, ARCH:/path, ARCH:none, hf-hub:owner/repo, a transformers CLIP folder; mini:b with --suite mini.",
        ),
    ],
    task_vector: Annotated[
        list[str],
        Opt("--task-vector", help="Source task vector (NAME=PATH or PATH; mini:<task> with --suite mini); repeatable."),
    ],
    method: Annotated[
        str | None,
        Opt(
            "--method",
            help="penalty | riemannian | cayley | procrustes | auto (per task, the candidate best on validation: "
            "each start kept, and penalty trained from each, its step chosen on validation; within --budget).",
        ),
    ] = None,
    lr: Annotated[float | None, Opt("--lr", help="Learning rate of U.")] = None,
    weight_decay: Annotated[float | None, Opt("--weight-decay", help="Decay on U's parameters (default 0).")] = None,
    steps: Annotated[int | None, Opt("--steps", help="Optimiser steps.")] = None,
    warmup: Annotated[int | None, Opt("--warmup", help="Linear warm-up steps before cosine decay.")] = None,
    clip: Annotated[float | None, Opt("--clip", help="Gradient-norm clip (0: off).")] = None,
    init: Annotated[
        str | None,
        Opt(
            "--init",
            help="identity | procrustes (needs --source) | a transfer method (transfusion ...): carry the vectors "
            "with it first, then align what it carried from U = I.",
        ),
    ] = None,
    mode: Annotated[
        str | None,
        Opt(
            "--mode",
            help="joint (one U set for the summed vectors) | per-task | per-task-summed (as per-task "
            "here: each task its own U's; transferred.safetensors is always their sum).",
        ),
    ] = None,
    tie: Annotated[str | None, Opt("--tie", help="site | block | model: how many sites share one U.")] = None,
    scale: Annotated[float | None, Opt("--scale", help="lambda: the target carries lambda * U^T dW U.")] = None,
    sites: Annotated[str | None, Opt("--sites", help="attn | attn-qkv | attn-out | a glob over site names.")] = None,
    control: Annotated[
        str | None,
        Opt(
            "--control",
            help="norm | spectrum | other-task (orbit: closed forms only): align a control vector with the "
            "same norms instead of each task vector, to measure the transfer gain.",
        ),
    ] = None,
    source: Annotated[str | None, Opt("--source", help="Source model (for procrustes and init=procrustes).")] = None,
    suite: Annotated[
        str, Opt("--suite", help="paper (datasets under --data-root) | mini (offline: the demo's models and tasks).")
    ] = "paper",
    size: Annotated[str, Opt("--size", help="mini: full | micro (seconds; for smoke tests).")] = "full",
    tasks: Annotated[str | None, Opt("--tasks", help="Comma-separated tasks (default: the vectors' tasks).")] = None,
    data_root: Annotated[
        Path | None, Opt("--data-root", help="Folder holding the datasets (see `data check`).")
    ] = None,
    shots: Annotated[int | None, Opt("--shots", help="Few-shot images per task (train split only).")] = None,
    shots_per_class: Annotated[
        int | None, Opt("--shots-per-class", help="Instead of --shots: images per class.")
    ] = None,
    augment: Annotated[
        int | None, Opt("--augment", help="Augmented views of each image per epoch (<=1: none).")
    ] = None,
    batch_size: Annotated[int | None, Opt("--batch-size", help="Images per step.")] = None,
    augmentation: Annotated[
        str | None,
        Opt("--augmentation", help="paper: suite | paper-text | paper-code | none (docs/paper-protocol.md)."),
    ] = None,
    precision: Annotated[
        str | None,
        Opt("--precision", help="auto (bf16 autocast on CUDA) | fp32 | bf16 (docs/paper-protocol.md)."),
    ] = None,
    seed: Annotated[int | None, Opt("--seed", help="Seed of the few-shot draw, batches and augmentation.")] = None,
    device: Annotated[str, Opt("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    compile: Annotated[
        bool | None,
        Opt(
            "--compile/--no-compile",
            help="torch.compile the target's forward "
            "(compiles for seconds once; a ViT-B/32 step then takes 20% less time on an H100, 9% on two CPU cores).",
        ),
    ] = None,
    config: Annotated[Path | None, Opt("--config", help="TOML settings; flags override it.")] = None,
    out: Annotated[Path, Opt("--out", help="Run folder.")] = Path("runs/align"),
    overwrite: Annotated[bool, Opt("--overwrite", help="Replace a run already in --out.")] = False,
    resume: Annotated[bool, Opt("--resume", help="Continue the run in --out from its checkpoint.")] = False,
    cache_dir: Annotated[
        Path | None,
        Opt("--cache-dir", help="Weights cache (paper; heads go to <cache-dir>/heads), or the mini suite's cache."),
    ] = None,
    heads_dir: Annotated[Path | None, Opt("--heads-dir", help="Zero-shot head cache (paper).")] = None,
    budget: Budget = None,
    strategy_options: dict[str, Any] | None = None,
) -> None:
    """Learn orthogonal U's that carry source task vectors into --target, from a few labelled examples.

    Strategy-specific flags (--alpha, --retraction, --rotation-rank, --anchor, --select-every, ...)
    are those the registered strategies declare; transfer flags (--transfusion-rounds, ...) set the
    transfer an --init names. With --select-every the U's are scored on the suite's validation
    sets (mini), or on a held-out part of each pool (paper), which then is not trained on.

    With --method auto each task gets the candidate that scores best on that validation data
    (docs/methods.md); every candidate's score and the choice go into the artifacts' metadata.

    Writes alignment.safetensors, transferred.safetensors, metrics.jsonl,
    diagnostics.json (+ PNG plots) and config.json into --out.
    """
    from orthoxfer.alignment.align import align
    from orthoxfer.alignment.start import start_from
    from orthoxfer.evaluation.diagnostics import diagnose, write_report
    from orthoxfer.experiments.auto import AUTO
    from orthoxfer.experiments.auto_alone import AutoInputs, auto_table
    from orthoxfer.problem.align_problem import AlignProblem
    from orthoxfer.runs import Run
    from orthoxfer.transfers.registry import declared_options as transfer_options
    from orthoxfer.transfers.registry import transfer_settings
    from orthoxfer.vectors.taskvector import TaskVector

    dev = launch(device)
    chosen = command_suite(suite, dev, size=size, cache_dir=cache_dir, data_root=data_root, heads_dir=heads_dir)
    auto = method == AUTO
    if auto and (init is not None or mode not in (None, "per-task")):
        raise UsageError("--method auto tries every start per task itself: drop --init and --mode")
    if budget is not None and not auto:
        raise UsageError("--budget is --method auto's: drop it, or use --steps")
    flags = dict(
        method=None if auto else method,
        lr=lr,
        weight_decay=weight_decay,
        steps=steps,
        warmup=warmup,
        clip=clip,
        init=init,
        mode=mode,
        tie=tie,
        scale=scale,
        sites=sites,
        shots=shots,
        augment=augment,
        batch_size=batch_size,
        augmentation=augmentation,
        precision=precision,
        seed=seed,
        compile=compile,
        **{k: v for k, v in (strategy_options or {}).items() if k not in transfer_options()},
    )
    transfer_values = {k: v for k, v in (strategy_options or {}).items() if k in transfer_options()}
    settings = resolve_settings(config, flags, chosen.settings("align"))
    settings = settings.replace(mode="per-task") if auto else settings
    if settings.augmentation != "suite":  # the pools' recipe is the suite's to apply
        chosen = command_suite(
            suite,
            dev,
            size=size,
            cache_dir=cache_dir,
            data_root=data_root,
            heads_dir=heads_dir,
            augmentation=settings.augmentation,
        )
    if settings.method == "procrustes" and settings.rotation_rank and not auto:
        raise UsageError(
            "--rotation-rank shapes a trained U (penalty, riemannian, cayley); procrustes is closed form: drop it"
        )
    if (settings.method == "procrustes" or settings.init == "procrustes") and source is None and not auto:
        raise UsageError(f"{'init=procrustes' if settings.init == 'procrustes' else 'procrustes'} needs --source")
    for spec in filter(None, (target, source)):
        chosen.check(spec)
    vectors = load_vectors(task_vector, chosen.vector)
    if control is not None:
        from orthoxfer.strategies.registry import strategy_class
        from orthoxfer.vectors.controls import control_vectors, valid_controls

        if not valid_controls((control,), strategy_class(settings.method).fits_similarity):
            raise UsageError(
                f"--control {control}: {settings.method} fits U^T dW U to the vector and turns this control back "
                "into it at U = Q^T; use spectrum (two independent rotations), norm or other-task"
            )
        vectors = control_vectors(vectors, control, seed=settings.seed)
    names = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else list(vectors)
    provenance = {"target": target, "source": source, "suite": suite, "orthoxfer_version": __version__}
    settings = settings.replace(device=str(dev), extra=provenance | ({"control": control} if control else {}))
    run = Run(out, overwrite=overwrite, resume=resume)
    carrying = transfer_settings(transfer_values, seed=settings.seed, device=str(dev))
    run.write_config(
        {
            **settings.to_dict(),
            **({"method": AUTO, "budget": budget} if auto else {}),
            "task_vectors": task_vector,
            "tasks": names,
            **chosen.record,
            "control": control,
            **({"transfer": carrying.options} if transfer_values else {}),
        }
    )

    loaded = chosen.load(target, dev)
    source_model = chosen.load(source, dev).model if source else None
    shots_n = None if shots_per_class else settings.shots
    pools = chosen.fewshot_tasks(loaded, names, shots_n, shots_per_class, settings.seed)
    canonical = {name.lower(): name for name in pools}  # `eurosat` on the command line is the dataset EuroSAT
    vectors = {canonical.get(k.lower(), k): v for k, v in vectors.items()}
    scales = dict.fromkeys(vectors, 1.0)  # auto: each task's lambda, chosen on validation, carried in the vector
    if auto:
        from orthoxfer.experiments.auto_align import auto_align

        pools, val = validation_split(chosen, loaded, pools, settings.seed, "--method auto")
        inputs = AutoInputs(loaded.model, source_model, vectors, pools, val, carrying, run)
        alignment, vectors, record = auto_align(inputs, settings, budget)
        scales = record["scale"]
    else:
        pools, validation = held_out(chosen, loaded, pools, settings)
        vectors = start_from(settings.init, vectors, source_model, loaded.model, pools, carrying)
        alignment = align(AlignProblem(loaded.model, vectors, pools, source_model, validation), settings, run)
    if not run.writes:  # another process of a torchrun launch: rank 0 writes what all of them found
        return
    alignment.save(run.file("alignment.safetensors"))

    per_task = settings.mode != "joint"  # per-task and per-task-summed: each task its own U's
    transferred = TaskVector.sum(
        alignment.apply(tv.select(alignment.sites), task=name if per_task else None) * scales[name]
        for name, tv in vectors.items()
    )
    transferred.meta.update(
        recommended_scale=1.0 if auto else settings.scale,
        alignment="alignment.safetensors",  # beside it
        target=target,
        **({"auto": alignment.meta["auto"]} if auto else {}),
    )
    transferred.save(run.file("transferred.safetensors"))
    for scope in alignment.scopes:
        tv = TaskVector.sum(vectors.values()) if scope == "joint" else vectors[scope]
        report = diagnose(tv.select(alignment.sites), alignment, task=None if scope == "joint" else scope)
        write_report(report, tv.select(alignment.sites), alignment, run.path if scope == "joint" else run.path / scope)
    if auto:
        console.print(auto_table(alignment.meta["auto"], "auto: validation accuracy % (lambda); * chosen"))
    console.print(summary_table(alignment, f"{AUTO if auto else settings.method} alignment into {target}"))
    console.print(
        f"wrote {run.path}/ (alignment, transferred task vector, metrics, diagnostics)\n"
        f"evaluate: orthoxfer eval {' '.join(chosen.flags)} --model {target} --task-vector {run.file('transferred.safetensors')} "
        f"--scale {1.0 if auto else settings.scale:g} --tasks {','.join(pools)}",
        highlight=False,
        soft_wrap=True,
    )


def held_out(suite, loaded, pools: dict[str, Any], settings) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The pools to train on and, when the step is chosen on validation, where: the suite's own validation sets, or
    else a held-out part of each pool (as ``baseline`` holds one out), which is then not trained on."""
    from orthoxfer.strategies.registry import strategy_class

    if not settings.select_every or "select_every" not in {o.name for o in strategy_class(settings.method).options}:
        return pools, None
    return validation_split(suite, loaded, pools, settings.seed, "--select-every")


def validation_split(
    suite, loaded, pools: dict[str, Any], seed: int, why: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pools to train on and the validation data ``why`` (a flag) chooses on: the suite's own validation sets, or
    else a held-out part of each pool, which is then not trained on; one line where a pool is too small to hold out."""
    validation = suite.validation_sets(loaded, list(pools))
    if validation is not None:
        return pools, validation
    try:
        parts = {name: pool.split(VAL_FRACTION, seed) for name, pool in pools.items()}
    except UsageError as exc:
        raise UsageError(f"{why} chooses on validation data and the suite has none of its own: {exc}") from None
    return {n: p[0] for n, p in parts.items()}, {n: p[1] for n, p in parts.items()}
