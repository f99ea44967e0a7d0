"""How good are the mini suite's pre-trained models? Pre-training time, final loss and per-task accuracy.

For model A, model B and an untrained model of the same architecture, on each mini
task's test split: the suite's prototype head, from the task's head set (what every method
starts from), a ridge linear probe on the standardised features of the whole training
split (what the features can carry), and the zero-shot text head of the model's own
text tower (class names in one template), to show why the suite uses prototype heads.
With ``--finetune-steps``, model A's attention weights are fine-tuned on some tasks'
training splits (past the head and validation sets) through its prototype head to
check that a source task vector carries something: test accuracy before and after.
With ``--smaller-steps`` and ``--smaller-corpus``, a smaller pre-training is measured in
the same run beside the default (the full models come from the cache, or are pre-trained
now: the shipped files hold image towers only, and the zero-shot column needs the text
tower too).

    python benchmarks/mini_pretrain.py --smaller-steps 500 --smaller-corpus 16384 --smaller-warmup 50 \
        --out benchmarks/results/mini-pretrain.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.linear_model import RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from orthoxfer.artifacts import write_json
from orthoxfer.data.mini import TASK_NAMES, MiniTask, mini_tasks
from orthoxfer.data.mini_pools import features, model_suite
from orthoxfer.models.pretrain import PretrainConfig, build_model, pretrain_logs, pretrained_model, tokenize


@torch.no_grad()
def accuracy(head: torch.nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> float:
    return (head(feats).argmax(1) == labels).float().mean().item()


@torch.no_grad()
def zero_shot(model, class_names, feats, labels) -> float:
    text = F.normalize(model.encode_text(tokenize([f"a photo of {c}" for c in class_names], model)), dim=-1)
    return ((F.normalize(feats, dim=-1) @ text.T).argmax(1) == labels).float().mean().item()


def finetune(
    model, task: MiniTask, steps: int, lr: float = 5e-4, batch: int = 64, seed: int = 0
) -> tuple[float, float]:
    """Test accuracy of a copy of ``model`` before and after fine-tuning its attention weights on ``task``."""
    tuned = copy.deepcopy(model)
    pool = model_suite(tuned, [task], shots=None)[0].fewshot
    names = ("attn.in_proj_weight", "attn.out_proj.weight")
    params = [p for n, p in tuned.named_parameters() if n.startswith("visual.") and n.endswith(names)]
    for p in tuned.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    before = accuracy(pool.head, features(tuned, task.test_images), task.test_labels)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for _ in range(steps):
        images, labels = pool.batch(torch.randint(len(pool.labels), (batch,), generator=g))
        loss = F.cross_entropy(pool.head(tuned.encode_image(images)), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, accuracy(pool.head, features(tuned, task.test_images), task.test_labels)


def measure(
    config: PretrainConfig, tasks: list[MiniTask], cache_dir: str | None, finetune_steps: int, finetune_tasks: list[str]
) -> dict:
    """Per-task accuracy of A, B and an untrained tower for one pre-training config, and its pre-training log."""
    start = time.perf_counter()
    models = {
        name: pretrained_model(which, config, cache_dir, shipped=False) for name, which in (("A", "a"), ("B", "b"))
    }
    logs = pretrain_logs(config, cache_dir)
    results: dict = {
        "config": dataclasses.asdict(config),
        "images_per_model": config.steps * config.batch_size,
        "load_or_pretrain_s": round(time.perf_counter() - start, 1),
        "pretrain": {w: {k: logs[w][k] for k in ("seconds", "first_loss", "final_loss")} for w in logs},
        "models": {},
    }
    for name, model in (*models.items(), ("untrained", build_model(config, "a"))):
        rows = {}
        for task, ev in zip(tasks, model_suite(model, tasks, shots=None, seed=0), strict=True):
            test = features(model, task.test_images)
            train = features(model, task.train_images)
            probe = make_pipeline(StandardScaler(), RidgeClassifier(alpha=10.0)).fit(
                train.numpy(), task.train_labels.numpy()
            )
            rows[task.name] = {
                "prototype": round(100 * accuracy(ev.fewshot.head, test, task.test_labels), 1),
                "probe": round(100 * probe.score(test.numpy(), task.test_labels.numpy()), 1),
                "zero_shot": round(100 * zero_shot(model, task.class_names, test, task.test_labels), 1),
                "chance": round(100 / len(task.class_names), 1),
            }
        rows["mean"] = {
            k: round(sum(r[k] for r in rows.values()) / len(TASK_NAMES), 1)
            for k in ("prototype", "probe", "zero_shot", "chance")
        }
        results["models"][name] = rows
        print(config.steps, name, json.dumps(rows["mean"]), flush=True)
    if finetune_steps:
        start = time.perf_counter()
        chosen = [t for t in tasks if t.name in finetune_tasks]
        results["finetune_A"] = {
            t.name: [round(100 * a, 1) for a in finetune(models["A"], t, finetune_steps)] for t in chosen
        }
        results["finetune_s"] = round(time.perf_counter() - start, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--micro", action="store_true")
    parser.add_argument("--finetune-steps", type=int, default=0)
    parser.add_argument("--finetune-tasks", default="mnist,housenumbers,pictograms,coins")
    parser.add_argument("--smaller-steps", type=int, default=None, help="also measure this many pre-training steps")
    parser.add_argument("--smaller-corpus", type=int, default=None)
    parser.add_argument("--smaller-warmup", type=int, default=None)
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = PretrainConfig.micro() if args.micro else PretrainConfig()
    configs = {"default": config}
    if args.smaller_steps is not None:
        smaller = {"steps": args.smaller_steps, "corpus_size": args.smaller_corpus, "warmup": args.smaller_warmup}
        configs["smaller"] = dataclasses.replace(config, **{k: v for k, v in smaller.items() if v is not None})
    start = time.perf_counter()
    tasks = mini_tasks("micro" if args.micro else "full")
    results: dict = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "tasks_s": round(time.perf_counter() - start, 1),
        "heads": "prototypes of each task's head set",
    }
    for name, chosen in configs.items():
        results[name] = measure(chosen, tasks, args.cache_dir, args.finetune_steps, args.finetune_tasks.split(","))
    if args.out:
        write_json(Path(args.out), results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
