"""Denoise the Swiss roll: noisy 2-D observations of held-out points, pulled back onto the roll.

y = x + σ·ε with σ = 1.7 in the roll's own units (its points lie within about ±13 of the origin; the
run's standardiser divides by 6.8, so σ is 0.25 in the model's units) for held-out points x; the query is
r(x⁰) = N(y; x⁰, σ²I), a Gaussian observation — the reference code's denoising (paper Fig. 3's
experiment on CIFAR-10, here in 2-D where the answer can be seen and scored). Everything here is in the
data's units: the query's x⁰ (`dpm_ppl.in_data_units`), the observations, the draws and the scores.

    dpm fit models/swiss_roll.py
    dpm query inference/denoise_swiss_roll.py --run runs/swiss_roll
    dpm query inference/denoise_swiss_roll.py --run runs/swiss_roll --method perturbed
    dpm query inference/denoise_swiss_roll.py --run runs/swiss_roll --observations noisy.csv   # your points

Scores: the mean distance to the roll's centre curve of the observations, the posterior means and the
posterior draws, and the distance of each to the hidden truth.
"""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist

import dpm_ppl as dpm
from dpm_ppl import Observed, QueryScript


NOISE = 1.7  # the observation noise's sd, in the roll's units


def model(diffusion, y):
    x0 = diffusion.prior((y.shape[0],))
    numpyro.sample("y", dist.Normal(x0, NOISE).to_event(1), obs=y)


def observe(run, key, num_data):
    truth = run.split.standardiser.inverse(run.split.test[:num_data]).astype(np.float32)
    y = truth + NOISE * np.asarray(jax.random.normal(key, truth.shape))
    return Observed({"y": y.astype(np.float32)}, truth)


def _distance_to_roll(x):
    s = np.linspace(1.5 * np.pi, 4.5 * np.pi, 20_000)
    curve = np.stack([s * np.cos(s), s * np.sin(s)], 1)
    return np.sqrt(((x[:, None, :] - curve[None]) ** 2).sum(-1)).min(1)


def score(run, observed, draws):
    y, truth = observed.observations["y"], observed.truth
    flat = draws.reshape((-1,) + draws.shape[2:])
    mean = flat.mean(0)
    some = flat[:: max(1, len(flat) // 20)].reshape(-1, 2)
    return {
        "distance_to_roll_observations": _distance_to_roll(y).mean(),
        "distance_to_roll_posterior_means": _distance_to_roll(mean).mean(),
        "distance_to_roll_posterior_draws": _distance_to_roll(some).mean(),
        "distance_to_truth_observations": np.sqrt(((y - truth) ** 2).sum(-1)).mean(),
        "distance_to_truth_posterior_means": np.sqrt(((mean - truth) ** 2).sum(-1)).mean(),
    }


query = QueryScript(
    name="denoise_swiss_roll",
    model=model,
    observe=observe,
    sampler=dpm.SMC(num_particles=1_000, num_runs=4),
    num_data=100,
    score=score,
)
