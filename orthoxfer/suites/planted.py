"""The positive control: the target is model A itself with a known, function-preserving permutation planted in it.

Where the relation between the models *is* a per-site orthogonal map, a perfect
transfer reaches the source's own fine-tuned accuracy: the row ``U = U*`` is that
ceiling (:mod:`orthoxfer.models.planted`, seeded by the request's seed).
"""

from __future__ import annotations

from orthoxfer.errors import UsageError
from orthoxfer.models.planted import planted_target
from orthoxfer.models.pretrain import pretrained_model
from orthoxfer.suites.base import SuiteInputs, SuiteRequest
from orthoxfer.suites.mini import cache_dir, pretrain_config, suite_inputs


def build(request: SuiteRequest) -> SuiteInputs:
    if request.pair is not None:
        raise UsageError("--pair is for --suite mini; planted is its own suite (the target is A, permuted)")
    pretrain = pretrain_config(request)
    source = pretrained_model("a", pretrain, cache_dir(request))
    target, u_star = planted_target(source, request.seed)
    tasks, vectors, images = suite_inputs(request, source, target)
    return SuiteInputs(
        "planted",
        "mini:a",
        f"mini:a permuted (seed {request.seed})",
        source,
        target,
        tasks,
        vectors,
        u_star,
        relate_images=images,
    )
