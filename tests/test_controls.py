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


def test_the_orbit_control_is_undone_by_a_similarity_transform_and_the_spectrum_control_is_not():
    """U^T M U = dW at U = Q^T for the one-sided control; the two-sided one keeps dW's singular values but not its
    eigenvalues, so no orthogonal similarity transform reaches dW from it."""
    from orthoxfer.vectors.controls import random_orthogonal

    tv = vector(0)
    seed = 4
    orbit = control_vector(tv, "orbit", seed=seed)
    spectrum = control_vector(tv, "spectrum", seed=seed)
    g = torch.Generator().manual_seed(seed)
    for s in tv.sites:  # the generator's draws, site by site, as control_vector makes them
        q = random_orthogonal(6, g, torch.float64)
        u = q.T
        m = orbit.delta(s).double()
        assert torch.allclose(u.T @ m @ u, tv.delta(s).double(), atol=1e-5)
        eig = torch.sort(torch.linalg.eigvals(tv.delta(s).double()).abs()).values
        assert torch.allclose(torch.sort(torch.linalg.eigvals(m).abs()).values, eig, atol=1e-5)
        two = spectrum.delta(s).double()
        assert torch.allclose(spectrum.singular_values(s), tv.singular_values(s), atol=1e-4)
        assert not torch.allclose(torch.sort(torch.linalg.eigvals(two).abs()).values, eig, atol=1e-2)


def test_each_method_gets_the_controls_valid_for_it():
    from orthoxfer.experiments.bench import BenchConfig
    from orthoxfer.transfers.registry import method_fits_similarity
    from orthoxfer.vectors.controls import valid_controls

    assert (
        method_fits_similarity("penalty") and method_fits_similarity("cayley") and method_fits_similarity("riemannian")
    )
    assert not any(method_fits_similarity(m) for m in ("procrustes", "transfusion", "theseus", "gradfix"))
    assert valid_controls(("norm", "orbit", "spectrum"), fits_similarity=True) == ("norm", "spectrum")
    rows = BenchConfig(
        methods=("penalty", "procrustes", "transfusion"),
        kinds=("embed",),
        controls=("orbit", "spectrum"),
        procrustes_init=False,
    ).rows()
    controls = {(r.method, r.control) for r in rows if r.control}
    assert controls == {
        ("penalty", "spectrum"),
        ("procrustes", "orbit"),
        ("procrustes", "spectrum"),
        ("transfusion", "orbit"),
        ("transfusion", "spectrum"),
    }


def test_control_seeds_are_distinct_across_seed_task_and_control():
    from orthoxfer.vectors.controls import control_seed, control_vectors

    names = [f"t{i}" for i in range(8)]
    seeds = {control_seed(s, n, k) for s in range(5) for n in names for k in ("norm", "spectrum", "orbit")}
    assert len(seeds) == 5 * 8 * 3
    g = torch.Generator().manual_seed(0)
    vectors = {n: TaskVector({"s": torch.randn(4, 4, generator=g)}) for n in ("a", "b")}
    same = TaskVector({"s": vectors["b"].delta("s").clone()})
    # task b at seed 0 and task a at seed 1 used to share a stream (seed + index); now their noise differs
    first = control_vectors(vectors, "norm", seed=0)["b"].delta("s") / vectors["b"].delta("s").norm()
    second = control_vectors({"a": same, "b": vectors["a"]}, "norm", seed=1)["a"].delta("s") / same.delta("s").norm()
    assert not torch.allclose(first, second)
