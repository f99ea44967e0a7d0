"""Interrupted runs resume to the same U's; diverging runs stop and keep the last good U's."""

import dataclasses

import pytest
import torch
from planted import planted

from orthoxfer.alignment.align import align
from orthoxfer.artifacts import load_artifact
from orthoxfer.fit.loop import Diverged
from orthoxfer.problem.align_problem import AlignProblem
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.runs import Run
from orthoxfer.strategies.settings import AlignSettings

pytestmark = pytest.mark.numerics  # also run under a second CPU kernel path (tests/test_kernel_paths.py)


@dataclasses.dataclass
class Interrupting(FewShotTask):
    """A task whose pool raises KeyboardInterrupt on the n-th batch, like Ctrl-C mid-run."""

    fail_at: int = 0
    calls: int = 0

    def batch(self, index, augment=True):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return super().batch(index, augment)


def settings(method):
    return AlignSettings(
        method=method,
        sites="linear",
        steps=30,
        lr=2e-2,
        batch_size=16,
        augment=4,
        warmup=5,
        checkpoint_every=10,
        log_every=1,
    )


@pytest.mark.parametrize("method", ["penalty", "riemannian", "cayley"])
def test_resume_after_interrupt_gives_identical_transforms(method, tmp_path):
    source, target, u, tv, task = planted()
    whole = align(AlignProblem(target, {"toy": tv}, {"toy": task}, source), settings(method), Run(tmp_path / "whole"))

    broken = Interrupting(**{f.name: getattr(task, f.name) for f in dataclasses.fields(FewShotTask)}, fail_at=25)
    with pytest.raises(KeyboardInterrupt):
        align(AlignProblem(target, {"toy": tv}, {"toy": broken}, source), settings(method), Run(tmp_path / "cut"))
    _, meta = load_artifact(tmp_path / "cut" / "checkpoint-joint.safetensors", "checkpoint")
    assert meta["step"] == 20
    resumed = align(
        AlignProblem(target, {"toy": tv}, {"toy": task}, source), settings(method), Run(tmp_path / "cut", resume=True)
    )
    for site in tv.sites:
        assert torch.equal(resumed.matrices()[site], whole.matrices()[site])
    steps = [line for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == 30


def test_same_seed_same_transforms(tmp_path):
    source, target, u, tv, task = planted()
    a = align(AlignProblem(target, {"toy": tv}, {"toy": task}, source), settings("cayley"))
    b = align(AlignProblem(target, {"toy": tv}, {"toy": task}, source), settings("cayley"))
    assert all(torch.equal(a.matrices()[s], b.matrices()[s]) for s in tv.sites)


class NanAfter(torch.nn.Module):
    """A head that starts returning NaN logits at its n-th call, as a blown-up loss would."""

    def __init__(self, head, n):
        super().__init__()
        self.head, self.n, self.calls = head, n, 0

    def forward(self, features):
        self.calls += 1
        out = self.head(features)
        return out * float("nan") if self.calls >= self.n else out


def test_diverging_loss_stops_and_names_the_step(tmp_path):
    source, target, u, tv, task = planted()
    task.head = NanAfter(task.head, 13)
    with pytest.raises(Diverged, match=r"at step 13 .*kept the last checkpoint.*smaller --lr"):
        align(AlignProblem(target, {"toy": tv}, {"toy": task}, source), settings("penalty"), Run(tmp_path / "nan"))
    tensors, meta = load_artifact(tmp_path / "nan" / "checkpoint-joint.safetensors", "checkpoint")
    assert meta["step"] == 10
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("module/"))


def test_non_finite_target_weights_are_refused_naming_the_site():
    source, target, u, tv, task = planted()
    with torch.no_grad():
        target.blocks[1].weight[0, 0] = float("inf")
    with pytest.raises(Exception, match="blocks.1.weight"):
        align(AlignProblem(target, {"toy": tv}, {"toy": task}, source), settings("cayley"))
