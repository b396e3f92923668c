"""Rematerialisation: the bound's gradient over every t (``"all"``, ``"trajectory"``) takes memory that does
not grow with T, and the chunked, checkpointed map computes what a plain vmap computes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dpm_ppl as dpm
from dpm_ppl import DiffusionELBO, TrainConfig
from dpm_ppl._remat import map_over_time
from dpm_ppl.infer import make_svi
from dpm_ppl.nn import MLPNet


def _loss_and_params(T: int, estimator: str):
    diffusion = dpm.GaussianDiffusion(
        (2,), dpm.GeometricSchedule(T, 1e-3, 0.5), network=MLPNet(2, T, width=64, depth=3, key=jax.random.key(0))
    )
    x0 = jnp.ones((256, 2))
    svi = make_svi(diffusion, TrainConfig())
    params = svi.get_params(svi.init(jax.random.key(0), x0))

    def loss(p):
        return DiffusionELBO(estimator).loss(jax.random.key(1), p, diffusion.model, diffusion.guide, x0)

    return loss, params


@pytest.mark.parametrize("estimator", ["all", "trajectory"])
def test_gradient_memory_does_not_grow_with_T(estimator):
    """Compiled scratch memory of ∇K at T = 1000 vs T = 100 (without remat: 10×, 1.09 GiB vs 108 MiB)."""
    temp = {}
    for T in (100, 1000):
        loss, params = _loss_and_params(T, estimator)
        temp[T] = jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis().temp_size_in_bytes
    assert temp[1000] < 1.5 * temp[100], temp


def test_map_over_time_equals_vmap_with_gradients():
    w = jax.random.normal(jax.random.key(0), (3, 3))
    xs = jax.random.normal(jax.random.key(1), (53, 3))  # not a multiple of the chunk

    def total(w, mapper):
        return mapper(lambda x: jnp.tanh(x @ w).sum(), xs).sum()

    plain = jax.value_and_grad(total)(w, lambda f, xs: jax.vmap(f)(xs))
    chunked = jax.value_and_grad(total)(w, lambda f, xs: map_over_time(f, xs, chunk=10))
    np.testing.assert_allclose(chunked[0], plain[0], rtol=1e-6)
    np.testing.assert_allclose(chunked[1], plain[1], rtol=1e-5, atol=1e-6)
