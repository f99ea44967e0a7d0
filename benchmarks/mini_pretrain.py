"""How good are the mini suite's pre-trained models? Pre-training time and per-task accuracy.

For model A, model B and an untrained model of the same architecture, on each mini
task's test split: the suite's prototype head, from the task's head set (what every method
starts from), a ridge linear probe on the standardised features of the whole training
split (what the features can carry), and the zero-shot text head of the model's own
text tower (class names in one template), to show why the suite uses prototype heads.
With ``--finetune-steps``, model A's attention weights are fine-tuned on some tasks'
training splits (past the head and validation sets) through its prototype head to
check that a source task vector carries something: test accuracy before and after.

    nice -n 10 python benchmarks/mini_pretrain.py --cache-dir /tmp/orthoxfer-cache --finetune-steps 150
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
import torch.nn.functional as F
from sklearn.linear_model import RidgeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from orthoxfer.data.mini import TASK_NAMES, MiniTask, mini_tasks
from orthoxfer.data.mini_pools import features, model_suite
from orthoxfer.models.pretrain import PretrainConfig, build_model, pretrained_pair, tokenize


@torch.no_grad()
def accuracy(head: torch.nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> float:
    return (head(feats).argmax(1) == labels).float().mean().item()


@torch.no_grad()
def zero_shot(model, class_names, feats, labels) -> float:
    text = F.normalize(model.encode_text(tokenize([f"a photo of {c}" for c in class_names], model)), dim=-1)
    return ((F.normalize(feats, dim=-1) @ text.T).argmax(1) == labels).float().mean().item()


def finetune(model, task: MiniTask, steps: int, lr: float = 5e-4, batch: int = 64, seed: int = 0) -> tuple[float, float]:
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--micro", action="store_true")
    parser.add_argument("--finetune-steps", type=int, default=0)
    parser.add_argument("--finetune-tasks", default="mnist,housenumbers,pictograms,coins")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = PretrainConfig.micro() if args.micro else PretrainConfig()
    start = time.perf_counter()
    model_a, model_b = pretrained_pair(config, args.cache_dir)
    pretrain_s = time.perf_counter() - start
    start = time.perf_counter()
    tasks = mini_tasks("micro" if args.micro else "full")
    data_s = time.perf_counter() - start
    shots = 48 if args.micro else 100
    results: dict = {"pretrain_s": round(pretrain_s, 1), "tasks_s": round(data_s, 1), "models": {}}
    for name, model in (("A", model_a), ("B", model_b), ("untrained", build_model(config, "a"))):
        rows = {}
        for task, ev in zip(tasks, model_suite(model, tasks, shots=shots, seed=0), strict=True):
            test = features(model, task.test_images)
            train = features(model, task.train_images)
            probe = make_pipeline(StandardScaler(), RidgeClassifier(alpha=10.0)).fit(train.numpy(), task.train_labels.numpy())
            rows[task.name] = {
                "prototype": round(100 * accuracy(ev.fewshot.head, test, task.test_labels), 1),
                "probe": round(100 * probe.score(test.numpy(), task.test_labels.numpy()), 1),
                "zero_shot": round(100 * zero_shot(model, task.class_names, test, task.test_labels), 1),
                "chance": round(100 / len(task.class_names), 1),
            }
        rows["mean"] = {k: round(sum(r[k] for r in rows.values()) / len(TASK_NAMES), 1) for k in ("prototype", "probe", "zero_shot", "chance")}
        results["models"][name] = rows
        print(name, json.dumps(rows), flush=True)
    if args.finetune_steps:
        start = time.perf_counter()
        chosen = [t for t in tasks if t.name in args.finetune_tasks.split(",")]
        results["finetune_A"] = {t.name: [round(100 * a, 1) for a in finetune(model_a, t, args.finetune_steps)] for t in chosen}
        results["finetune_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
