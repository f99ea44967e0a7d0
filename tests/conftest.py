import pytest
import torch

from orthoxfer.models.loading import register_arch
from orthoxfer.models.small import small_clip, small_config

torch.set_num_threads(2)


@pytest.fixture
def tiny():
    """A tiny open_clip CLIP (real classes, random weights)."""
    return small_clip(seed=0)


@pytest.fixture
def tiny_pair():
    """A base model and a 'fine-tuned' copy that differs on every parameter."""
    base = small_clip(seed=0)
    tuned = small_clip(seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    return base, tuned


TINY_ARCH = "orthoxfer-test-tiny"
TINY_CONFIG = small_config(layers=1)


@pytest.fixture(scope="session")
def tiny_arch():
    """An open_clip arch name for a tiny config, loadable as `orthoxfer-test-tiny:none` or `:/path`."""
    register_arch(TINY_ARCH, TINY_CONFIG)
    return TINY_ARCH
