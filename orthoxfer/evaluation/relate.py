"""How related two models' image representations are, layer by layer.

At every depth of the image tower (the token embeddings after ``ln_pre`` that enter
the first residual block, then the residual stream after each block of
``visual.transformer.resblocks``) both models see the same images; all tokens of all
images become the rows of one feature matrix per model, X_S and X_T (n x d). Two
numbers compare them:

* ``procrustes_residual``: min over orthogonal R of ||X_S R - X_T||_F after centring
  each matrix (column means) and scaling it to unit Frobenius norm. 0 means the two
  streams are the same up to a rotation, which is what an orthogonal transfer of
  task vectors assumes; sqrt(2) is the largest possible value.
* ``cka``: linear CKA of the centred features, 1 for representations equal up to a
  rotation and isotropic scaling, near 0 for unrelated ones.

Both follow from d x d statistics only, so memory does not grow with the number of
images: see :class:`RelationStats`. Next to each, a shuffled-rows control (rows of
X_T permuted at random, seeded) gives the floor a meaningless pairing reaches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from orthoxfer.errors import OrthoxferError, UsageError
from orthoxfer.models.modes import evaluating
from orthoxfer.problem.tasks import image_features
from orthoxfer.report.plots import pyplot, save_figure

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LayerRelation:
    """Source versus target at one depth (0 = token embeddings after ``ln_pre``, k = after block k)."""

    depth: int
    layer: str
    procrustes_residual: float
    cka: float
    control_residual: float  # the same numbers with the target's rows shuffled
    control_cka: float
    rows: int  # tokens compared (images x tokens per image)

    def to_dict(self) -> dict:
        return asdict(self)


def procrustes_residual(cxx: torch.Tensor, cyy: torch.Tensor, cxy: torch.Tensor) -> float:
    """min_R ||X R - Y||_F over orthogonal R for centred X, Y each scaled to unit Frobenius norm.

    Takes the centred ``X^T X``, ``Y^T Y`` and ``X^T Y``: ||X||_F^2 = tr(X^T X), and the
    minimum is sqrt(2 - 2 ||X^T Y||_* / (||X||_F ||Y||_F)) (nuclear norm = sum of singular values).
    """
    scale = (cxx.trace() * cyy.trace()).sqrt()
    if scale <= 0:
        return float("nan")  # a constant feature matrix has no direction to compare
    nuclear = torch.linalg.svdvals(cxy).sum() / scale
    return float((2 - 2 * nuclear).clamp_min(0).sqrt())


def linear_cka(cxx: torch.Tensor, cyy: torch.Tensor, cxy: torch.Tensor) -> float:
    """Linear CKA ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F) of centred X, Y from their Gram and cross matrices."""
    denominator = torch.linalg.matrix_norm(cxx) * torch.linalg.matrix_norm(cyy)
    if denominator <= 0:
        return float("nan")
    return float(torch.linalg.matrix_norm(cxy) ** 2 / denominator)


class RelationStats:
    """Running sums of two paired feature matrices, from which both metrics follow exactly.

    Holds n, the column sums s_x, s_y and the float64 products X^T X, Y^T Y, X^T Y (and
    X^T Y' for the shuffled control Y'), added batch by batch. The centred versions are
    derived from the sums instead of from centred rows, which would need the means of
    all images before the first product:
    ``Xc^T Yc = X^T Y - s_x s_y^T / n`` (likewise for X^T X and Y^T Y). A shuffle
    permutes rows, so Y' has the same sums and Gram matrix as Y and only its cross
    matrix is extra. Batches add exactly: one batch or many give the same result.
    """

    def __init__(self) -> None:
        self.n = 0
        self.sx = self.sy = self.xx = self.yy = self.xy = self.xy_control = None

    def update(self, x: torch.Tensor, y: torch.Tensor, y_control: torch.Tensor | None = None) -> None:
        """Add paired rows ``x`` (n, d_x) and ``y`` (n, d_y); ``y_control`` is ``y`` with its rows shuffled."""
        if x.shape[0] != y.shape[0]:
            raise UsageError(
                f"the models produce {x.shape[0]} and {y.shape[0]} tokens for the same images; "
                "relate needs the same image size and patch size"
            )
        x, y = x.double(), y.double()
        parts = {
            "sx": x.sum(0),
            "sy": y.sum(0),
            "xx": x.T @ x,
            "yy": y.T @ y,
            "xy": x.T @ y,
        }
        if y_control is not None:
            parts["xy_control"] = x.T @ y_control.double()
        for name, value in parts.items():
            total = getattr(self, name)
            setattr(self, name, value if total is None else total + value)
        self.n += x.shape[0]

    def centred(self, control: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Centred ``(X^T X, Y^T Y, X^T Y)`` from the running sums (``X^T Y'`` with ``control``)."""
        if self.n == 0:
            raise UsageError("no images were compared; give at least one image")
        xy = self.xy_control if control else self.xy
        if xy is None:
            raise ValueError("no control rows were added")
        n = self.n
        return (
            self.xx - torch.outer(self.sx, self.sx) / n,
            self.yy - torch.outer(self.sy, self.sy) / n,
            xy - torch.outer(self.sx, self.sy) / n,
        )

    def metrics(self, control: bool = False) -> tuple[float, float]:
        """``(procrustes_residual, cka)`` of all rows added so far."""
        cxx, cyy, cxy = (m.cpu() for m in self.centred(control))
        return procrustes_residual(cxx, cyy, cxy), linear_cka(cxx, cyy, cxy)


def compare(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """``(procrustes_residual, cka)`` of two paired feature matrices held in memory."""
    stats = RelationStats()
    stats.update(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]))
    return stats.metrics()


def residual_blocks(model: nn.Module) -> nn.ModuleList | nn.Sequential:
    """The image tower's residual blocks (``model.visual.transformer.resblocks``), or a UsageError."""
    try:
        blocks = model.get_submodule("visual.transformer.resblocks")
    except AttributeError:
        blocks = None
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)):
        raise UsageError(
            f"{type(model).__name__} has no visual.transformer.resblocks; relate needs an open_clip ViT image tower"
        )
    return blocks


def tower_shape(model: nn.Module) -> tuple[int, int]:
    """(width, depth) of the image tower's residual stream."""
    blocks = residual_blocks(model)
    transformer = model.get_submodule("visual.transformer")
    width = getattr(transformer, "width", None)
    if width is None:
        ln_1 = blocks[0].get_submodule("ln_1")
        if not isinstance(ln_1, nn.LayerNorm):
            raise UsageError(
                f"{type(model).__name__}'s image tower names no width and has no LayerNorm ln_1 to read it"
            )
        width = ln_1.normalized_shape[0]
    return int(width), len(blocks)


def check_pair(source: nn.Module, target: nn.Module) -> tuple[int, int]:
    """The shared (width, depth), or a one-line UsageError."""
    s, t = tower_shape(source), tower_shape(target)
    if s != t:
        raise UsageError(
            f"the source's image tower has width {s[0]} and {s[1]} block(s), the target's width {t[0]} and "
            f"{t[1]} block(s); relate compares two models of one architecture"
        )
    return s


@contextmanager
def capture_stream(model: nn.Module) -> Iterator[list[torch.Tensor | None]]:
    """While active, every forward of ``model`` fills ``[embed, after block 1, ..., after block L]`` with (tokens, d) rows.

    The first entry is the input of the first block (the token embeddings after
    ``ln_pre``), read with a forward pre-hook; the others are the blocks' outputs.
    """
    blocks = residual_blocks(model)
    seen: list[torch.Tensor | None] = [None] * (len(blocks) + 1)

    def rows(t: torch.Tensor) -> torch.Tensor:
        return t.detach().reshape(-1, t.shape[-1])

    def before(mod, args, kwargs):
        seen[0] = rows(args[0] if args else next(iter(kwargs.values())))

    hooks = ExitStack()  # a hook handle is a context manager: closing the stack removes every hook
    hooks.enter_context(blocks[0].register_forward_pre_hook(before, with_kwargs=True))
    for i, block in enumerate(blocks):

        def after(mod, args, output, i=i):
            seen[i + 1] = rows(output[0] if isinstance(output, tuple) else output)

        hooks.enter_context(block.register_forward_hook(after))
    with hooks:
        yield seen


def _filled(seen: list[torch.Tensor | None], which: str) -> list[torch.Tensor]:
    """What one forward captured at every depth; a depth it never reached is refused, not read as None or as the
    previous batch's rows."""
    missing = [layer_name(k) for k, t in enumerate(seen) if t is None]
    if missing:
        raise OrthoxferError(
            f"the {which} model's image forward did not pass through {', '.join(missing)} of "
            "visual.transformer.resblocks; relate reads the residual stream there"
        )
    return [t for t in seen if t is not None]


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _batches(images: torch.Tensor | Iterable[torch.Tensor]) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        return [images] if images.ndim == 4 else images  # one batch, or a stack of batches
    return images


def layer_name(depth: int) -> str:
    return "embed (ln_pre)" if depth == 0 else f"block {depth}"


@torch.no_grad()
def relate(
    source: nn.Module,
    target: nn.Module,
    images: torch.Tensor | Iterable[torch.Tensor],
    seed: int = 0,
    source_transform: Transform | None = None,
    target_transform: Transform | None = None,
) -> list[LayerRelation]:
    """Procrustes residual and linear CKA of source versus target at every depth of the image tower.

    ``images`` is one batch (B, 3, H, W) or an iterable of batches; each batch goes to
    both models as it is, or through ``source_transform`` / ``target_transform`` first
    (e.g. uint8 pixels normalised with each model's own mean and std). Both models run
    in eval mode (their mode is restored afterwards) on their own devices. The control
    permutes the target's rows within each batch with a generator seeded by ``seed``,
    so it depends on how the images are batched; the real pairing does not.
    """
    _, depth = check_pair(source, target)
    stats = [RelationStats() for _ in range(depth + 1)]
    generator = torch.Generator().manual_seed(seed)
    with evaluating(source, target), capture_stream(source) as xs, capture_stream(target) as xt:
        for batch in _batches(images):
            xs[:], xt[:] = [None] * len(xs), [None] * len(xt)
            image_features(source, (source_transform(batch) if source_transform else batch).to(_device(source)))
            image_features(target, (target_transform(batch) if target_transform else batch).to(_device(target)))
            seen_s, seen_t = _filled(xs, "source"), _filled(xt, "target")
            where = _device(target) if _device(target).type != "mps" else torch.device("cpu")  # no float64 on MPS
            perm = torch.randperm(seen_t[0].shape[0], generator=generator).to(where)  # one shuffle per batch
            for k, (x, y) in enumerate(zip(seen_s, seen_t)):
                x, y = x.to(where), y.to(where)
                stats[k].update(x, y, y[perm])
    relations = []
    for k, s in enumerate(stats):
        residual, cka = s.metrics()
        control_residual, control_cka = s.metrics(control=True)
        relations.append(LayerRelation(k, layer_name(k), residual, cka, control_residual, control_cka, s.n))
    return relations


def plot_relations(relations: list[LayerRelation], path: Path | str, title: str = "") -> None:
    """Both metrics over depth, each with its shuffled control dashed, as one PNG."""
    plt = pyplot()
    depths = [r.depth for r in relations]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(depths, [r.procrustes_residual for r in relations], "o-", label="source vs target")
    left.plot(depths, [r.control_residual for r in relations], "x--", color="gray", label="shuffled control")
    left.set(xlabel="depth (0 = embeddings)", ylabel="Procrustes residual", ylim=(0, 1.5))
    right.plot(depths, [r.cka for r in relations], "o-", label="source vs target")
    right.plot(depths, [r.control_cka for r in relations], "x--", color="gray", label="shuffled control")
    right.set(xlabel="depth (0 = embeddings)", ylabel="linear CKA", ylim=(0, 1.05))
    for ax in (left, right):
        ax.set_xticks(depths)
        ax.legend()
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
