"""Pre-training the ``mini`` suite's small CLIPs, and caching them on disk.

The paper transfers between two ViT-B/32 CLIPs pre-trained independently on different
data. The mini suite rebuilds that situation at laptop scale: two CLIPs of one small
open_clip architecture (:func:`orthoxfer.models.small.small_clip`), each from its own
random init, each trained with CLIP's own image-text contrastive loss on its own
generated corpus (:func:`orthoxfer.data.mini_corpora.corpus`: ``a`` for model A, ``b`` for
model B), for a fixed number of seeded steps. Two more models make the suite's ladder of
relatedness to A (:data:`RECIPES`): ``seed`` is trained on A's corpus from another seed,
``release`` is A with its pre-training continued on corpus ``b``.

Captions repeat within a batch (a corpus has a few thousand distinct captions), so the
contrastive targets are spread over every pair whose captions are equal instead of
being the diagonal only; otherwise the loss would push apart images that the text
cannot tell apart.

Results are cached as one safetensors state dict per model (``model_<which>``) and a
JSON of the config under ``<cache>/mini/<key>/``, where the key is a hash of everything
that produced them: the config, the data version of the corpora, this module's
training version and the versions of torch and open_clip. A changed setting gives a new key and so a rebuild;
an unreadable cached file is rebuilt too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from orthoxfer.artifacts import ArtifactError, load_artifact, save_artifact, write_json
from orthoxfer.cache import cache_root
from orthoxfer.data.bundled import DATA_VERSION, IMAGE_SIZE
from orthoxfer.data.mini_corpora import Corpus, CorpusName, corpus
from orthoxfer.data.mini_pools import random_shift
from orthoxfer.errors import UsageError
from orthoxfer.fit.checkpoint import KIND as CHECKPOINT
from orthoxfer.fit.checkpoint import checkpoint_payload, restore_checkpoint
from orthoxfer.models.shipped import read_shipped
from orthoxfer.models.small import default_head_width, small_clip
from orthoxfer.problem.tasks import FewShotTask
from orthoxfer.terminal import err, stage_progress

TRAIN_VERSION = 1  # bump whenever the training loop below changes what it produces
KIND = "mini_model"
Which = Literal["a", "b", "seed", "release"]


@dataclass(frozen=True)
class PretrainConfig:
    """Everything that decides the two pre-trained models (the cache key hashes all of it).

    ``width`` alone moves the models along the width ladder: the heads keep their width
    (``head_width``, so a wider model has more of them) and everything else stays, depth,
    corpora, images seen, batch and schedule.

    The default sees 320,000 images per model (5,000 steps of 64 over a corpus of
    163,840): about 23 minutes a model on two idle CPU cores (about 235 training images/s
    for this 0.8M-parameter image tower and its text tower), which is why the four are
    shipped (``orthoxfer mini pretrain``). docs/mini-suite.md says what the earlier,
    ten times smaller setting gave and what this one gives.
    """

    width: int = 128
    head_width: int = 32
    layers: int = 4
    patch_size: int = 4
    embed_dim: int = 64
    text_width: int = 64
    text_layers: int = 2
    steps: int = 5000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 250
    corpus_size: int = 163840
    seed_a: int = 0  # model A: init, batch order and corpus seed
    seed_b: int = 1  # model B: its own, so nothing is shared but the architecture

    @classmethod
    def micro(cls) -> PretrainConfig:
        """A few steps on a few images of a tiny model: for tests, in seconds."""
        return cls(
            width=32,
            head_width=8,
            layers=2,
            embed_dim=16,
            text_width=32,
            text_layers=1,
            steps=3,
            batch_size=16,
            warmup=1,
            corpus_size=64,
        )

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or self.corpus_size < self.batch_size:
            raise UsageError(
                f"pre-training needs steps >= 1 and 2 <= batch_size <= corpus_size "
                f"(got steps={self.steps}, batch_size={self.batch_size}, corpus_size={self.corpus_size})"
            )
        if self.head_width < 1 or self.width < self.head_width or self.width % self.head_width:
            raise UsageError(f"width {self.width} must be a positive multiple of the head width {self.head_width}")
        if IMAGE_SIZE % self.patch_size:
            raise UsageError(f"patch size {self.patch_size} does not divide the {IMAGE_SIZE} px images")

    def key(self) -> str:
        """A hash of everything that produced the models: this config, data and code versions (the cache's key)."""
        return _digest({**self._recipe(), "torch": torch.__version__.split("+")[0], "open_clip": open_clip.__version__})

    def recipe_hash(self) -> str:
        """A hash of what decides the weights but not of the library versions: the shipped models' key."""
        return _digest(self._recipe())

    def _recipe(self) -> dict:
        """What the hashes cover; ``head_width`` only where it differs from the rule every model was built with
        before it was a setting, so that the shipped models keep their hash."""
        config = dataclasses.asdict(self)
        if self.head_width == default_head_width(self.width):
            del config["head_width"]
        return {"config": config, "data_version": DATA_VERSION, "train_version": TRAIN_VERSION}


def _digest(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:20]


@dataclass(frozen=True)
class Recipe:
    """How one mini model is made: the corpus it sees, its seed (init and batch order), and whose weights it starts from."""

    corpus: CorpusName
    corpus_seed: int
    seed: int
    start: Which | None = None  # continue this model's pre-training instead of starting from the seeded init


RECIPES: dict[str, Callable[[PretrainConfig], Recipe]] = {
    "a": lambda c: Recipe("a", c.seed_a, c.seed_a),  # the source
    "b": lambda c: Recipe("b", c.seed_b, c.seed_b),  # another corpus, another seed: the paper's setting
    "seed": lambda c: Recipe("a", c.seed_a, c.seed_b),  # A's corpus (the same images), another seed: Git Re-Basin's
    "release": lambda c: Recipe("b", c.seed_b, c.seed_b, start="a"),  # A, pre-trained on for as long again on corpus b
}


_WHICH: dict[str, Which] = {name: name for name in get_args(Which)}


def check_which(name: str) -> Which:
    """``name`` as one of the mini models, or a one-line UsageError naming them."""
    if name not in _WHICH:
        raise UsageError(f"unknown mini model {name!r}; choose {', '.join(RECIPES)}")
    return _WHICH[name]


def recipe(config: PretrainConfig, which: str) -> Recipe:
    if which not in RECIPES:
        raise UsageError(f"unknown mini model {which!r}; choose {', '.join(RECIPES)}")
    return RECIPES[which](config)


def build_model(config: PretrainConfig, which: Which) -> open_clip.CLIP:
    """The untrained model ``which`` (its own seeded init) of the mini architecture."""
    return small_clip(
        seed=recipe(config, which).seed,
        width=config.width,
        head_width=config.head_width,
        layers=config.layers,
        image_size=IMAGE_SIZE,
        patch_size=config.patch_size,
        embed_dim=config.embed_dim,
        text_width=config.text_width,
        text_layers=config.text_layers,
    )


def tokenize(captions: list[str], model: open_clip.CLIP) -> torch.Tensor:
    """Captions as token ids at the model's context length (open_clip's bundled BPE; no download)."""
    return open_clip.tokenizer.SimpleTokenizer(context_length=model.context_length)(captions)


def _contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP loss whose targets are uniform over the pairs with equal captions."""
    logits = scale * image @ text.T
    same = (ids[:, None] == ids[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def pretrain(
    config: PretrainConfig,
    which: Which,
    data: Corpus | None = None,
    progress: bool = True,
    start: nn.Module | None = None,
    checkpoint: Path | None = None,
    checkpoint_every: int = 250,
) -> tuple[open_clip.CLIP, dict]:
    """Pre-train model ``which`` on its corpus for ``config.steps`` seeded steps; returns it (eval mode) and a log.

    AdamW with linear warm-up and cosine decay; weight decay only on matrices (not on
    gains, biases, embeddings' positions or the logit scale), as in CLIP. A model whose
    recipe starts from another (``release``) continues from ``start``'s weights (a
    copy; pre-trained here when not given) with a fresh optimiser and schedule.

    With ``checkpoint``, the whole training state (weights, optimiser, the generator that
    draws batches and shifts, the epoch's order) is written there every
    ``checkpoint_every`` steps and a run that finds it resumes where it stopped: the
    result is the uninterrupted run's, bit for bit, on the same machine.
    """
    made = recipe(config, which)
    seed = made.seed
    data = data if data is not None else corpus(made.corpus, config.corpus_size, made.corpus_seed)
    model = build_model(config, which)
    if made.start is not None:
        start = start if start is not None else pretrain(config, made.start, progress=progress)[0]
        model.load_state_dict(start.state_dict())
    model.train()
    first: dict[str, int] = {}
    caption_ids = torch.tensor([first.setdefault(c, len(first)) for c in data.captions])
    tokens = tokenize(data.captions, model)
    norm = FewShotTask("pretrain", data.images[:1], torch.zeros(1, dtype=torch.int64), torch.nn.Identity()).normalise
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "positional" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "positional" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )

    def lr_at(step: int) -> float:
        if step < config.warmup:
            return config.lr * (step + 1) / config.warmup
        t = (step - config.warmup) / max(1, config.steps - config.warmup)
        return config.lr * 0.5 * (1 + math.cos(math.pi * t))

    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(data.images), generator=g)
    losses: list[float] = []
    cursor, began, spent, first_step = 0, time.perf_counter(), 0.0, 0
    state = _resume(checkpoint, config, which, model, opt, g) if checkpoint is not None else None
    if state is not None:
        first_step, order, cursor, losses, spent = state
    with stage_progress(progress) as bar:
        job = bar.add_task(f"pre-training mini model {which.upper()}", total=config.steps, completed=first_step)
        for step in range(first_step, config.steps):
            if cursor + config.batch_size > len(order):
                order, cursor = torch.randperm(len(data.images), generator=g), 0
            idx = order[cursor : cursor + config.batch_size]
            cursor += config.batch_size
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            images = norm(random_shift(data.images[idx].float(), g))
            loss = _contrastive_loss(
                model.encode_image(images, normalize=True),
                model.encode_text(tokens[idx], normalize=True),
                model.logit_scale.exp(),
                caption_ids[idx],
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            bar.update(job, advance=1, status=f"loss {sum(losses[-20:]) / len(losses[-20:]):.3f}")
            if checkpoint is not None and (step + 1) % checkpoint_every == 0 and step + 1 < config.steps:
                tensors, meta = checkpoint_payload(
                    model,
                    opt,
                    step + 1,
                    {
                        "key": config.key(),
                        "which": which,
                        "cursor": cursor,
                        "losses": losses,
                        "seconds": spent + time.perf_counter() - began,
                    },
                )
                save_artifact(
                    checkpoint, CHECKPOINT, {**tensors, "rng/batches": g.get_state(), "data/order": order}, meta
                )
    log = {
        "which": which,
        "recipe": dataclasses.asdict(made),
        "seconds": round(spent + time.perf_counter() - began, 2),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "first_loss": losses[0],
    }
    return model.eval(), log


def _resume(
    path: Path, config: PretrainConfig, which: Which, model: nn.Module, opt: torch.optim.Optimizer, g: torch.Generator
) -> tuple[int, torch.Tensor, int, list[float], float] | None:
    """Restore a checkpoint of this exact pre-training in place; None (start over) if there is none or it is another's."""
    try:
        tensors, meta = load_artifact(path, CHECKPOINT)
    except ArtifactError:
        return None
    if meta.get("key") != config.key() or meta.get("which") != which:
        return None
    step, meta = restore_checkpoint(tensors, meta, model, opt)
    g.set_state(tensors["rng/batches"])
    err.print(f"mini model {which.upper()}: resuming pre-training at step {step} from {path}")
    return step, tensors["data/order"], int(meta["cursor"]), list(meta["losses"]), float(meta["seconds"])


def _paths(root: Path, config: PretrainConfig, which: Which) -> tuple[Path, Path]:
    """Model ``which``'s file and the folder's config.json."""
    record = _record(root, config)
    return record.with_name(f"model_{which}.safetensors"), record


def _record(root: Path, config: PretrainConfig) -> Path:
    """The config.json of the config's cache folder: its settings and every model's pre-training log."""
    return root / "mini" / config.key() / "config.json"


def pretrain_logs(config: PretrainConfig, cache_dir: Path | str | None = None) -> dict[str, dict]:
    """The pre-training logs (seconds, first and final loss, recipe) of every model this config has cached, by model."""
    record = _record(cache_root(cache_dir), config)
    return json.loads(record.read_text()).get("logs", {}) if record.is_file() else {}


def _load(path: Path, config: PretrainConfig, which: Which) -> open_clip.CLIP | None:
    """The cached model, or None when it is missing, unreadable or from another config."""
    try:
        tensors, meta = load_artifact(path, KIND)
    except ArtifactError:
        return None
    if meta.get("key") != config.key():
        return None
    model = build_model(config, which)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError:
        return None
    return model.eval()


def is_built(which: Which, config: PretrainConfig, cache_dir: Path | str | None = None) -> bool:
    """Whether :func:`pretrained_model` finds model ``which`` shipped or cached, so that asking for it pre-trains nothing."""
    if read_shipped(which, config.width, config.recipe_hash())[0] is not None:
        return True
    return _load(_paths(cache_root(cache_dir), config, which)[0], config, which) is not None


def pretrained_model(
    which: Which,
    config: PretrainConfig | None = None,
    cache_dir: Path | str | None = None,
    progress: bool = True,
    shipped: bool = True,
) -> open_clip.CLIP:
    """Model ``which`` (a, b, seed or release): the shipped image tower where its recipe hash matches (``shipped``),
    else from the cache when this exact config built it before, else pre-trained (resumably) and cached.

    ``release`` continues model A's pre-training, text tower included, so where it is not
    shipped it starts from a pre-trained A, never from a shipped image tower.
    """
    config = config or PretrainConfig()
    say = err.print if progress else (lambda *args, **kwargs: None)
    start = recipe(config, which).start
    tensors, why = read_shipped(which, config.width, config.recipe_hash()) if shipped else (None, None)
    if tensors is not None:
        model = build_model(config, which)
        model.load_state_dict({**model.state_dict(), **tensors}, strict=True)
        return model.eval()
    root = cache_root(cache_dir)
    path, record = _paths(root, config, which)
    model = _load(path, config, which)
    if model is not None:
        return model
    begin = pretrained_model(start, config, root, progress, shipped=False) if start is not None else None
    partial = path.with_suffix(".partial.safetensors")
    if why is not None:
        say(
            f"mini model {which.upper()}: no shipped weights ({why}); pre-training it here, so results can "
            "differ slightly between machines"
        )
    model, log = pretrain(config, which, progress=progress, start=begin, checkpoint=partial)
    meta = {"key": config.key(), "config": dataclasses.asdict(config), "data_version": DATA_VERSION, **log}
    save_artifact(path, KIND, model.state_dict(), meta)
    partial.unlink(missing_ok=True)
    write_json(
        record,
        {
            "key": config.key(),
            "config": dataclasses.asdict(config),
            "data_version": DATA_VERSION,
            "train_version": TRAIN_VERSION,
            "logs": {**pretrain_logs(config, root), which: log},
        },
    )
    say(f"mini model {which.upper()}: pre-trained in {log['seconds']:.0f} s, cached at {path}")
    return model
