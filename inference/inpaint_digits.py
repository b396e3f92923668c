"""Inpaint 8×8 digits: the left half of held-out digits observed exactly, the right half inferred.

The paper's Fig. 5 (bark inpainting) on the digits model: r(x⁰) = δ(x⁰_S − y_S) on the known pixels
(`observe_exactly`), clamped exactly; SMC's intermediate targets carry q(xᵗ_S | y_S)/π(xᵗ_S). The
observations are pixel intensities (data units); the query maps them to the model's units to clamp.

    dpm fit models/digits.py
    dpm query inference/inpaint_digits.py --run runs/digits

Score: the RMSE (intensities) of the posterior mean on the hidden pixels against the truth, beside the
RMSE of filling them with the training mean of each pixel.
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
    mask = np.zeros(truth.shape[1:], bool)
    mask[..., : truth.shape[-1] // 2] = True  # the left half is known
    y = np.where(mask, truth, 0.0).astype(np.float32)
    return Observed({"y": y, "mask": jnp.asarray(mask)}, truth)


def score(run, observed, draws):
    hidden = ~np.asarray(observed.observations["mask"])
    mean = draws.reshape((-1,) + draws.shape[2:]).mean(0)
    truth = observed.truth
    train_mean = run.split.standardiser.inverse(run.split.train).mean(0)
    return {
        "rmse_hidden_posterior_mean": np.sqrt(((mean - truth)[:, hidden] ** 2).mean()),
        "rmse_hidden_training_mean": np.sqrt(((train_mean - truth)[:, hidden] ** 2).mean()),
    }


query = QueryScript(
    name="inpaint_digits",
    model=model,
    observe=observe,
    sampler=dpm.SMC(num_particles=200, num_runs=4),
    num_data=16,
    score=score,
)
