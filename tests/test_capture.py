import pytest
import torch
import torch.nn.functional as F

from orthoxfer.problem.capture import capture_inputs, cross_covariance
from orthoxfer.vectors.sites import find_sites

pytestmark = pytest.mark.numerics  # also run under a second CPU kernel path (tests/test_kernel_paths.py)


def test_out_site_input_is_what_out_proj_receives(tiny):
    sites = find_sites(tiny, "attn")
    mha = tiny.visual.transformer.resblocks[1].attn
    outputs = []
    handle = mha.register_forward_hook(lambda mod, args, out: outputs.append(out[0]))
    images = torch.randn(2, 3, 16, 16)
    with capture_inputs(tiny, sites) as seen:
        tiny.encode_image(images)
    handle.remove()
    x_out = seen["visual.transformer.resblocks.1.attn.out"]
    recomputed = F.linear(x_out, mha.out_proj.weight, mha.out_proj.bias)
    assert torch.allclose(recomputed, outputs[0].reshape(-1, 32), atol=1e-5)
    assert torch.equal(seen["visual.transformer.resblocks.1.attn.q"], seen["visual.transformer.resblocks.1.attn.v"])


def test_text_tower_causal_mask_is_respected(tiny):
    sites = find_sites(tiny, "transformer.resblocks.0.attn.out")
    mha = tiny.transformer.resblocks[0].attn
    outputs = []
    handle = mha.register_forward_hook(lambda mod, args, out: outputs.append(out[0]))
    tokens = torch.randint(0, 49408, (2, 16))
    with capture_inputs(tiny, sites) as seen:
        tiny.encode_text(tokens)
    handle.remove()
    recomputed = F.linear(seen[sites[0].name], mha.out_proj.weight, mha.out_proj.bias)
    assert torch.allclose(recomputed, outputs[0].reshape(-1, 32), atol=1e-5)


def test_cross_covariance_of_a_model_with_itself_gives_identity(tiny):
    from orthoxfer.strategies.procrustes import polar_transform

    sites = find_sites(tiny, "attn")
    cov = cross_covariance(tiny, tiny, sites, [torch.randn(8, 3, 16, 16)])
    for s in sites:
        assert torch.allclose(
            polar_transform(cov[s.name][None]).transforms[0], torch.eye(32, dtype=torch.float64), atol=1e-6
        )
