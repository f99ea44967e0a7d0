"""Does a change of U of the size lr 1e-5 makes survive bf16? Measured on a CPU, no GPU needed.

On CUDA an alignment step (``precision = "auto"``) materialises ``W + U^T dW U`` and runs
the forward under bf16 autocast, which rounds that weight to bf16 in every matmul; the
rotation itself runs in bf16 too (the stacked vector is kept in bf16, U cast to it).
What the forward sees of a change of U is then the change of the bf16-rounded weight.
This compares, for U = I + delta * S (S a random sign matrix: Adam moves every entry by
about lr per step), the change the forward sees against the exact change
``U^T dW U - dW`` (float64), for three ways of materialising the weight:

- ``fp32``: rotation and ``W + U^T dW U`` in float32 (``precision = "fp32"``);
- ``bf16-cast``: rotation in float32, the weight rounded to bf16 (what autocast does);
- ``bf16-rotation``: the rotation in bf16 as well (orthoxfer's CUDA path, ``auto``).

``delta``: one step at lr 1e-5, and what 100 / 800 / 6,400 steps can add up to under
warm-up + cosine (about half the peak lr on average: 5e-4, 4e-3, 3.2e-2, the issue's
figures). W and dW are synthetic, at ViT-B/32's attention width (768): W ~ N(0, 1/768)
(std 0.036, the scale of a trained ViT-B/32 projection) and dW a dense Gaussian whose norm
is ``rho`` times W's (task vectors of 2,000 fine-tuning steps at lr 1e-5 are 1e-3 to 1e-2
of the weights). No real checkpoint is read: the machine has no network.

    python benchmarks/precision_cast.py --out benchmarks/results/precision-cast-cpu
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from orthoxfer.experiments.step_cost import machine

DELTAS = {"1 step": 1e-5, "100 steps": 5e-4, "800 steps": 4e-3, "6400 steps": 3.2e-2}
RHOS = (1e-3, 1e-2)
PATHS = ("fp32", "bf16-cast", "bf16-rotation")


def materialise(w: torch.Tensor, dw: torch.Tensor, u: torch.Tensor, path: str) -> torch.Tensor:
    """The weight the forward multiplies by, as float64, for one way of materialising ``W + U^T dW U``."""
    if path == "bf16-rotation":
        ub = u.bfloat16()
        rotated = (ub.mT @ dw.bfloat16() @ ub).float()
    else:
        rotated = u.float().mT @ dw.float() @ u.float()
    weight = w.float() + rotated
    return (weight if path == "fp32" else weight.bfloat16()).double()


def measure(d: int, rho: float, delta: float, seed: int) -> dict[str, dict[str, float]]:
    """For each path: how the change the forward sees compares with the exact change of ``U^T dW U``."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    dw = torch.randn(d, d, generator=g, dtype=torch.float64)
    dw *= rho * w.norm() / dw.norm()
    signs = torch.randint(0, 2, (d, d), generator=g, dtype=torch.float64) * 2 - 1
    u = torch.eye(d, dtype=torch.float64) + delta * signs
    exact = u.mT @ dw @ u - dw
    eye = torch.eye(d, dtype=torch.float64)
    out = {}
    for path in PATHS:
        seen = materialise(w, dw, u, path) - materialise(w, dw, eye, path)
        out[path] = {
            "relative_error": ((seen - exact).norm() / exact.norm()).item(),  # 0: the forward sees the change exactly
            "cosine": (torch.dot(seen.flatten(), exact.flatten()) / (seen.norm() * exact.norm() + 1e-300)).item(),
            "entries_changed": (seen != 0).double().mean().item(),  # share of the weight's entries that moved at all
        }
    out["exact_rms"] = {"value": (exact.norm() / d).item()}
    out["bf16_spacing_rms"] = {  # the bf16 spacing of the weight's entries (their unit in the last place), RMS
        "value": (2.0 ** (torch.floor(torch.log2((w + dw).abs())) - 7)).pow(2).mean().sqrt().item()
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/precision-cast-cpu"))
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)  # a shared machine; the numbers do not depend on it
    rows = []
    for rho in RHOS:
        for label, delta in DELTAS.items():
            runs = [measure(args.dim, rho, delta, seed) for seed in range(args.seeds)]
            row = {"rho": rho, "delta": delta, "steps": label}
            for key in (*PATHS, "exact_rms", "bf16_spacing_rms"):
                row[key] = {m: sum(r[key][m] for r in runs) / len(runs) for m in runs[0][key]}
            rows.append(row)
            print(
                f"rho {rho:g} {label:>10} (delta {delta:g}): "
                + "  ".join(f"{p} err {row[p]['relative_error']:.3g} cos {row[p]['cosine']:.3f}" for p in PATHS),
                flush=True,
            )
    info = machine(torch.device("cpu"))
    result = {"machine": info, "dim": args.dim, "seeds": args.seeds, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Does a change of U survive bf16? (benchmarks/precision_cast.py)",
        "",
        f"Machine: {info.get('cpu', '?')}, torch {torch.__version__}; d = {args.dim}, mean of {args.seeds} seeds.",
        "U = I + delta * S (S random signs); error = ||seen - exact|| / ||exact|| of the change of the",
        "materialised weight W + U^T dW U against U = I (0: the forward sees the change exactly; 1: it sees",
        "nothing of it, or as much noise); cos = cosine between the two changes.",
        "",
        "| ‖dW‖/‖W‖ | U moved by | exact change (RMS) | bf16 spacing of W (RMS) | "
        + " | ".join(f"{p} error | {p} cos" for p in PATHS)
        + " |",
        "|" + "---|" * (4 + 2 * len(PATHS)),
    ]
    for r in rows:
        lines.append(
            f"| {r['rho']:g} | {r['delta']:g} ({r['steps']}) | {r['exact_rms']['value']:.2g} | "
            f"{r['bf16_spacing_rms']['value']:.2g} | "
            + " | ".join(f"{r[p]['relative_error']:.3g} | {r[p]['cosine']:.3f}" for p in PATHS)
            + " |"
        )
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out.with_suffix('.json')} and .md")


if __name__ == "__main__":
    main()
