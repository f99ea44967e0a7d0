import pytest
import torch

from orthoxfer.vectors.controls import control_vector
from orthoxfer.vectors.taskvector import TaskVector


def vector(seed):
    g = torch.Generator().manual_seed(seed)
    return TaskVector({f"s{i}": torch.randn(6, 6, generator=g) @ torch.diag(torch.arange(6.0)) for i in range(3)})


def test_norm_control_matches_each_site_norm_and_is_not_the_vector():
    tv = vector(0)
    c = control_vector(tv, "norm", seed=1)
    for s in tv.sites:
        assert abs(c.norms()[s] - tv.norms()[s]) < 1e-4
        assert abs(torch.nn.functional.cosine_similarity(c.delta(s).flatten(), tv.delta(s).flatten(), 0)) < 0.9
    assert c.meta["control"] == "norm"


def test_spectrum_control_keeps_singular_values():
    tv = vector(0)
    c = control_vector(tv, "spectrum", seed=2)
    for s in tv.sites:
        assert torch.allclose(c.singular_values(s), tv.singular_values(s), atol=1e-4)
        assert not torch.allclose(c.delta(s), tv.delta(s), atol=1e-2)
    assert c.ranks() == tv.ranks()


def test_spectrum_control_keeps_the_singular_values_of_a_rectangular_site():
    g = torch.Generator().manual_seed(5)
    tv = TaskVector({"mlp.c_fc": torch.randn(24, 6, generator=g), "mlp.c_proj": torch.randn(6, 24, generator=g)})
    c = control_vector(tv, "spectrum", seed=3)
    for s in tv.sites:
        assert c.delta(s).shape == tv.delta(s).shape
        assert torch.allclose(c.singular_values(s), tv.singular_values(s), atol=1e-4)
        assert not torch.allclose(c.delta(s), tv.delta(s), atol=1e-2)


def test_other_task_control_is_rescaled_other_vector():
    tv, other = vector(0), vector(5)
    c = control_vector(tv, "other-task", other=other)
    for s in tv.sites:
        assert abs(c.norms()[s] - tv.norms()[s]) < 1e-4
        assert torch.allclose(c.delta(s) / c.delta(s).norm(), other.delta(s) / other.delta(s).norm(), atol=1e-6)
    with pytest.raises(ValueError, match="needs another task"):
        control_vector(tv, "other-task")


def test_control_vectors_are_seeded_per_task_and_other_task_borrows_the_next():
    from orthoxfer.vectors.controls import control_vectors

    g = torch.Generator().manual_seed(0)
    vectors = {n: TaskVector({"s": torch.randn(4, 4, generator=g)}) for n in ("a", "b", "c")}
    norm = control_vectors(vectors, "norm", seed=5)
    assert not torch.equal(norm["a"].delta("s"), norm["b"].delta("s"))
    assert torch.equal(norm["b"].delta("s"), control_vectors(vectors, "norm", seed=5)["b"].delta("s"))
    other = control_vectors(vectors, "other-task")
    b = vectors["b"].delta("s")
    assert torch.allclose(other["a"].delta("s"), b * vectors["a"].delta("s").norm() / b.norm())
