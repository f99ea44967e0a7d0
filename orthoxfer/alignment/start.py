"""Where an alignment starts: U = I, the closed form, or the vector a transfer method carried (a composition).

``init`` is ``identity``, ``procrustes`` (both one U0 per site, given to the trained
strategy), or the name of a transfer method (:mod:`orthoxfer.transfers.registry`, e.g.
``transfusion``). A transfer's result is not one U per site (transfusion permutes the
rows and columns of a q/k/v site by different permutations), so it composes instead:
:func:`start_from` carries each vector with the transfer first, and the strategy then
aligns the carried vector from U = I; with the ``anchor`` option it stays near what
the transfer carried, and with ``select_every`` the carried vector itself (step 0)
is kept unless training beats it on validation.

Every caller (``align``, ``bench``, the Python API) calls :func:`start_from` before
:func:`orthoxfer.alignment.align.align` and applies the alignment to the vectors it
returns; ``align`` refuses vectors that were not carried by the transfer ``init`` names,
so an alignment is never applied to the wrong vector.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from orthoxfer.errors import UsageError
from orthoxfer.problem.align_problem import AlignProblem
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.transfers.base import TransferSettings
from orthoxfer.vectors.taskvector import TaskVector

STARTS = ("identity", "procrustes")  # one U0 per site; any other init is a transfer method's name
CARRIED = "carried"  # the meta key of a vector start_from carried: {method, options, diagnostics}


def start_from(
    method: str,
    vectors: dict[str, TaskVector],
    source: nn.Module | None,
    target: nn.Module,
    pools: dict[str, FewShotTask],
    settings: TransferSettings,
) -> dict[str, TaskVector]:
    """``vectors`` as an alignment that starts at ``method`` (an ``init``) aligns them.

    ``identity`` and ``procrustes`` leave them as they are; a transfer method carries each
    (keys as :func:`~orthoxfer.transfers.carry.carry` reads them: a task's vector sees its
    own pool, ``joint`` every pool) and records itself in the carried vector's meta.
    ``pools`` are the few-shot training pools, never the validation data.
    """
    if method in STARTS:
        return vectors
    from orthoxfer.transfers.carry import carry
    from orthoxfer.transfers.registry import TRANSFERS

    check_init(method)
    done = carry(method, vectors, source, target, pools, settings)
    options = {o.name: settings.options[o.name] for o in TRANSFERS[method].options if o.name in settings.options}
    out = {}
    for key, d in done.items():
        summary = {k: v for k, v in d.diagnostics.items() if "/" not in k}  # per-site entries stay with the transfer
        d.vector.meta = {**d.vector.meta, CARRIED: {"method": method, "options": options, "diagnostics": summary}}
        out[key] = d.vector
    return out


def check_init(name: str) -> None:
    """Refuse an ``init`` that is neither a start of its own nor a registered transfer method, in one line."""
    from orthoxfer.transfers.registry import TRANSFERS

    if name not in STARTS and name not in TRANSFERS:
        raise UsageError(
            f"unknown init {name!r}; choose one of {', '.join(STARTS)} or a transfer: {', '.join(TRANSFERS)}"
        )


def check_start(problem: AlignProblem, settings: Any) -> None:
    """Under ``init=<transfer>``, every vector must be that transfer's result (see :func:`start_from`)."""
    if settings.init in STARTS:
        return
    for name, vector in problem.vectors.items():
        if vector.meta.get(CARRIED, {}).get("method") != settings.init:
            raise UsageError(
                f"init={settings.init}: task vector {name!r} was not carried by {settings.init}; "
                "carry the vectors with orthoxfer.alignment.start.start_from first"
            )


def start_record(problem: AlignProblem, settings: Any) -> dict[str, Any]:
    """What an alignment records about its start: the init, and for a transfer its options and diagnostics per vector."""
    if settings.init in STARTS:
        return {"init": settings.init}
    carried = {name: v.meta[CARRIED] for name, v in problem.vectors.items()}
    first = next(iter(carried.values()))
    return {
        "init": settings.init,
        "options": first["options"],
        "diagnostics": {name: c["diagnostics"] for name, c in carried.items()},
    }
