"""The one convention for running a caller's model: its mode comes back, its device does not."""

import pytest
import torch
from torch import nn

from orthoxfer.models.modes import evaluating


class ModeSpy(nn.Module):
    """A module (a head, in the evaluate and gradfix tests) that records the mode it is called in."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head, self.modes = head, []

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.head(features)


def _model(training: bool) -> nn.Module:
    return nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5)).train(training)


def test_each_model_is_in_eval_mode_inside_and_in_its_own_mode_after():
    a, b = _model(True), _model(False)
    with evaluating(a, b):
        assert not a.training and not b.training
        assert not a[1].training  # submodules too: dropout is off
    assert a.training and a[1].training and not b.training


def test_the_mode_comes_back_when_the_block_fails():
    a = _model(True)
    with pytest.raises(RuntimeError, match="boom"), evaluating(a):
        raise RuntimeError("boom")
    assert a.training


def test_a_device_moves_the_model_in_place_and_it_stays_there():
    a = _model(True)  # the meta device stands in for a GPU: the same nn.Module.to path
    with evaluating(a, device="meta"):
        assert {p.device.type for p in a.parameters()} == {"meta"}
    assert {p.device.type for p in a.parameters()} == {"meta"} and a.training
