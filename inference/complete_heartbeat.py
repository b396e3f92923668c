"""Complete a heartbeat: observe the first half of a held-out binary sequence exactly, infer the rest.

r(x⁰) = δ(x⁰[:10] − y[:10]) (`observe_exactly`): the binomial analogue of the paper's inpainting
(§2.5.3, Fig. 5). The observed bins are clamped; the others follow the trained model's conditional.
A period-5 heartbeat is determined by any 5 consecutive bins, so a good model completes it exactly.
Binary runs are not rescaled (the identity standardiser), so data units are the bits themselves.

    dpm fit models/binary_heartbeat.py
    dpm query inference/complete_heartbeat.py --run runs/binary_heartbeat

Scores: the fraction of posterior draws that are valid heartbeats, and that equal the hidden truth.
"""

import jax.numpy as jnp
import numpy as np

import dpm_ppl as dpm
from dpm_ppl import Observed, QueryScript, observe_exactly


def model(diffusion, y, mask):
    x0 = diffusion.prior((y.shape[0],))
    observe_exactly("known", x0, y, mask)


def observe(run, key, num_data):
    del key
    truth = run.split.standardiser.inverse(run.split.test[:num_data]).astype(np.float32)
    mask = np.arange(truth.shape[1]) < truth.shape[1] // 2
    y = np.where(mask, truth, 0.0).astype(np.float32)  # the hidden bins are not given
    return Observed({"y": y, "mask": jnp.asarray(mask)}, truth)


def score(run, observed, draws):
    flat = draws.reshape((-1,) + draws.shape[2:])  # (draws, datum, bins)
    valid = run.experiment.data.is_valid(flat.reshape(-1, flat.shape[-1]))
    exact = np.all(flat == observed.truth[None], axis=-1)
    return {"valid_fraction": valid.mean(), "completed_exactly_fraction": exact.mean()}


query = QueryScript(
    name="complete_heartbeat",
    model=model,
    observe=observe,
    sampler=dpm.SMC(num_particles=200, num_runs=4),
    num_data=20,
    score=score,
)
