"""Where a step's time goes: torch.profiler over the same rows ``orthoxfer bench-speed`` times.

Prints, per row, the host time and the summed kernel time of one step and the kernels launched,
then the ops that take the most device time. On a GPU, host time well above device time
means the step is launch-bound (the GPU waits on Python), which no amount of faster
maths fixes; that is how the README's note on the H100 rows was found.

    python benchmarks/profile_step.py --device cuda --methods floor,penalty,cayley --rotation-rank 16
"""

from __future__ import annotations

from typing import Annotated

import typer

from orthoxfer.cli.common import comma_list, resolve_device
from orthoxfer.experiments.step_cost import build_rows


def profile_rows(
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    methods: Annotated[
        str, typer.Option(help="Comma-separated bench-speed rows (the floor is always included).")
    ] = "floor,penalty",
    arch: Annotated[str, typer.Option(help="open_clip architecture (random weights) or 'tiny'.")] = "ViT-B-32",
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 128,
    rotation_rank: Annotated[int, typer.Option(help="Also profile each trained strategy at this rank (0: not).")] = 0,
    steps: Annotated[int, typer.Option(help="Profiled steps per row, after 3 warm-up steps.")] = 5,
    top: Annotated[int, typer.Option(help="Ops listed per row.")] = 10,
) -> None:
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    dev = resolve_device(device)
    rows, _ = build_rows(arch, batch_size, dev, list(comma_list(methods)), ["dense"], 16, rotation_rank)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for row in rows:
        for _ in range(3):
            row.run()
        sync()
        with profile(activities=activities) as prof:
            for _ in range(steps):
                row.run()
            sync()
        events = prof.key_averages()
        host = sum(e.self_cpu_time_total for e in events) / steps / 1e3
        kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]  # device-side events only
        device_ms = sum(e.time_range.elapsed_us() for e in kernels) / steps / 1e3
        launches = sum(e.count for e in events if "LaunchKernel" in e.key) / steps
        print(
            f"== {row.name} ({row.vector}): host {host:.1f} ms/step, device kernels {device_ms:.1f} ms/step, {launches:.0f} launches/step"
        )
        print(
            events.table(
                sort_by="self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total",
                row_limit=top,
                max_name_column_width=50,
            )
        )


if __name__ == "__main__":
    typer.run(profile_rows)
