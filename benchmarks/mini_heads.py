"""What a mini head knows before any method runs: target-only accuracy with the suite's head against the old one.

The suite's head (:func:`orthoxfer.data.mini_pools.task_head`) is built from a fixed
head set of two labelled images per class, apart from the few-shot pool; before issue
16 it was built from the pool itself, so "target only" already used the pool's labels,
which the paper's zero-shot text heads do not. This prints and writes both heads'
test accuracy on every task for the shipped models A and B (seed 0's 32-shot pool).

    python benchmarks/mini_heads.py --out benchmarks/results/mini-heads.json
"""

from __future__ import annotations

import argparse

import torch

from orthoxfer.artifacts import write_json
from orthoxfer.cache import cache_root
from orthoxfer.data.mini import mini_tasks
from orthoxfer.data.mini_pools import features, fewshot_pool, task_head
from orthoxfer.experiments.step_cost import machine
from orthoxfer.models.pretrain import pretrained_model
from orthoxfer.models.prototype_head import PrototypeHead
from orthoxfer.suites.base import SuiteRequest
from orthoxfer.suites.mini import default_shots, pretrain_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/mini-heads.json")
    parser.add_argument("--shots", type=int, default=default_shots("full"))
    args = parser.parse_args()
    config = pretrain_config(SuiteRequest())
    rows: dict[str, dict[str, float]] = {}
    for which in ("a", "b"):
        model = pretrained_model(which, config, cache_root())
        for task in mini_tasks("full"):
            test = features(model, task.test_images)
            images, labels = fewshot_pool(task, args.shots, 0)
            heads = {
                "pool": PrototypeHead.from_features(features(model, images), labels, len(task.class_names)),
                "head_set": task_head(model, task),
            }
            rows[f"{which}/{task.name}"] = {
                name: 100 * (head(test).argmax(1) == task.test_labels).float().mean().item()
                for name, head in heads.items()
            }
            print(which, task.name, {k: round(v, 1) for k, v in rows[f"{which}/{task.name}"].items()}, flush=True)
    means = {
        which: {name: sum(v[name] for k, v in rows.items() if k.startswith(which)) / 8 for name in ("pool", "head_set")}
        for which in ("a", "b")
    }
    print("mean", {w: {k: round(v, 1) for k, v in m.items()} for w, m in means.items()})
    write_json(args.out, {"shots": args.shots, "rows": rows, "mean": means, "machine": machine(torch.device("cpu"))})


if __name__ == "__main__":
    main()
