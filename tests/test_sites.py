import open_clip
import pytest
import torch
from torch import nn

from orthoxfer.vectors.sites import SiteError, find_sites, param_overrides, read_site, require_square, write_site


def test_vit_b32_attn_gives_48_square_sites():
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    sites = find_sites(model, "attn")
    assert len(sites) == 48
    assert all(s.shape == (768, 768) for s in sites)
    assert all(tuple(read_site(model, s).shape) == (768, 768) for s in sites)
    names = [s.name for s in sites]
    assert "visual.transformer.resblocks.3.attn.q" in names
    assert names[:4] == [f"visual.transformer.resblocks.0.attn.{p}" for p in ("q", "k", "v", "out")]


def test_selectors(tiny):
    assert len(find_sites(tiny, "attn")) == 8
    assert [s.part for s in find_sites(tiny, "attn-qkv")] == ["q", "k", "v"] * 2
    assert [s.part for s in find_sites(tiny, "attn-out")] == ["out", "out"]
    globbed = find_sites(tiny, "visual.transformer.resblocks.1.attn.*")
    assert [s.name.rsplit(".", 1)[1] for s in globbed] == ["q", "k", "v", "out"]
    # a glob reaches the text tower too, which `attn` (image tower) does not
    assert find_sites(tiny, "transformer.resblocks.0.attn.q")[0].param == "transformer.resblocks.0.attn.in_proj_weight"
    assert len(find_sites(tiny, "attn-out,visual.transformer.resblocks.0.attn.q")) == 3


def test_unknown_selector_is_a_clear_error(tiny):
    with pytest.raises(SiteError, match="matches no site"):
        find_sites(tiny, "ffn")


def test_mlp_selector_gives_the_rectangular_sites_that_no_other_selector_picks(tiny):
    mlp = find_sites(tiny, "mlp")
    assert [(s.name.rsplit(".", 2)[1], s.shape) for s in mlp] == [("c_fc", (128, 32)), ("c_proj", (32, 128))] * 2
    assert not any(s.square for s in mlp) and all(s.square for s in find_sites(tiny, "all"))
    assert tuple(read_site(tiny, mlp[1]).shape) == (32, 128)
    assert len(find_sites(tiny, "attn,mlp")) == 12
    with pytest.raises(SiteError, match="procrustes carries square sites only, and site .*c_fc.weight' is 128 x 32"):
        require_square({s.name: s.shape for s in mlp}, "procrustes")


def test_square_linear_layers_of_plain_modules():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 3), nn.Linear(3, 3))
    assert [s.name for s in find_sites(model, "linear")] == ["0.weight", "3.weight"]


def test_qkv_views_write_through_exactly_their_rows(tiny):
    site_k = find_sites(tiny, "visual.transformer.resblocks.0.attn.k")[0]
    param = tiny.get_parameter(site_k.param)
    before = param.detach().clone()
    write_site(tiny, site_k, torch.full((32, 32), 7.0))
    assert torch.equal(param[32:64], torch.full((32, 32), 7.0))
    assert torch.equal(param[:32], before[:32]) and torch.equal(param[64:], before[64:])
    view = read_site(tiny, site_k)
    assert view.data_ptr() == param[32:64].data_ptr()


def test_param_overrides_tile_rows(tiny):
    sites = find_sites(tiny, "visual.transformer.resblocks.0.attn.k,visual.transformer.resblocks.0.attn.out")
    deltas = [torch.ones(32, 32), 2 * torch.ones(32, 32)]
    out = param_overrides(tiny, sites, deltas)
    w_in = tiny.get_parameter(sites[0].param)
    expect = w_in.detach().clone()
    expect[32:64] += 1
    assert torch.equal(out[sites[0].param], expect)
    assert torch.equal(out[sites[1].param], tiny.get_parameter(sites[1].param) + 2)
