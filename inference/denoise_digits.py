"""Denoise 8×8 digits at SNR ≈ 1: the paper's Fig. 3 experiment (CIFAR-10 there) on the digits model.

Held-out digits (pixel intensities in [0, 1], overall sd 0.255: the run's standardiser scale) plus
Gaussian noise of sd 0.255, so signal and noise have about equal variance; r(x⁰) = N(y; x⁰, 0.255² I), a
Gaussian observation multiplied exactly into each reverse step. Everything is in intensities: the
query's x⁰ (`dpm_ppl.in_data_units`), the observations, the draws and the scores.

    dpm fit models/digits.py
    dpm query inference/denoise_digits.py --run runs/digits

Score: the RMSE to the hidden truth of the observation and of the posterior mean, and the noise's sd.
"""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist

import dpm_ppl as dpm
from dpm_ppl import Observed, QueryScript


NOISE = 0.255  # the observation noise's sd, in pixel intensities (≈ the data's sd: SNR ≈ 1)


def model(diffusion, y):
    x0 = diffusion.prior((y.shape[0],))
    numpyro.sample("y", dist.Normal(x0, NOISE).to_event(x0.ndim - 1), obs=y)


def observe(run, key, num_data):
    truth = run.split.standardiser.inverse(run.split.test[:num_data]).astype(np.float32)
    y = truth + NOISE * np.asarray(jax.random.normal(key, truth.shape))
    return Observed({"y": y.astype(np.float32)}, truth)


def score(run, observed, draws):
    mean = draws.reshape((-1,) + draws.shape[2:]).mean(0)
    truth, y = observed.truth, observed.observations["y"]
    return {
        "noise_sd": NOISE,
        "rmse_observation": np.sqrt(((y - truth) ** 2).mean()),
        "rmse_posterior_mean": np.sqrt(((mean - truth) ** 2).mean()),
    }


query = QueryScript(
    name="denoise_digits",
    model=model,
    observe=observe,
    sampler=dpm.SMC(num_particles=200, num_runs=4),
    num_data=16,
    score=score,
)
