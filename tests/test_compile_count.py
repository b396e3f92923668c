"""Compile counts (as blackjax counts traces): the training step and the samplers compile once per shape, never
once per step, chunk, key or set of observations. Counted from JAX's own backend-compile events."""

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import dispatch

import dpm_ppl as dpm


T = 6
_COMPILES: list[str] = []


def _listener(event: str, duration: float, **kwargs) -> None:
    if event == dispatch.BACKEND_COMPILE_EVENT:
        _COMPILES.append(kwargs.get("fun_name", "?"))


jax.monitoring.register_event_duration_secs_listener(_listener)


def _compiles(fn) -> int:
    before = len(_COMPILES)
    fn()
    return len(_COMPILES) - before


def _model() -> dpm.GaussianDiffusion:
    schedule = dpm.LearnedSchedule(dpm.GeometricSchedule(T, 0.05, 0.5))
    net = dpm.nn.MLPNet(2, T, width=16, depth=2, key=jax.random.key(0))
    return dpm.GaussianDiffusion((2,), schedule, network=net)


def _data(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)


def test_training_compiles_once_whatever_the_number_of_steps():
    """Four chunks of 10 SVI steps compile what one chunk does: the fused step is reused by every chunk."""

    def run(steps: int):
        config = dpm.TrainConfig(steps=steps, batch_size=32, steps_per_call=10, eval_every=steps, eval_size=64)
        return lambda: dpm.fit(_model(), _data(256, 0), _data(64, 1), config, jax.random.key(0), progress=False)

    _compiles(run(10))  # the first fit also compiles what any fit needs once per process (the evaluation's pieces)
    one, four = _compiles(run(10)), _compiles(run(40))
    assert four == one, (one, four)


def test_sampling_compiles_once_per_shape():
    model = _model()
    trained = model.bind(model.param_init())
    dpm.sample(trained, jax.random.key(1), 64)
    assert _compiles(lambda: dpm.sample(trained, jax.random.key(2), 64)) == 0


def test_smc_compiles_once_for_new_observations_and_keys():
    oracle = dpm.GaussianDiffusion((2,), dpm.GeometricSchedule(T, 0.05, 0.5),
                                   kernel=dpm.IsotropicOracle(dpm.GeometricSchedule(T, 0.05, 0.5)()))  # fmt: skip

    def query(diffusion, y):
        import numpyro
        import numpyro.distributions as dist

        x0 = diffusion.prior((y.shape[0],))
        numpyro.sample("y", dist.Normal(x0, 0.5).to_event(1), obs=y)

    sampler = dpm.SMC(num_particles=32, num_runs=2)

    def run(seed: int):
        y = jnp.asarray(_data(3, seed))
        return lambda: dpm.posterior(query, oracle, {"y": y}, key=jax.random.key(seed), sampler=sampler, progress=False)

    _compiles(run(0))
    before = len(_COMPILES)
    assert _compiles(run(1)) == 0, _COMPILES[before:]
