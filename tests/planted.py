"""A toy with a planted rotation: every site input of the target is U*^T times the source's.

Linear residual blocks keep the rotation exact (h -> h + W h commutes with h -> U^T h
when W_T = U^T W_S U), so the target computes exactly the source's function in
rotated coordinates and the ideal transferred vector is U*^T dW U*.
"""

import torch
from torch import nn

from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.vectors.taskvector import TaskVector


class ResidualNet(nn.Module):
    def __init__(self, d_in: int = 12, d: int = 8, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, d, bias=False)
        self.blocks = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x.flatten(1))
        for block in self.blocks:
            h = h + block(h)
        return h


def random_orthogonal(d: int, g: torch.Generator, det: int = 1, near_identity: float | None = None) -> torch.Tensor:
    if near_identity is not None:
        a = torch.randn(d, d, generator=g)
        q = torch.linalg.matrix_exp(near_identity * (a - a.T) / 2)
    else:
        q, r = torch.linalg.qr(torch.randn(d, d, generator=g))
        q = q * torch.sign(torch.diagonal(r))
    if torch.sign(torch.linalg.det(q)) != det:
        q[:, 0] = -q[:, 0]
    return q


def planted(
    seed: int = 0,
    d: int = 8,
    classes: int = 16,
    n: int = 256,
    det: int = 1,
    near_identity: float | None = None,
    dw: float = 0.5,
    logit: float = 5.0,
):
    """(source, target, u_star, task vector, few-shot task for the target)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    source = ResidualNet(d=d)
    u = random_orthogonal(d, g, det, near_identity)
    target = ResidualNet(d=d)
    with torch.no_grad():
        target.embed.weight.copy_(u.T @ source.embed.weight)
        for bt, bs in zip(target.blocks, source.blocks):
            bt.weight.copy_(u.T @ bs.weight @ u)
    tv = TaskVector(
        {f"blocks.{i}.weight": dw * torch.randn(d, d, generator=g) for i in range(2)}, meta={"tasks": ["toy"]}
    )
    head_s = nn.Linear(d, classes, bias=False)
    head_t = nn.Linear(d, classes, bias=False)
    with torch.no_grad():
        head_s.weight.copy_(logit * torch.randn(classes, d, generator=g))
        head_t.weight.copy_(head_s.weight @ u)
    images = torch.randint(0, 256, (n, 3, 2, 2), generator=g, dtype=torch.uint8)
    task = FewShotTask("toy", images, torch.zeros(n, dtype=torch.long), head_t, mean=(0.5,) * 3, std=(0.25,) * 3)
    tuned = tv.apply_to(ResidualNet(d=d).requires_grad_(False))
    tuned.load_state_dict(source.state_dict())
    tv.apply_to(tuned)
    with torch.no_grad():
        task.labels = head_s(tuned(task.normalise(images))).argmax(1)
    return source, target, u, tv, task
