"""Several processes under torchrun: which one this is, and the few collectives alignment needs.

``torchrun --nproc-per-node N -m orthoxfer align|bench ...`` starts N copies of the
command with ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` set; :func:`start` joins them
into one process group (gloo on the CPU, nccl on CUDA, one GPU per process). Without
those variables, or with one process, nothing is started and every helper here is a
no-op, so a one-process run computes and writes exactly what it always did.

Two ways to share the work, one per alignment mode:

- ``per-task``: the tasks' independent problems are dealt to the processes round by
  round (:func:`spread`); each is solved by one process alone, bit for bit as one
  process would, and the solutions are gathered (:func:`all_gather`).
- ``joint``: every process fits the same U's, each on its own slice of every batch
  (:meth:`Ranks.part`); gradients are averaged across processes after each backward
  (:meth:`Ranks.average_`), so each step moves the U's as one step on the whole batch.

Work dealt out whole (the study's rows, one process each) runs :func:`alone`: inside it
this process is the only one, so nothing it calls meets the others.

Rank 0 writes the run folder; the others only read it (see :class:`orthoxfer.runs.Run`).
Objects are exchanged with ``all_gather_object`` (pickle), only between the processes
of one launch; nothing read from disk is ever unpickled.
"""

from __future__ import annotations

import atexit
import datetime
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist

from orthoxfer.errors import UsageError

if TYPE_CHECKING:
    from orthoxfer.runs import Run

T = TypeVar("T")


# how long a collective waits for the others: a study's rows are dealt out whole, so at the end of a seed's deal one
# process waits for the rest of another's share (hours on a CPU), longer than the backends' defaults (gloo 30 min)
WAIT = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class Ranks:
    """The processes that share one piece of work, and this process's place among them."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def part(self, n: int) -> slice:
        """This process's contiguous share of ``n`` items; ``n`` must divide evenly (see :meth:`check_batch`)."""
        share = n // self.size
        return slice(self.rank * share, (self.rank + 1) * share)

    def check_batch(self, batch_size: int) -> None:
        """Equal shares make the mean of the processes' mean losses the whole batch's mean loss."""
        if batch_size % self.size:
            raise UsageError(
                f"--batch-size {batch_size} must be a multiple of the {self.size} processes that share each batch"
            )

    def average_(self, tensors: list[torch.Tensor]) -> None:
        """Replace each tensor by its mean over the processes, in one all-reduce of one flat buffer."""
        if self.size == 1:
            return
        flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
        dist.all_reduce(flat)
        flat /= self.size
        for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
            t.detach().copy_(part.view_as(t))

    def broadcast_(self, tensors: Iterable[torch.Tensor]) -> None:
        """Make every process hold rank 0's values, so processes that share U's start from one point."""
        if self.size > 1:
            for t in tensors:
                dist.broadcast(t.detach(), src=0)


SOLO = Ranks()
_ALONE: ContextVar[bool] = ContextVar("alone", default=False)


def ranks() -> Ranks:
    """The processes of this launch (:data:`SOLO` outside torchrun, and inside :func:`alone`)."""
    if dist.is_available() and dist.is_initialized() and not _ALONE.get():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return SOLO


@contextmanager
def alone() -> Iterator[None]:
    """Inside, this process works as the only one (:func:`ranks` is :data:`SOLO`): no barrier, gather or shared batch
    waits for processes busy with other work, and the runs it opens are its own to write."""
    token = _ALONE.set(True)
    try:
        yield
    finally:
        _ALONE.reset(token)


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block before the others do: what it makes and caches there (a source vector), the others
    then read instead of making it again, at the same time, into the same files."""
    main = ranks().main
    if not main:
        barrier()
    yield
    if main:
        barrier()


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device: torch.device) -> torch.device:
    """Join the launch's process group when torchrun started several processes; returns this process's device.

    Each process of a CUDA launch takes the GPU ``LOCAL_RANK`` (whatever index
    ``--device`` named); a CPU launch talks through gloo.
    """
    if not launched() or dist.is_initialized():
        return device
    if not dist.is_available():
        raise UsageError("this torch was built without torch.distributed; run one process")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device, timeout=WAIT)
    else:
        dist.init_process_group("gloo", timeout=WAIT)
    atexit.register(dist.destroy_process_group)
    return device


def barrier() -> None:
    """Wait for every process: what rank 0 wrote before it is there for the others to read after it."""
    if ranks().size > 1:
        dist.barrier()


def all_gather(value: T) -> list[T]:
    """Every process's ``value``, in rank order, on every process."""
    group = ranks()
    if group.size == 1:
        return [value]
    gathered: list[Any] = [None] * group.size
    dist.all_gather_object(gathered, value)
    return gathered


def rounds(items: list[T]) -> Iterator[tuple[list[T], T | None]]:
    """``items`` dealt to the processes round by round: each round's items, and this process's one (None if none is left)."""
    group = ranks()
    for first in range(0, len(items), group.size):
        chunk = items[first : first + group.size]
        yield chunk, chunk[group.rank] if group.rank < len(chunk) else None


def spread(items: list[T], run: Run | None) -> Iterator[T]:
    """This process's items of each round of :func:`rounds`; what they write through ``run`` reaches rank 0 as the round ends.

    Ranks other than 0 hold their writes (:meth:`Run.holding`) and rank 0 makes them
    when the round ends, so the run folder is the one a single process writes, in the
    same order, and a resumed run finds the checkpoints of every finished round.
    """
    for _, mine in rounds(items):
        if run is None:
            if mine is not None:
                yield mine
            continue
        with run.holding() as held:
            if mine is not None:
                yield mine
        for writes in all_gather(held)[1:]:
            run.replay(writes)
