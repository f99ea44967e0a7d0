"""Model loading: activations per tag, caches, local files, random weights and the offline error."""

import json
from pathlib import Path

import pytest
import torch
from open_clip import pretrained as oc_pretrained
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file
from tiny import TINY_CONFIG as TINY

from orthoxfer.errors import OrthoxferError, UsageError
from orthoxfer.models import hub
from orthoxfer.models.loading import is_torchscript, load_model, quick_gelu_for, register_arch, tag_of_file


@pytest.fixture(scope="module", autouse=True)
def tiny_archs():
    register_arch("orthoxfer-test-tiny", TINY)  # GELU config, like ViT-B-32
    register_arch("orthoxfer-test-tiny-quickgelu", {**TINY, "quick_gelu": True})  # like ViT-B-32-quickgelu


def _uses_quick_gelu(model: torch.nn.Module) -> bool:
    return isinstance(model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_activation_of_known_tags():
    for tag in ("openai", "laion400m_e31", "laion400m_e32", "metaclip_400m"):
        assert quick_gelu_for("ViT-B-32", tag), tag
    for tag in ("laion2b_s34b_b79k", "laion2b_e16", "datacomp_xl_s13b_b90k"):
        assert not quick_gelu_for("ViT-B-32", tag), tag
    assert quick_gelu_for("ViT-B-16", "openai") and not quick_gelu_for("ViT-B-16", "laion2b_s34b_b88k")
    # no tag: the architecture config decides
    assert not quick_gelu_for("ViT-B-32", None) and quick_gelu_for("ViT-B-32-quickgelu", None)


def test_random_weights_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = load_model("orthoxfer-test-tiny:none")
    assert torch.equal(torch.rand(3), expected_next)
    b = load_model("orthoxfer-test-tiny:none")
    assert _same_weights(a.model, b.model) and not a.model.training
    assert a.image_size == (16, 16) and a.tag == "none" and a.checkpoint is None and not a.quick_gelu
    assert a.tokenizer(["a photo of a cat"]).shape == (1, 16)
    assert a.preprocess.transforms[-1].mean == a.mean
    assert load_model("orthoxfer-test-tiny-quickgelu:none").quick_gelu
    assert _uses_quick_gelu(load_model("orthoxfer-test-tiny-quickgelu:none").model)


def test_tag_checkpoint_runs_with_the_activation_it_was_trained_with(tmp_path, monkeypatch):
    """The reference's bug: laion400m_e32 loaded into the GELU config. Here the tag decides, both ways."""
    source = load_model("orthoxfer-test-tiny:none").model
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    torch.save(source.state_dict(), tmp_path / "tiny-qg.pt")
    torch.save(source.state_dict(), tmp_path / "tiny-gelu.pt")
    tags = {
        "qg": {**oc_pretrained._pcfg(url="https://example.invalid/tiny-qg.pt", quick_gelu=True), "mean": (0.5,) * 3},
        "gelu": oc_pretrained._pcfg(url="https://example.invalid/tiny-gelu.pt"),
    }
    monkeypatch.setitem(oc_pretrained._PRETRAINED, "orthoxfer-test-tiny", tags)
    monkeypatch.setitem(oc_pretrained._PRETRAINED, "orthoxfer-test-tiny-quickgelu", tags)

    qg = load_model("orthoxfer-test-tiny:qg", cache_dir=tmp_path)  # GELU config, QuickGELU weights
    assert qg.quick_gelu and _uses_quick_gelu(qg.model) and _same_weights(qg.model, source)
    assert qg.checkpoint == tmp_path / "tiny-qg.pt" and qg.spec == "orthoxfer-test-tiny:qg"
    assert qg.mean == (0.5, 0.5, 0.5)  # the tag's normalisation too
    gelu = load_model("orthoxfer-test-tiny-quickgelu:gelu", cache_dir=tmp_path)  # QuickGELU config, GELU weights
    assert not gelu.quick_gelu and not _uses_quick_gelu(gelu.model)
    # a local copy of a tag's download keeps the tag's activation
    assert load_model(f"orthoxfer-test-tiny:{tmp_path / 'tiny-qg.pt'}").quick_gelu


def test_local_checkpoint_file(tmp_path):
    source = load_model("orthoxfer-test-tiny:none").model
    with torch.no_grad():
        source.logit_scale.fill_(2.0)
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = load_model(f"orthoxfer-test-tiny:{path}")
    assert _same_weights(loaded.model, source) and loaded.checkpoint == path and loaded.tag == str(path)
    identity = loaded.identity
    path.write_bytes(path.read_bytes() + b" ")  # same name, new content: a different identity
    assert loaded.identity != identity
    path.write_bytes(b"garbage")
    with pytest.raises(OrthoxferError, match=r"could not build orthoxfer-test-tiny:.*weights.safetensors"):
        load_model(f"orthoxfer-test-tiny:{path}")


def test_file_names_of_known_downloads_map_to_their_tags(tmp_path):
    assert tag_of_file("ViT-B-32", tmp_path / "vit_b_32-quickgelu-laion400m_e32-46683a32.pt") == "laion400m_e32"
    hf_repo = tmp_path / "models--timm--vit_base_patch32_clip_224.openai"
    hf_file = hf_repo / "snapshots" / "abc" / "open_clip_model.safetensors"
    assert tag_of_file("ViT-B-32", hf_file) == "openai"
    assert tag_of_file("ViT-B-32", tmp_path / "my_finetune.pt") is None


@pytest.mark.filterwarnings("ignore:`torch.jit.save` is deprecated")
def test_torchscript_archives_are_recognised(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "jit.pt"))
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "plain.pt")
    assert is_torchscript(tmp_path / "jit.pt") and not is_torchscript(tmp_path / "plain.pt")


def test_offline_error_names_checkpoint_file_and_folder(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the network must not be tried")

    monkeypatch.setattr(oc_pretrained, "download_pretrained_from_url", no_network)
    monkeypatch.setattr(oc_pretrained, "download_pretrained_from_hf", no_network)
    monkeypatch.setattr(hub, "reachable", lambda host, timeout=3.0: False)  # a machine without network
    with pytest.raises(OrthoxferError) as err:
        load_model("ViT-B-32:laion400m_e32", cache_dir=tmp_path)
    message = str(err.value)
    assert "ViT-B-32:laion400m_e32" in message and "huggingface.co is unreachable" in message
    assert "put vit_b_32-quickgelu-laion400m_e32-46683a32.pt (from https://" in message and str(tmp_path) in message
    assert "timm/vit_base_patch32_clip_224.laion400m_e32/open_clip_pytorch_model.bin" in message
    assert "ViT-B-32-quickgelu:/path/to/vit_b_32-quickgelu-laion400m_e32-46683a32.pt" in message
    assert "\n" not in message

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OrthoxferError, match=r"laion2b_s34b_b79k .*HF_HUB_OFFLINE is set.*laion/CLIP-ViT-B-32-laion2B"):
        load_model("ViT-B-32:laion2b_s34b_b79k", cache_dir=tmp_path)


def test_a_tag_without_any_source_is_one_line_not_a_type_error(tmp_path, monkeypatch):
    # the message read the Hugging Face file name of a tag that has no hf_hub and no url either: None[1]
    real = oc_pretrained.get_pretrained_cfg
    monkeypatch.setattr(
        oc_pretrained, "get_pretrained_cfg", lambda arch, tag: {} if tag == "laion400m_e32" else real(arch, tag)
    )
    with pytest.raises(OrthoxferError, match=r"could not be downloaded \(no source\).*:/path/to/weights.pt"):
        load_model("ViT-B-32:laion400m_e32", cache_dir=tmp_path)


def test_usage_errors_list_the_choices(tmp_path):
    with pytest.raises(UsageError, match="did you mean ViT-B-32") as err:
        load_model("ViT-B32:openai")
    assert "ViT-L-14" not in str(err.value)  # the closest few, not all of open_clip's configs
    with pytest.raises(UsageError, match="its tags are: openai, laion400m_e31, laion400m_e32"):
        load_model("ViT-B-32:laion5b")
    with pytest.raises(UsageError, match="must be ARCH:TAG"):
        load_model("ViT-B-32")
    with pytest.raises(UsageError, match="does not exist"):
        load_model(f"ViT-B-32:{tmp_path / 'missing.pt'}")


def hub_snapshot(cache: Path, repo: str, revision: str = "abc123") -> Path:
    """The folder a Hugging Face cache keeps one revision of ``repo`` in (fill it with the repository's files)."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    (folder / "snapshots" / revision).mkdir(parents=True)
    return folder / "snapshots" / revision


def test_hf_hub_models_load_from_the_cache_with_their_own_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = load_model("orthoxfer-test-tiny:none").model
    with torch.no_grad():
        source.logit_scale.fill_(3.0)
    snapshot = hub_snapshot(tmp_path, "owner/tiny")
    config = {"model_cfg": {**TINY, "quick_gelu": True}, "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}}
    (snapshot / "open_clip_config.json").write_text(json.dumps(config))
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()}, str(snapshot / "open_clip_model.safetensors")
    )

    loaded = load_model("hf-hub:owner/tiny", cache_dir=tmp_path)
    assert _same_weights(loaded.model, source) and loaded.spec == "hf-hub:owner/tiny"
    assert loaded.quick_gelu and _uses_quick_gelu(loaded.model) and loaded.mean == (0.5, 0.5, 0.5)
    assert loaded.checkpoint == snapshot / "open_clip_model.safetensors" and loaded.identity.endswith(":abc123")
    assert loaded.tokenizer(["a photo"]).shape == (1, 16)


def test_hf_hub_models_missing_offline_name_the_repo_and_file_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OrthoxferError) as err:
        load_model("hf-hub:owner/missing", cache_dir=tmp_path)
    message = str(err.value)
    assert message.startswith(f"owner/missing/open_clip_config.json is not in the Hugging Face cache {tmp_path}")
    assert (
        "HF_HUB_OFFLINE is set" in message
        and f"hf download owner/missing open_clip_config.json --cache-dir {tmp_path}" in message
    )
    assert "\n" not in message
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub, "reachable", lambda host, timeout=3.0: False)
    with pytest.raises(OrthoxferError, match="huggingface.co is unreachable"):
        load_model("hf-hub:owner/missing", cache_dir=tmp_path)
    for bad in ("hf-hub:owner", "hf-hub:owner/repo/weights.pt"):
        with pytest.raises(UsageError, match="hf-hub:owner"):
            load_model(bad)
