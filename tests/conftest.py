import pytest
import torch

from orthoxfer.models.small import small_clip

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
