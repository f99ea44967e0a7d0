"""``orthoxfer relate``: how related two models' image representations are, layer by layer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orthoxfer.artifacts import write_json
from orthoxfer.cli.common import command_suite, console, print_json, print_wrote, reports_errors, resolve_device
from orthoxfer.errors import UsageError
from orthoxfer.terminal import Grid
from orthoxfer.version import __version__

if TYPE_CHECKING:
    import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")


def image_files(folder: Path, limit: int) -> list[Path]:
    """The first ``limit`` image files under ``folder`` (recursively, sorted), or a UsageError."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(
            f"--images folder {folder} has no image files ({', '.join(IMAGE_SUFFIXES)}); point it at one that has"
        )
    return files[:limit]


def image_source(spec: str, limit: int, seed: int):
    """``--images``: a folder of image files, or ``DATASET:DIR`` (that dataset's test split under a data root).

    Returns an :class:`~orthoxfer.data.paper.ImageSplit` without a transform. A test
    split is often sorted by class, so ``limit`` images are drawn from it at random (seeded).
    """
    import torch
    from torch.utils.data import Subset

    from orthoxfer.data.paper import DATASETS, FileSplit, load_split

    folder = Path(spec).expanduser()
    if folder.is_dir():
        files = image_files(folder, limit)
        return FileSplit(folder.name or "images", "folder", files, [0] * len(files))
    name, sep, root = spec.partition(":")
    if not sep or name.strip().lower() not in {d.lower() for d in DATASETS}:
        raise UsageError(
            f"--images {spec!r} is neither a folder nor DATASET:DIR; give a folder of images or e.g. eurosat:/data"
        )
    split = load_split(name, root, "test")
    if len(split) == 0:
        raise UsageError(f"the {name} test split under {root} holds no images")
    if limit >= len(split):
        return split
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
    return Subset(split, order.tolist())


def open_clip_inputs(
    source: str,
    target: str,
    images: str | None,
    limit: int,
    batch_size: int,
    seed: int,
    where: torch.device,
    cache_dir: Path | None,
    workers: int | None,
) -> tuple:
    """Two open_clip models, batches of the same pixels (the target's resize and crop, each model's own normalisation
    applied later), what to record about them, and the counts the batches fill in as they are read."""
    from orthoxfer.data.fewshot import pixel_transform
    from orthoxfer.data.paper import CORRUPT, make_loader
    from orthoxfer.models.loading import load_model

    if images is None:
        raise UsageError("--images is needed to relate open_clip models: a folder of images or DATASET:DIR")
    data = image_source(images, limit, seed)  # fail on missing images before loading weights
    loaded_target = load_model(target, cache_dir=cache_dir, device=where)
    loaded_source = load_model(source, cache_dir=cache_dir, device=where)
    split = data.dataset if hasattr(data, "dataset") else data
    split.transform = pixel_transform(loaded_target.preprocess)
    loader = make_loader(data, batch_size=batch_size, device=where, workers=workers)
    counted = {"images": 0, "skipped": 0}

    def batches():
        for pixels, labels in loader:
            keep = labels != CORRUPT
            counted["images"] += int(keep.sum())
            counted["skipped"] += int((~keep).sum())
            if keep.any():
                yield pixels[keep]

    return loaded_source, loaded_target, batches(), {"images": images}, counted


def mini_inputs(
    source: str,
    target: str,
    images: str | None,
    limit: int,
    batch_size: int | None,
    seed: int,
    where: torch.device,
    size: str,
    cache_dir: Path | None,
    workers: int | None,
) -> tuple:
    """Two of the mini suite's models and the images ``bench`` relates them on: in one batch, as ``bench`` does, unless
    ``batch_size`` splits them (the real pairing does not change; the shuffled control is drawn per batch)."""
    from orthoxfer.data.mini import check_size, mini_tasks
    from orthoxfer.suites.mini import RELATE_PER_TASK, relate_images

    if images is not None:
        raise UsageError("the mini models are related on the mini tasks' few-shot pool images; leave out --images")
    if workers is not None:
        raise UsageError("--workers is for image folders and datasets; the mini images are already in memory")
    suite = command_suite("mini", where, size=size, cache_dir=cache_dir)
    for spec in (source, target):  # both names before minutes of pre-training
        suite.check(spec)
    pixels = relate_images(mini_tasks(check_size(size)), suite.default_shots, seed)[:limit]
    described = (
        f"mini ({size}): up to {RELATE_PER_TASK} images of each task's {suite.default_shots}-shot pool (seed {seed})"
    )
    loaded = suite.load(source, where), suite.load(target, where)
    batches = list(pixels.split(batch_size)) if batch_size is not None else [pixels]
    return *loaded, batches, {"images": described, "size": size}, {"images": len(pixels), "skipped": 0}


@reports_errors
def relate_command(
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="ARCH:TAG, ARCH:/path/to/checkpoint, ARCH:none, or a mini "
            "model: mini:a, mini:b, mini:seed, mini:release.",
        ),
    ] = None,
    target: Annotated[str | None, typer.Option("--target", help="As --source.")] = None,
    images: Annotated[
        str | None,
        typer.Option(
            "--images",
            help="A folder of images (read recursively, sorted) or DATASET:DIR "
            "(its test split); mini models use the mini tasks' images.",
        ),
    ] = None,
    pair: Annotated[
        str | None,
        typer.Option(
            "--pair",
            help="mini:a against a rung of the mini suite's ladder, in place of "
            "--source and --target: same | release | seed | data (mini:b).",
        ),
    ] = None,
    size: Annotated[str, typer.Option("--size", help="mini models: full | micro.")] = "full",
    tasks: Annotated[
        str | None,
        typer.Option(
            "--tasks",
            help="Also the transferability check on these tasks (comma-separated): the validation gain of direct "
            "addition and transfusion over target only, before any training (mini models: model A's vectors; "
            "open_clip models: --task-vector and --data-root).",
        ),
    ] = None,
    task_vector: Annotated[
        list[str] | None,
        typer.Option(
            "--task-vector",
            help="With --tasks on open_clip models: each task's source vector, NAME=PATH or PATH; repeatable.",
        ),
    ] = None,
    data_root: Annotated[
        Path | None,
        typer.Option("--data-root", help="With --tasks on open_clip models: the datasets (see `data check`)."),
    ] = None,
    shots: Annotated[
        int | None,
        typer.Option(
            "--shots",
            min=2,
            help="With --tasks on open_clip models: the few-shot pool `align` would draw (default 100), of which "
            "a held-out part is the validation set.",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Images compared.")] = 256,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            help="Images per forward pass [default: 64; mini: all in one batch, as bench relates them].",
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seeds the shuffled control and the image draw (a dataset's, a mini pool's).")
    ] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    out: Annotated[Path, typer.Option("--out", help="Folder for relate.json and relate.png.")] = Path("runs/relate"),
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir", help="Weights cache (default: open_clip's and Hugging Face's), or the mini suite's cache."
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=0, help="DataLoader workers.")] = None,
) -> None:
    """Procrustes residual and linear CKA of source versus target, per layer of the image tower."""
    from orthoxfer.evaluation.relate import check_pair, plot_relations, relate
    from orthoxfer.problem.tasks import normalise
    from orthoxfer.suites.mini import PREFIX, target_name
    from orthoxfer.suites.mini import check_pair as check_rung

    if pair is not None:
        if source is not None or target is not None:
            raise UsageError("--pair names both models (mini:a and the rung's target); leave out --source and --target")
        source, target = PREFIX + "a", target_name(check_rung(pair))
    if source is None or target is None:
        raise UsageError("give --source and --target, or --pair for the mini suite's models")
    where = resolve_device(device)
    mini = source.startswith(PREFIX) or target.startswith(PREFIX)
    if mini:
        loaded_source, loaded_target, batches, described, counted = mini_inputs(
            source, target, images, limit, batch_size, seed, where, size, cache_dir, workers
        )
    elif size != "full":
        raise UsageError("--size is for the mini models (mini:a, mini:b, ...)")
    else:
        batch_size = 64 if batch_size is None else batch_size
        loaded_source, loaded_target, batches, described, counted = open_clip_inputs(
            source, target, images, limit, batch_size, seed, where, cache_dir, workers
        )
    check_pair(loaded_source.model, loaded_target.model)
    if loaded_source.image_size != loaded_target.image_size:
        raise UsageError(
            f"the source takes {loaded_source.image_size} images and the target {loaded_target.image_size}; "
            "relate needs models of one resolution"
        )
    relations = relate(
        loaded_source.model,
        loaded_target.model,
        batches,
        seed=seed,  # the mini images come normalised, as bench relates them
        source_transform=None if mini else lambda px: normalise(px.to(where), loaded_source.mean, loaded_source.std),
        target_transform=None if mini else lambda px: normalise(px.to(where), loaded_target.mean, loaded_target.std),
    )
    same_norm = (loaded_source.mean, loaded_source.std) == (loaded_target.mean, loaded_target.std)
    results = {
        "source": loaded_source.spec,
        "target": loaded_target.spec,
        **({"pair": check_rung(pair)} if pair is not None else {}),
        **described,
        "image_count": counted["images"],
        "skipped_unreadable": counted["skipped"],
        "seed": seed,
        "batch_size": batch_size,  # the shuffled control is drawn per batch (mini, None: one batch)
        "preprocessing": "the mini suite's 32 px images, one normalisation"
        if mini
        else "target's resize and crop; "
        + ("one normalisation" if same_norm else "each model normalises the same pixels with its own mean and std"),
        "normalisation": {
            "source": {"mean": list(loaded_source.mean), "std": list(loaded_source.std)},
            "target": {"mean": list(loaded_target.mean), "std": list(loaded_target.std)},
        },
        "layers": [r.to_dict() for r in relations],
        "orthoxfer_version": __version__,
    }
    if tasks:
        results["transferability"] = task_transferability(
            CheckRequest(tasks, task_vector or [], data_root, shots, seed),
            loaded_source,
            loaded_target,
            "mini" if mini else "paper",
            size,
            cache_dir,
            where,
            quiet=as_json,
        )
    out_json, out_png = out / "relate.json", out / "relate.png"
    write_json(out_json, results)
    plot_relations(relations, out_png, title=f"{loaded_source.spec} vs {loaded_target.spec}")
    if as_json:
        print_json(results)
        return

    table = Grid(
        f"{loaded_source.spec} vs {loaded_target.spec} ({counted['images']} images)",
        ["layer", "procrustes residual", "CKA", "control residual", "control CKA"],
    )
    for r in relations:
        table.add_row(
            r.layer, f"{r.procrustes_residual:.4f}", f"{r.cka:.4f}", f"{r.control_residual:.4f}", f"{r.control_cka:.4f}"
        )
    console.print(table)
    if not same_norm:
        console.print(
            "note: the two models normalise pixels differently; each got its own normalisation of the same pixels"
        )
    if counted["skipped"]:
        console.print(f"skipped {counted['skipped']} unreadable image(s)")
    print_wrote(None, [out_json, out_png])


@dataclass(frozen=True)
class CheckRequest:
    """What the transferability check is asked for: the tasks, their vectors (mini: model A's when none are given),
    where the data is, and the few-shot draw whose held-out part is the validation set."""

    tasks: str
    vectors: list[str]
    data_root: Path | None
    shots: int | None
    seed: int


def task_transferability(
    asked: CheckRequest, source, target, suite_name: str, size: str, cache_dir: Path | None, device, quiet: bool = False
) -> dict:
    """The transferability check: each task's source vector carried into the target without data (as it is, and by
    transfusion), scored on validation data it never trained on: the suite's own validation sets (mini), else a
    held-out part of the few-shot pool `align` draws with the same --shots and --seed."""
    from orthoxfer.cli.align import load_vectors, validation_split
    from orthoxfer.evaluation.transferability import READING, transferability
    from orthoxfer.suites.mini import PREFIX

    names = [t.strip() for t in asked.tasks.split(",") if t.strip()]
    if suite_name != "mini" and not asked.vectors:
        raise UsageError(
            "--tasks on open_clip models needs each task's vector: --task-vector EuroSAT=tv/eurosat.safetensors"
        )
    if suite_name == "mini" and (asked.data_root or asked.shots):
        raise UsageError("the mini models' check uses their own validation sets; leave out --data-root and --shots")
    suite = command_suite(suite_name, device, size=size, cache_dir=cache_dir, data_root=asked.data_root)
    given = load_vectors(asked.vectors, suite.vector) if asked.vectors else {t: suite.vector(PREFIX + t) for t in names}
    validation = suite.validation_sets(target, names)
    if validation is None:  # no validation sets of its own (paper): a held-out part of the pool align would draw
        pools = suite.fewshot_tasks(target, names, asked.shots or suite.default_shots, None, asked.seed)
        _, validation = validation_split(suite, target, pools, asked.seed, "the transferability check")
    canonical = {name.lower(): name for name in validation}  # `eurosat` on the command line is the dataset EuroSAT
    vectors = {canonical.get(k.lower(), k): v for k, v in given.items()}
    if missing := [t for t in validation if t not in vectors]:
        raise UsageError(f"no task vector for {', '.join(missing)}; name each with --task-vector TASK=PATH")
    found = transferability(target.model, {t: vectors[t] for t in validation}, validation, source.model, device)
    for task, row in found.items() if not quiet else ():
        console.print(
            f"transferability {task}: target only {100 * row['target']:.1f}; gain on validation: "
            + ", ".join(f"{m} {100 * row[m]['gain']:+.1f}" for m in ("direct", "transfusion") if m in row),
            highlight=False,
        )
    if not quiet:
        console.print(f"({READING}: docs/study.md)", highlight=False)
    return found
