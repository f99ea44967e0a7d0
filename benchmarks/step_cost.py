"""Step-cost benchmark at ViT-B/32 scale: every strategy's optimiser step against plain fine-tuning.

The same function as ``orthoxfer bench-speed`` (see :mod:`orthoxfer.cli.bench_speed`
for what each row is and how time and memory are measured); writes
``benchmarks/results/step_cost-<device>.json`` and ``.md``.

    nice -n 5 python benchmarks/step_cost.py                       # ViT-B-32, batch 32 on CPU
    python benchmarks/step_cost.py --vector dense,lora --device cuda
"""

import typer

from orthoxfer.cli.bench_speed import bench_speed_command

if __name__ == "__main__":
    typer.run(bench_speed_command)
