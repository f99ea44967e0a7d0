"""``orthoxfer transfer``: carry task vectors into a target with a transfer method (GradFix, TransFusion, theseus ...).

The counterpart of ``align`` for the methods that fit no U: the same models, vectors,
suites and pools, and a run folder with the transferred vector, what the method learnt
(masks, permutations, maps) and its diagnostics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from orthoxfer.cli.align import load_vectors
from orthoxfer.cli.common import Budget, comma_list, command_suite, console, reports_errors, resolve_device
from orthoxfer.errors import UsageError
from orthoxfer.terminal import Grid
from orthoxfer.version import __version__

Opt = typer.Option


@reports_errors
def transfer_command(
    method: Annotated[
        str,
        Opt(
            "--method",
            help="A transfer method: gradfix, gradfix-pool (labels) | orthogonal-shift, transfusion, "
            "transfusion-reference (no data) | theseus, bico, direct-residual (images) | auto (per task, the "
            "candidate best on validation: direct, transfusion, few-shot FT, transfer-then-tune; within --budget).",
        ),
    ],
    target: Annotated[
        str,
        Opt(
            "--target",
            help="Target model: ARCH:TAG, ARCH:/path, hf-hub:owner/repo, a transformers CLIP folder; mini:b with --suite mini.",
        ),
    ],
    task_vector: Annotated[
        list[str],
        Opt("--task-vector", help="Source task vector (NAME=PATH or PATH; mini:<task> with --suite mini); repeatable."),
    ],
    source: Annotated[
        str | None, Opt("--source", help="Source model (every method here but gradfix needs it).")
    ] = None,
    suite: Annotated[
        str, Opt("--suite", help="paper (datasets under --data-root) | mini (offline: the demo's models and tasks).")
    ] = "paper",
    size: Annotated[str, Opt("--size", help="mini: full | micro.")] = "full",
    tasks: Annotated[
        str | None,
        Opt(
            "--tasks",
            help="Comma-separated tasks (default: the vectors' tasks): per-task, the "
            "vectors carried; joint, the pools the summed vectors see.",
        ),
    ] = None,
    mode: Annotated[
        str,
        Opt(
            "--mode",
            help="per-task (each vector sees its own task's pool) | joint (the summed vectors "
            "see all); either way transferred.safetensors holds the sum, as align writes it.",
        ),
    ] = "per-task",
    scale: Annotated[
        float, Opt("--scale", help="lambda recommended with the result (recorded; eval's --scale applies it).")
    ] = 1.0,
    control: Annotated[
        str | None,
        Opt(
            "--control",
            help="norm | spectrum | orbit | other-task: carry a control vector instead, to measure the transfer gain.",
        ),
    ] = None,
    data_root: Annotated[Path | None, Opt("--data-root", help="Folder holding the datasets (paper).")] = None,
    shots: Annotated[
        int | None,
        Opt(
            "--shots",
            help="Few-shot images per task (train split only; default: the suite's); "
            "the whole pool, as align uses it (bench holds a validation part out for lambda).",
        ),
    ] = None,
    shots_per_class: Annotated[
        int | None, Opt("--shots-per-class", help="Instead of --shots: images per class (paper).")
    ] = None,
    seed: Annotated[int, Opt("--seed", help="Seed of the few-shot draw and of the method.")] = 0,
    device: Annotated[str, Opt("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    out: Annotated[Path, Opt("--out", help="Run folder.")] = Path("runs/transfer"),
    overwrite: Annotated[bool, Opt("--overwrite", help="Replace a run already in --out.")] = False,
    cache_dir: Annotated[
        Path | None, Opt("--cache-dir", help="Weights cache (paper), or the mini suite's cache.")
    ] = None,
    heads_dir: Annotated[Path | None, Opt("--heads-dir", help="Zero-shot head cache (paper).")] = None,
    budget: Budget = None,
    strategy_options: dict[str, Any] | None = None,
) -> None:
    """Carry source task vectors into --target with a transfer method; writes transferred.safetensors, learnt.safetensors,
    diagnostics.json and config.json into --out. Method flags (--gradfix-shots, --theseus-centre, ...) are generated.

    --method auto scores its candidates on the suite's validation sets (mini) or a held-out part of each pool (paper),
    never on test, and writes each task's chosen vector at its lambda; every score and the choice go into the
    transferred vector's metadata."""
    from orthoxfer.artifacts import write_json
    from orthoxfer.experiments.auto import AUTO
    from orthoxfer.runs import Run
    from orthoxfer.strategies.registry import STRATEGIES
    from orthoxfer.transfers.carry import carry, save_learnt
    from orthoxfer.transfers.registry import TRANSFERS, check_method, transfer_settings
    from orthoxfer.vectors.taskvector import TaskVector

    auto = method == AUTO
    if not auto:
        check_method(method)
    if method in STRATEGIES:
        raise UsageError(f"{method} is an alignment strategy: use `orthoxfer align --method {method}`")
    if mode not in ("per-task", "joint"):
        raise UsageError(f"unknown mode {mode!r}; use per-task or joint")
    if auto and (mode != "per-task" or scale != 1.0):
        raise UsageError("--method auto chooses per task and on validation, lambda too: drop --mode and --scale")
    if budget is not None and not auto:
        raise UsageError("--budget is --method auto's: drop it")
    needs_data = auto or TRANSFERS[method].needs != "none"
    if not needs_data and (shots is not None or shots_per_class is not None):
        raise UsageError(f"{method} reads no data: drop --shots / --shots-per-class")
    dev = resolve_device(device)
    chosen = command_suite(suite, dev, size=size, cache_dir=cache_dir, data_root=data_root, heads_dir=heads_dir)
    settings = transfer_settings(strategy_options or {}, seed=seed, device=str(dev))
    for spec in filter(None, (target, source)):
        chosen.check(spec)
    vectors = load_vectors(task_vector, chosen.vector)
    if control is not None:
        from orthoxfer.vectors.controls import control_vectors

        vectors = control_vectors(vectors, control, seed=seed)
    names = list(comma_list(tasks) or vectors)
    if mode == "per-task" and tasks:
        missing = {n.lower() for n in names} - {k.lower() for k in vectors}
        if missing:
            raise UsageError(
                f"--tasks names {', '.join(sorted(missing))}, which no --task-vector carries; per-task, "
                "--tasks chooses among the vectors"
            )
        vectors = {k: v for k, v in vectors.items() if k.lower() in {n.lower() for n in names}}
    run = Run(out, overwrite=overwrite)
    record = {
        "method": method,
        "target": target,
        "source": source,
        "mode": mode,
        "scale": scale,
        "seed": seed,
        "control": control,
        "tasks": names,
        "task_vectors": task_vector,
        "transfer": settings.options,
        **({"budget": budget} if auto else {}),
        "orthoxfer_version": __version__,
    }
    run.write_config({**record, **chosen.record})

    loaded = chosen.load(target, dev)
    source_model = chosen.load(source, dev).model if source else None
    pools = (
        chosen.fewshot_tasks(
            loaded, names, None if shots_per_class else shots or chosen.default_shots, shots_per_class, seed
        )
        if needs_data
        else {}
    )
    canonical = {name.lower(): name for name in pools}  # `eurosat` on the command line is the dataset EuroSAT
    vectors = {canonical.get(k.lower(), k): v for k, v in vectors.items()}
    if mode == "joint":
        vectors = {"joint": TaskVector.sum(vectors.values())}
    choice: dict[str, Any] = {}  # auto: every candidate's validation score and the choice
    if auto:
        done, choice["auto"] = _auto(chosen, loaded, source_model, vectors, pools, settings, seed, dev, run, budget)
    else:
        done = carry(method, vectors, source_model, loaded.model, pools, settings)

    transferred = TaskVector.sum(d.vector for d in done.values())
    transferred.meta.update(
        recommended_scale=scale, method=method, target=target, learnt="learnt.safetensors", **choice
    )
    transferred.save(run.file("transferred.safetensors"))
    save_learnt(run.file("learnt.safetensors"), done, {"method": method, "target": target, "source": source})
    write_json(run.file("diagnostics.json"), {scope: d.diagnostics for scope, d in done.items()})
    keys = sorted({k for d in done.values() for k in d.diagnostics if "/" not in k})
    table = Grid(f"{method} into {target}", ["scope", *keys])
    for scope, d in done.items():
        table.add_row(scope, *[f"{d.diagnostics[k]:.4g}" if k in d.diagnostics else "-" for k in keys])
    if keys:  # auto's direct addition learns nothing and measures nothing
        console.print(table)
    console.print(
        f"wrote {run.path}/ (transferred task vector, what {method} learnt, diagnostics)\n"
        f"evaluate: orthoxfer eval {' '.join(chosen.flags)} --model {target} --task-vector {run.file('transferred.safetensors')} "
        f"--scale {scale:g} --tasks {','.join(names)}",
        highlight=False,
        soft_wrap=True,
    )


def _auto(suite, loaded, source, vectors, pools, settings, seed: int, device, run, budget: int | None):
    """``--method auto``: each task's chosen candidate carried at its lambda, and the record (printed here)."""
    from orthoxfer.cli.align import validation_split
    from orthoxfer.cli.baseline import fewshot_defaults
    from orthoxfer.experiments.auto_alone import AutoInputs, auto_table
    from orthoxfer.experiments.auto_transfer import auto_transfer
    from orthoxfer.fit.finetune import FinetuneSettings

    train, val = validation_split(suite, loaded, pools, seed, "--method auto")
    inputs = AutoInputs(loaded.model, source, vectors, train, val, settings, run)
    finetuning = FinetuneSettings(**fewshot_defaults(suite), seed=seed, device=str(device))
    done, record = auto_transfer(inputs, finetuning, budget)
    console.print(auto_table(record, "auto: validation accuracy % (lambda); * chosen"))
    return done, record
