"""The library never relies on implicit rank promotion (adding a (B,) array to an (N, B) one, the classic silent
shape bug): its main paths run under ``jax_numpy_rank_promotion="raise"`` for both families, the oracles, every
sampler and an exact observation. (The test code elsewhere broadcasts freely, so the flag is set here, per path.)"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import dpm_ppl as dpm


T = 5
SCHEDULE = dpm.GeometricSchedule(T, 0.05, 0.5)
X = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
BITS = (np.random.default_rng(1).uniform(size=(64, 4)) < 0.4).astype(np.float32)
CONFIG = dpm.TrainConfig(steps=4, batch_size=16, steps_per_call=4, eval_every=4, eval_size=16)


def _gaussian() -> dpm.GaussianDiffusion:
    net = dpm.nn.MLPNet(2, T, width=8, depth=1, key=jax.random.key(0))
    return dpm.GaussianDiffusion((2,), dpm.LearnedSchedule(SCHEDULE), network=net)


def _binomial() -> dpm.BinomialDiffusion:
    net = dpm.nn.MLPNet(4, T, width=8, depth=1, heads=1, key=jax.random.key(0))
    return dpm.BinomialDiffusion((4,), dpm.HarmonicSchedule(T), network=net)


def _mixture() -> dpm.GaussianDiffusion:
    kernel = dpm.GaussianMixtureOracle(means=np.array([[-2.0, 0.0], [2.0, 0.5]]), weights=np.array([0.3, 0.7]),
                                       betas=SCHEDULE())  # fmt: skip
    return dpm.GaussianDiffusion((2,), SCHEDULE, kernel=kernel)


def _noisy(diffusion, y):
    x0 = diffusion.prior((y.shape[0],))
    numpyro.sample("y", dist.Normal(x0, 0.5).to_event(1), obs=y)


def _exact_first(diffusion, y):
    x0 = diffusion.prior((y.shape[0],))
    dpm.observe_exactly("first", x0, y, mask=jnp.array([True, False]))


def _flips(diffusion, y):
    x0 = diffusion.prior((y.shape[0],))
    numpyro.sample("y", dist.Bernoulli(probs=jnp.where(x0 > 0.5, 0.9, 0.1)).to_event(1), obs=y)


def _trained(model):
    return model.bind(model.param_init())


def _posterior(query, model, y, sampler):
    return lambda: dpm.posterior(query, model, {"y": jnp.asarray(y)}, key=jax.random.key(3), sampler=sampler,
                                 progress=False)  # fmt: skip


SMC = dpm.SMC(num_particles=8, num_runs=2)
PATHS = {
    "fit gaussian": lambda: dpm.fit(_gaussian(), X, X[:16], CONFIG, jax.random.key(0), progress=False),
    "fit binomial": lambda: dpm.fit(_binomial(), BITS, BITS[:16], CONFIG, jax.random.key(0), progress=False),
    "sample": lambda: dpm.sample(_trained(_gaussian()), jax.random.key(1), 8, trajectory=True),
    "likelihood gaussian": lambda: dpm.log_likelihood(
        _trained(_gaussian()), X[:3], jax.random.key(2), num_trajectories=16
    ),  # fmt: skip
    "likelihood binomial": lambda: dpm.log_likelihood(
        _trained(_binomial()), BITS[:3], jax.random.key(2), num_trajectories=16
    ),  # fmt: skip
    "likelihood mixture oracle": lambda: dpm.log_likelihood(_mixture(), X[:3], jax.random.key(2), num_trajectories=16),
    "smc smoothed": _posterior(_noisy, _trained(_gaussian()), X[:3], SMC),
    "smc jacobian (mixture)": _posterior(_noisy, _mixture(), X[:3], SMC),
    "smc tds, rejuvenated": _posterior(
        _noisy, _trained(_gaussian()), X[:3], dpm.SMC(num_particles=8, num_runs=2, twist="tds", rejuvenate=1)
    ),  # fmt: skip
    "smc exact observation": _posterior(_exact_first, _trained(_gaussian()), X[:3], SMC),
    "smc binomial": _posterior(_flips, _trained(_binomial()), BITS[:3], SMC),
    "perturbed": _posterior(_noisy, _trained(_gaussian()), X[:3], dpm.Perturbed(num_particles=8, num_runs=2)),
    "nuts": _posterior(_noisy, _trained(_gaussian()), X[:2], dpm.NUTS(num_chains=1, num_samples=4, num_warmup=4)),
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_no_implicit_rank_promotion(path):
    with jax.numpy_rank_promotion("raise"):
        PATHS[path]()
