"""Open_clip models named ``ARCH:TAG``, ``ARCH:/path/to/checkpoint``, ``ARCH:none``, ``hf-hub:owner/repo``, or a
transformers CLIP folder.

Two things are decided here, once. Each checkpoint runs with the activation it was
trained with: open_clip's tag table says which tags used QuickGELU (``openai``,
``laion400m_e3x``, ...) and the architecture's default config does not (the paper's
reference code runs ``laion400m_e32`` with GELU), so the activation is always set
explicitly from the tag. And a missing checkpoint never turns into a minute-long
hang or an opaque traceback: the caches
(``--cache-dir``, open_clip's ``~/.cache/clip``, the Hugging Face cache) are read
first without any network access, the network is only tried when its host answers,
and a failure names the checkpoint, the file expected and the folder to put it in.
``HF_HUB_OFFLINE=1`` keeps every load off the network. An ``hf-hub:owner/repo`` model
(open_clip's name for a repository holding ``open_clip_config.json`` and weights)
follows the same rules through :mod:`orthoxfer.models.hub`. A transformers CLIP (a folder
with ``config.json``, or a repository holding one and no ``open_clip_config.json``) is
converted on load into the open_clip architecture its config implies
(:mod:`orthoxfer.models.hf_clip`), so every command takes FusionBench's checkpoints.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import open_clip
import torch
from open_clip import pretrained as oc_pretrained
from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME
from torch import nn

from orthoxfer.errors import OrthoxferError, UsageError
from orthoxfer.models import hf_build, hf_clip, hub
from orthoxfer.models.archs import register_arch as register_arch  # its public name here too

RANDOM = "none"
HUB = "hf-hub"  # the arch of an hf-hub:owner/repo model; its tag is the repository
TRANSFORMERS = "transformers"  # the arch of a transformers CLIP folder; its tag is the folder
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".npz")
# a tag's preprocessing settings -> the create_model_and_transforms arguments that force them
_PREPROCESS_KEYS = {
    "mean": "image_mean",
    "std": "image_std",
    "interpolation": "image_interpolation",
    "resize_mode": "image_resize_mode",
}


@dataclass
class LoadedModel:
    """A model ready for evaluation plus everything needed to feed it images and text."""

    model: nn.Module  # in eval mode, on the requested device
    preprocess: (
        Callable[[Any], torch.Tensor] | None
    )  # PIL image -> normalised float tensor (open_clip's eval transform); None: a model that takes tensors only (mini)
    tokenizer: object  # list[str] -> token ids
    arch: str
    tag: str  # a pretrained tag, "none", the checkpoint path, or (arch hf-hub) the repository
    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    quick_gelu: bool
    checkpoint: Path | None = None  # the weights file actually read
    open_clip_arch: str | None = None  # a transformers checkpoint's open_clip architecture (the arch is "transformers")
    text_tower: bool = True  # False for a vision-only transformers checkpoint: its text tower is random, no heads

    @property
    def spec(self) -> str:
        return self.tag if self.arch == TRANSFORMERS else f"{self.arch}:{self.tag}"

    @property
    def identity(self) -> str:
        """What distinguishes these weights from any others, for caches keyed by model.

        A local file can be overwritten under the same name, so its size and mtime are
        part of it, and a repository changes with its revisions (the snapshot folder's
        name); tags and ``none`` (seeded) always mean the same weights.
        """
        base = f"{self.spec}:quick_gelu={self.quick_gelu}"
        if self.arch == HUB and self.checkpoint is not None:
            return f"{base}:{self.checkpoint.parent.name}"
        if self.checkpoint is None or (self.tag != str(self.checkpoint) and self.arch != TRANSFORMERS):
            return base
        stat = self.checkpoint.stat()
        return f"{base}:{stat.st_size}:{stat.st_mtime_ns}"


def parse_spec(spec: str) -> tuple[str, str]:
    """``"ARCH:TAG"`` -> ``(arch, tag)``, the arch checked against open_clip's configs; ``hf-hub:owner/repo`` -> ``("hf-hub", repo)``;
    a transformers folder -> ``("transformers", folder)``."""
    folder = Path(spec).expanduser()
    if hf_clip.is_transformers_dir(folder):
        return TRANSFORMERS, str(folder)
    if (folder / hf_clip.ADAPTER_CONFIG).is_file():
        raise UsageError(
            f"{spec} is a PEFT adapter, not a model: make a LoRA task vector of it with `orthoxfer vector "
            f"from-checkpoints --base BASE --finetuned {spec}` and add it to BASE with --task-vector"
        )
    if spec.startswith(hub.PREFIX):
        repo, path = hub.parse(spec)
        if path is not None:
            raise UsageError(
                f"model {spec!r}: a model is a whole repository, hf-hub:{repo}; for one weights file "
                f"in it give ARCH:/path/to/the/downloaded/file"
            )
        return HUB, repo
    arch, sep, source = spec.partition(":")
    if not sep or not arch or not source:
        raise UsageError(
            f"model {spec!r} must be ARCH:TAG, ARCH:/path/to/checkpoint, ARCH:none, hf-hub:owner/repo or a transformers "
            "CLIP folder holding config.json (e.g. ViT-B-32:openai)"
        )
    known = open_clip.list_models()
    if arch not in known:
        close = difflib.get_close_matches(arch, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "no known name is close."
        raise UsageError(f"unknown architecture {arch!r}; {hint} (open_clip.list_models() lists all {len(known)})")
    return arch, source


def _arch_quick_gelu(arch: str) -> bool:
    return bool((open_clip.get_model_config(arch) or {}).get("quick_gelu", False))


def quick_gelu_for(arch: str, tag: str | None) -> bool:
    """The activation a checkpoint was trained with: the tag's if it is a known tag, else the arch config's."""
    if tag and oc_pretrained.is_pretrained_cfg(arch, tag):
        return bool(oc_pretrained.get_pretrained_cfg(arch, tag).get("quick_gelu", False))
    return _arch_quick_gelu(arch)


def tag_of_file(arch: str, path: Path) -> str | None:
    """The pretrained tag a local file is a download of, judged by its open_clip or Hugging Face name.

    This lets ``ARCH:/path/to/vit_b_32-quickgelu-laion400m_e32-46683a32.pt`` (or a file
    inside the Hugging Face cache) run with its tag's activation and normalisation.
    """
    parts = set(path.resolve().parts)
    for tag in oc_pretrained.list_pretrained_tags_by_model(arch):
        cfg = oc_pretrained.get_pretrained_cfg(arch, tag)
        if cfg.get("url") and os.path.basename(cfg["url"]) == path.name:
            return tag
        repo = os.path.split(cfg.get("hf_hub", ""))[0]
        if repo and "models--" + repo.replace("/", "--") in parts:
            return tag
    return None


def file_arch(arch: str, quick_gelu: bool) -> str:
    """The architecture name under which ``ARCH:/path`` (or open_clip) runs a weights file with this activation."""
    if quick_gelu == _arch_quick_gelu(arch):
        return arch
    other = f"{arch}-quickgelu" if quick_gelu else arch.removesuffix("-quickgelu")
    return other if other in open_clip.list_models() else arch


def is_torchscript(path: Path) -> bool:
    """OpenAI's original ``.pt`` files are TorchScript archives, which ``torch.load(weights_only=True)`` refuses."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.endswith("constants.pkl") for name in z.namelist())


def _hf_parts(cfg: dict) -> tuple[str, list[str]] | None:
    """Repository id and candidate file names (safetensors first) of a tag's Hugging Face weights."""
    if not cfg.get("hf_hub"):
        return None
    repo, filename = os.path.split(cfg["hf_hub"])
    if not filename or filename == HF_WEIGHTS_NAME:
        return repo, [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    stem, suffix = os.path.splitext(filename)
    return repo, ([stem + ".safetensors"] if suffix in (".bin", ".pth") else []) + [filename]


def _url_cache_dir(cache_dir: Path | None) -> Path:
    return cache_dir if cache_dir is not None else Path("~/.cache/clip").expanduser()


def _resolve_tag(arch: str, tag: str, cache_dir: Path | None) -> Path:
    """The local weights file of a pretrained tag: from a cache, else downloaded, else one actionable error."""
    cfg = oc_pretrained.get_pretrained_cfg(arch, tag)
    hf, url = _hf_parts(cfg), cfg.get("url", "")
    cache = str(cache_dir) if cache_dir is not None else None
    reasons: list[str] = []
    if hf and oc_pretrained.has_hf_hub():
        for filename in hf[1]:  # any miss means "not cached"; the download below reports what failed
            if (path := hub.cached_file(hf[0], filename, cache_dir)) is not None:
                return path
    url_file = _url_cache_dir(cache_dir) / os.path.basename(url) if url else None
    if url_file is not None and url_file.is_file():
        try:  # verifies open_clip's checksum; a partial download is fetched again
            return Path(oc_pretrained.download_pretrained_from_url(url, cache_dir=cache))
        except Exception as exc:  # noqa: BLE001
            reasons.append(f"cached {url_file.name} failed its checksum and could not be fetched again: {exc}")
    if hub.offline():
        reasons.append("HF_HUB_OFFLINE is set")
    else:
        if hf and oc_pretrained.has_hf_hub():
            if hub.reachable(hub.HOST):
                try:
                    return Path(oc_pretrained.download_pretrained_from_hf(hf[0], hf[1][-1], cache_dir=cache))
                except Exception as exc:  # noqa: BLE001
                    reasons.append(f"Hugging Face: {str(exc).splitlines()[0]}")
            else:
                reasons.append("huggingface.co is unreachable")
        if url:
            host = urlparse(url).hostname or ""
            if hub.reachable(host):
                try:
                    return Path(oc_pretrained.download_pretrained_from_url(url, cache_dir=cache))
                except Exception as exc:  # noqa: BLE001
                    reasons.append(f"{host}: {str(exc).splitlines()[0]}")
            else:
                reasons.append(f"{host} is unreachable")
    raise OrthoxferError(_missing_message(arch, tag, cfg, cache_dir, "; ".join(reasons) or "no source"))


def _missing_message(arch: str, tag: str, cfg: dict, cache_dir: Path | None, why: str) -> str:
    hf, url = _hf_parts(cfg), cfg.get("url", "")
    places = []
    if url:
        places.append(f"put {os.path.basename(url)} (from {url}) in {_url_cache_dir(cache_dir)}")
    if hf:
        places.append(
            f"{'or ' if places else ''}put {hf[0]}/{hf[1][-1]} in the Hugging Face cache {hub.cache_folder(cache_dir)} "
            f"({hub.fetch_command(hf[0], hf[1][-1], cache_dir)})"
        )
    name = os.path.basename(url) if url else hf[1][-1] if hf else "weights.pt"  # a tag may name neither source
    return (
        f"checkpoint {arch}:{tag} is not cached and could not be downloaded ({why}): "
        f"{', '.join(places)}; or use the model spec {file_arch(arch, bool(cfg.get('quick_gelu', False)))}:/path/to/{name}"
    )


def _check_tag(arch: str, tag: str) -> None:
    if oc_pretrained.is_pretrained_cfg(arch, tag):
        return
    tags = oc_pretrained.list_pretrained_tags_by_model(arch)
    choices = f"its tags are: {', '.join(tags)}" if tags else "it has no pretrained tags"
    raise UsageError(
        f"{arch!r} has no pretrained tag {tag!r}; {choices} (or give ARCH:/path/to/checkpoint or ARCH:none)"
    )


def _looks_like_path(source: str) -> bool:
    return (
        os.sep in source
        or "/" in source
        or source.startswith(("~", "."))
        or source.endswith(CHECKPOINT_SUFFIXES)
        or Path(source).exists()
    )


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence open_clip's log lines and torch's TorchScript warning; orthoxfer reports what matters itself."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            yield
    finally:
        logging.disable(previous)


def load_model(
    spec: str, cache_dir: Path | str | None = None, device: str | torch.device = "cpu", force_gelu: bool = False
) -> LoadedModel:
    """Build ``ARCH:TAG`` / ``ARCH:/path`` / ``ARCH:none`` / ``hf-hub:owner/repo`` with the activation and
    preprocessing its weights need.

    ``force_gelu`` reproduces the paper's released code, which built ``laion400m_e32`` (trained with QuickGELU)
    with GELU: every MLP then computes another function than it was trained for. Only for comparing with
    its published numbers (``bench --reference-gelu``)."""
    arch, source = parse_spec(spec)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    checkpoint: Path | None = None
    name, pp_kwargs = arch, {}
    if arch == TRANSFORMERS:
        return _load_transformers(spec, hf_clip.local_checkpoint(Path(source)), device)
    if arch == HUB:  # the repository's own config says architecture, activation and preprocessing
        config = hub.hub_file(source, [HF_CONFIG_NAME, hf_clip.CONFIG], cache)
        if config.name == hf_clip.CONFIG:  # a transformers repository (FusionBench's), not an open_clip one
            return _load_transformers(spec, hf_clip.hub_checkpoint(source, config, cache), device)
        checkpoint = hub.hub_file(source, [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME], cache)
        name, tag = f"local-dir:{config.parent}", source
        quick_gelu = bool(json.loads(config.read_text()).get("model_cfg", {}).get("quick_gelu", False))
    elif source.lower() == RANDOM:
        tag, pp_tag = RANDOM, None
    elif _looks_like_path(source):
        checkpoint = Path(source).expanduser()
        if hf_clip.is_transformers_dir(checkpoint):
            raise UsageError(
                f"{checkpoint} is a transformers folder: name it alone, without {arch}: (its config decides)"
            )
        if not checkpoint.is_file():
            raise UsageError(f"checkpoint file {checkpoint} does not exist (model {spec})")
        tag, pp_tag = str(checkpoint), tag_of_file(arch, checkpoint)
    else:
        _check_tag(arch, source)
        tag = pp_tag = source.lower().replace("-", "_")
        checkpoint = _resolve_tag(arch, tag, cache)
    if arch != HUB:
        quick_gelu = quick_gelu_for(arch, pp_tag)
        pp_cfg = oc_pretrained.get_pretrained_cfg(arch, pp_tag) if pp_tag else {}
        pp_kwargs = {kw: pp_cfg[key] for key, kw in _PREPROCESS_KEYS.items() if key in pp_cfg}
    quick_gelu = quick_gelu and not force_gelu
    try:
        with torch.random.fork_rng(devices=[]), _quiet():
            torch.manual_seed(0)  # ARCH:none is the same random model on every run, so its heads can be cached
            model, _, preprocess = open_clip.create_model_and_transforms(
                name,
                pretrained=str(checkpoint) if checkpoint is not None and arch != HUB else None,
                load_weights=arch != HUB,  # a repository's weights: exactly the file resolved above, below
                weights_only=checkpoint is None or not is_torchscript(checkpoint),
                cache_dir=str(cache) if cache is not None else None,
                quick_gelu=quick_gelu,
                **pp_kwargs,
            )
            if arch == HUB:
                open_clip.load_checkpoint(model, str(checkpoint))
        tokenizer = open_clip.get_tokenizer(name, cache_dir=str(cache) if cache is not None else None)
    except Exception as exc:  # noqa: BLE001 - open_clip and torch raise many types for a bad file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = f"weights {checkpoint}" if checkpoint is not None else "random weights"
        raise OrthoxferError(f"could not build {spec} from {where}: {reason}") from None
    visual_cfg = model.visual.preprocess_cfg
    size = model.visual.image_size
    return LoadedModel(
        model=model.to(device).eval(),
        preprocess=preprocess,
        tokenizer=tokenizer,
        arch=arch,
        tag=tag,
        image_size=(size, size) if isinstance(size, int) else tuple(size),
        mean=tuple(visual_cfg["mean"]),
        std=tuple(visual_cfg["std"]),
        quick_gelu=quick_gelu,
        checkpoint=checkpoint,
    )


def _load_transformers(spec: str, ckpt: hf_clip.HFCheckpoint, device: str | torch.device) -> LoadedModel:
    """A transformers CLIP as the open_clip model its config implies (:mod:`orthoxfer.models.hf_build`)."""
    arch, tag = (HUB, spec.removeprefix(hub.PREFIX)) if spec.startswith(hub.PREFIX) else (TRANSFORMERS, ckpt.where)
    built = hf_build.build(ckpt, spec)
    visual: Any = built.model.visual
    size = visual.image_size
    return LoadedModel(
        model=built.model.to(device).eval(),
        preprocess=built.preprocess,
        tokenizer=built.tokenizer,
        arch=arch,
        tag=tag,
        image_size=(size, size) if isinstance(size, int) else tuple(size),
        mean=tuple(visual.preprocess_cfg["mean"]),
        std=tuple(visual.preprocess_cfg["std"]),
        quick_gelu=ckpt.config.quick_gelu,
        checkpoint=ckpt.weights[0],
        open_clip_arch=built.arch,
        text_tower=ckpt.config.text is not None,
    )
