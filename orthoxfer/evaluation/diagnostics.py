"""Does a transfer keep norm and rank, how far from orthogonal is U, how far did it rotate.

Per site: ||dW||_F before and after (and their ratio), numerical rank before and
after, ||U^T U - I||_F, max |sigma_i(U) - 1|, the sign of det U, ||U - I||_F, and the
cosine to the target's own task vector (the oracle) when one is given; for U's found
in closed form (``procrustes``, ``init=procrustes``) also how much of U the data decided:
the identified rank of the cross-covariance M and its condition. All maths in float64 so
the diagnostics never blame U for their own rounding.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from orthoxfer.alignment.artifact import JOINT, Alignment
from orthoxfer.artifacts import write_json
from orthoxfer.errors import UsageError
from orthoxfer.report.plots import pyplot, save_figure
from orthoxfer.terminal import Grid
from orthoxfer.vectors.taskvector import TaskVector

COLUMNS = (
    "norm_before",
    "norm_after",
    "norm_ratio",
    "rank_before",
    "rank_after",
    "orth_error",
    "max_sv_dev",
    "det_sign",
    "dist_identity",
)


def transform_metrics(u: torch.Tensor) -> dict[str, float]:
    u = u.double()
    eye = torch.eye(u.shape[0], dtype=u.dtype)
    sv = torch.linalg.svdvals(u)
    return {
        "orth_error": torch.linalg.matrix_norm(u.T @ u - eye).item(),
        "max_sv_dev": (sv - 1).abs().max().item(),
        "det_sign": int(torch.sign(torch.linalg.det(u)).item()),
        "dist_identity": torch.linalg.matrix_norm(u - eye).item(),
    }


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    denom = a.norm() * b.norm()
    return float((a @ b) / denom) if denom > 0 else 0.0


def diagnose(
    tv: TaskVector, alignment: Alignment, oracle: TaskVector | None = None, task: str | None = None
) -> dict[str, Any]:
    """Per-site rows and their aggregate for one task vector carried by ``alignment``."""
    scope = alignment.scope_for(tv, task)
    us = alignment.matrices(scope)
    after = alignment.apply(tv, task)
    norms_b, norms_a = tv.norms(), after.norms()
    ranks_b, ranks_a = tv.ranks(), after.ranks()
    identified = alignment.meta.get("identification", {}).get(scope, {})
    per_key: dict[int, dict[str, float]] = {}
    rows = []
    for site in tv.sites:
        u = us[site]
        metrics = per_key.setdefault(id(u), transform_metrics(u))
        row: dict[str, Any] = {
            "site": site,
            "norm_before": norms_b[site],
            "norm_after": norms_a[site],
            "norm_ratio": norms_a[site] / norms_b[site] if norms_b[site] > 0 else math.nan,
            "rank_before": ranks_b[site],
            "rank_after": ranks_a[site],
            **metrics,
        }
        if identified:
            found = identified[alignment.keys[site]]
            row["identified_rank"], row["condition"] = found["identified_rank"], found["condition"]
        if oracle is not None and site in oracle.sites:
            row["cosine_oracle_before"] = cosine(tv.delta(site), oracle.delta(site))
            row["cosine_oracle_after"] = cosine(after.delta(site), oracle.delta(site))
        rows.append(row)
    return {"scope": scope, "strategy": alignment.meta.get("strategy"), "sites": rows, "aggregate": aggregate(rows)}


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> float:
        return sum(r[key] for r in rows) / len(rows)

    total_b = math.sqrt(sum(r["norm_before"] ** 2 for r in rows))
    total_a = math.sqrt(sum(r["norm_after"] ** 2 for r in rows))
    out: dict[str, Any] = {
        "sites": len(rows),
        "norm_before": total_b,
        "norm_after": total_a,
        "norm_ratio": total_a / total_b if total_b > 0 else math.nan,
        "norm_ratio_min": min(r["norm_ratio"] for r in rows),
        "norm_ratio_max": max(r["norm_ratio"] for r in rows),
        "rank_kept": sum(r["rank_after"] == r["rank_before"] for r in rows),
        "orth_error_mean": mean("orth_error"),
        "orth_error_max": max(r["orth_error"] for r in rows),
        "max_sv_dev": max(r["max_sv_dev"] for r in rows),
        "det_negative": sum(r["det_sign"] < 0 for r in rows),
        "dist_identity_mean": mean("dist_identity"),
    }
    if rows and "identified_rank" in rows[0]:
        out["identified_rank_min"] = min(r["identified_rank"] for r in rows)
        conditions = [r["condition"] for r in rows]
        out["condition_max"] = None if None in conditions else max(conditions)
    if rows and "cosine_oracle_after" in rows[0]:
        out["cosine_oracle_before"] = mean("cosine_oracle_before")
        out["cosine_oracle_after"] = mean("cosine_oracle_after")
    return out


def aggregate_by_scope(alignment: Alignment, vectors: dict[str, TaskVector]) -> dict[str, Any]:
    """The aggregate of every scope of an alignment (joint: the summed vectors)."""
    if JOINT in alignment.transforms:
        return {JOINT: diagnose(TaskVector.sum(vectors.values()), alignment)["aggregate"]}
    return {scope: diagnose(vectors[scope], alignment, task=scope)["aggregate"] for scope in alignment.scopes}


def plot_singular_values(
    tv: TaskVector, alignment: Alignment, site: str, path: Path | str, task: str | None = None
) -> None:
    """Singular values of one site before and after: on top of each other when U is orthogonal."""
    plt = pyplot()
    after = alignment.apply(tv, task)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.semilogy(tv.singular_values(site).numpy(), label="source dW", lw=2)
    ax.semilogy(after.singular_values(site).numpy(), "--", label="U^T dW U", lw=2)
    ax.set(xlabel="index", ylabel="singular value", title=site)
    ax.legend()
    save_figure(fig, path)


def plot_orthogonality(rows: list[dict[str, Any]], path: Path | str) -> None:
    """||U^T U - I||_F per site: flat at float precision for exact strategies, drifting for penalty."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.15), 4))
    ax.bar(range(len(rows)), [max(r["orth_error"], 1e-12) for r in rows])
    ax.set_yscale("log")
    ax.set(xlabel="site", ylabel="||U^T U - I||_F", title="orthogonality error per site")
    save_figure(fig, path)


def write_report(
    report: dict[str, Any], tv: TaskVector, alignment: Alignment, out: Path | str, site: str | None = None
) -> list[Path]:
    """diagnostics.json and the two plots into ``out``; returns the files written."""
    out = Path(out)
    site = site or report["sites"][0]["site"]
    if site not in tv.sites:
        raise UsageError(f"--site {site!r} is not a site of the task vector (e.g. {tv.sites[0]!r})")
    files = [out / "diagnostics.json", out / "singular_values.png", out / "orthogonality.png"]
    write_json(files[0], report)
    plot_singular_values(tv, alignment, site, files[1], task=report["scope"] if report["scope"] != JOINT else None)
    plot_orthogonality(report["sites"], files[2])
    return files


def report_table(report: dict[str, Any]) -> Grid:
    """The per-site rows and the aggregate as one table (split into parts where the width asks)."""
    oracle = "cosine_oracle_after" in report["aggregate"]
    identified = "identified_rank_min" in report["aggregate"]
    heads = ["site", "||dW|| before", "||dW|| after", "ratio", "rank", "||U^TU-I||", "max|s-1|", "det", "||U-I||"]
    heads += ["identified rank", "cond(M)"] if identified else []
    heads += ["cos oracle before", "cos oracle after"] if oracle else []
    worst = "min identified rank, max cond(M), " if identified else ""
    table = Grid(
        f"diagnostics: {report['strategy']} ({report['scope']})",
        heads,
        caption=f"all sites: total ||dW||, max ||U^TU-I|| and |s-1|, {worst}mean ||U-I||"
        + (" and cos oracle" if oracle else ""),
    )

    def cells(r: dict[str, Any], name: str) -> list[str]:
        row = [
            name,
            f"{r['norm_before']:.4g}",
            f"{r['norm_after']:.4g}",
            f"{r['norm_ratio']:.6f}",
            f"{r['rank_before']}->{r['rank_after']}" if "rank_before" in r else f"{r['rank_kept']}/{r['sites']} kept",
            f"{r.get('orth_error', r.get('orth_error_max', 0)):.2e}",
            f"{r['max_sv_dev']:.2e}",
            f"{r['det_sign']:+d}" if "det_sign" in r else f"{r['det_negative']} neg",
            f"{r.get('dist_identity', r.get('dist_identity_mean', 0)):.4g}",
        ]
        if identified:
            condition = r.get("condition", r.get("condition_max"))
            row += [
                str(r.get("identified_rank", r.get("identified_rank_min"))),
                "inf" if condition is None else f"{condition:.3g}",
            ]
        if oracle:
            row += [f"{r['cosine_oracle_before']:.4f}", f"{r['cosine_oracle_after']:.4f}"]
        return row

    for r in report["sites"]:
        table.add_row(*cells(r, r["site"]))
    table.add_section()
    table.add_row(*cells(report["aggregate"], "all sites"))
    return table
