"""Does bf16 change the U a run at lr 1e-5 ends with? float32 against bf16 autocast, on a CPU.

The same alignment (penalty, the paper's form, alpha 1, AdamW lr 1e-5, --batch-size, the same
seed and batches) is run twice on the shipped miniature target (model B: width 128, so 16
sites of 128 x 128), once with ``precision = "fp32"`` and once with ``"bf16"`` (bf16
autocast on the CPU: what ``auto`` does on a GPU), for each budget. The task vector is
synthetic (a dense Gaussian per site, ``rho`` = 1e-2 of the site's weight norm) and the
few-shot task 100 random images with random labels under a fixed random head: what is
compared is the path U takes under the two precisions, not what it learns. Reported:
||U - I|| of each (mean over sites), and how far the two runs' U's and transferred vectors
are apart, relative to how far float32 moved them. The miniature's weights are not
ViT-B/32's, so this shows whether the effect is there, not its size at full scale
(benchmarks/precision_cast.py measures the cast at width 768).

    PYTHONPATH=. python benchmarks/precision_train.py --steps 50,200 --batch-size 32 \
        --out benchmarks/results/precision-train-cpu
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from orthoxfer.alignment.align import align
from orthoxfer.experiments.step_cost import machine
from orthoxfer.problem.align_problem import AlignProblem
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.strategies.settings import AlignSettings
from orthoxfer.suites import open_suite
from orthoxfer.suites.base import SuiteRequest
from orthoxfer.vectors.sites import find_sites, read_site
from orthoxfer.vectors.taskvector import TaskVector

TASK = "random"


def stack(alignment, scope: str) -> torch.Tensor:
    return torch.stack([alignment.matrices(scope)[s].float() for s in alignment.sites])


def synthetic(model: torch.nn.Module, rho: float) -> tuple[TaskVector, dict[str, FewShotTask]]:
    """A dense vector ``rho`` times each attention site's norm, and 100 random labelled images under a random head."""
    g = torch.Generator().manual_seed(0)
    dense = {}
    for site in find_sites(model, "attn"):
        w = read_site(model, site)
        d = torch.randn(w.shape, generator=g)
        dense[site.name] = d * (rho * w.norm() / d.norm())
    size = model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    head = torch.nn.Linear(model.visual.output_dim, 10)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) / model.visual.output_dim**0.5)
        head.bias.zero_()
    images = torch.randint(0, 256, (100, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (100,), generator=g)
    task = FewShotTask(TASK, images, labels, head.requires_grad_(False))
    return TaskVector(dense, meta={"tasks": [TASK]}), {TASK: task}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="800,6400")
    parser.add_argument("--rho", type=float, default=1e-2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/precision-train-cpu"))
    args = parser.parse_args()
    suite = open_suite("mini", SuiteRequest(size="full"))
    target = suite.load("mini:b")
    vector, pools = synthetic(target.model, args.rho)
    rows = []
    for steps in (int(s) for s in args.steps.split(",")):
        found = {}
        for precision in ("fp32", "bf16"):
            settings = AlignSettings(
                method="penalty",
                penalty_form="paper",
                alpha=1.0,
                lr=args.lr,
                weight_decay=0.0,
                steps=steps,
                warmup=steps // 8,
                batch_size=args.batch_size,
                augment=1,
                mode="per-task",
                precision=precision,
                log_every=0,
                checkpoint_every=0,
            )
            alignment = align(AlignProblem(target.model, {TASK: vector}, pools), settings)
            u = stack(alignment, TASK)
            moved = alignment.apply(vector.select(alignment.sites), task=TASK)
            found[precision] = (u, moved)
            print(
                f"{steps} steps {precision}: mean ||U - I|| {(u - torch.eye(u.shape[-1])).norm(dim=(1, 2)).mean():.4g}"
            )
        (u32, t32), (u16, t16) = found["fp32"], found["bf16"]
        eye = torch.eye(u32.shape[-1])
        base = vector.select(list(t32.sites))
        rotation_32 = sum((t32.delta(s) - base.delta(s)).norm() ** 2 for s in t32.sites) ** 0.5
        apart = sum((t16.delta(s) - t32.delta(s)).norm() ** 2 for s in t32.sites) ** 0.5
        rows.append(
            {
                "steps": steps,
                "u_minus_i_fp32": (u32 - eye).norm(dim=(1, 2)).mean().item(),
                "u_minus_i_bf16": (u16 - eye).norm(dim=(1, 2)).mean().item(),
                # how far the bf16 run's U ends from the float32 run's, per unit of how far float32 moved U
                "u_apart_relative": ((u16 - u32).norm() / (u32 - eye).norm()).item(),
                # the same for the transferred vector U^T dW U
                "vector_apart_relative": (apart / rotation_32).item(),
                "u_cosine": torch.nn.functional.cosine_similarity(
                    (u16 - eye).flatten(), (u32 - eye).flatten(), dim=0
                ).item(),
            }
        )
        print(rows[-1], flush=True)
        write(args, rows)  # after every budget: a long one cut short keeps the shorter ones


def write(args: argparse.Namespace, rows: list[dict]) -> None:
    info = machine(torch.device("cpu"))
    result = {"machine": info, "rho": args.rho, "lr": args.lr, "batch_size": args.batch_size, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Does bf16 change the U a run at lr 1e-5 ends with? (benchmarks/precision_train.py)",
        "",
        f"Machine: {info.get('cpu', '?')}, torch {torch.__version__}; target: the shipped mini model B; a synthetic",
        f"vector ({args.rho:g} of each site's norm), 100 random images and labels under a random head;",
        f"penalty (paper form, alpha 1), AdamW lr {args.lr:g}, batch {args.batch_size}, same seed and batches; fp32 against bf16",
        "autocast on the CPU. apart = ||X_bf16 - X_fp32|| / ||X_fp32 - X_start|| (X = U, or the transferred vector).",
        "",
        "| steps | mean ‖U−I‖ fp32 | mean ‖U−I‖ bf16 | U apart | cos(U−I) | transferred vector apart |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['steps']} | {r['u_minus_i_fp32']:.4g} | {r['u_minus_i_bf16']:.4g} | {r['u_apart_relative']:.3g} | "
            f"{r['u_cosine']:.3f} | {r['vector_apart_relative']:.3g} |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out.with_suffix('.json')} and .md")


if __name__ == "__main__":
    main()
