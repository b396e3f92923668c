"""The Swiss-roll diffusion written by hand in pure JAX/Equinox: what a user would write without dpm_ppl.

The same mathematics as `dpm_ppl` on `models/swiss_roll.py`'s model (Gaussian diffusion, learned β
schedule with β₁ fixed, `GaussianReverse`'s reference mean and bounded variance, the `MLPNet`
network), written as plain functions of one Equinox module, with no NumPyro trace, no
distributions and no kernel-family indirection. Each function draws its random numbers from the
key exactly as the dpm_ppl path does, so both compute the same numbers from the same key:

- `loss`: −Σ K(x⁰) with the stratified one-t-per-example KL (`DiffusionELBO()` inside `SVI.update`);
- `train_step`: one `SVI.update` (split the state key, value-and-grad, optax);
- `sample`: ancestral sampling by `lax.scan` (`dpm_ppl.sample`, one batch);
- `log_likelihood`: importance sampling over forward trajectories (paper Eq 9), chunked, with an
  online logsumexp (`dpm_ppl.log_likelihood` without its ESS/PSIS diagnostics).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import lax

from dpm_ppl.nn import MLPNet


LOG_2PI = math.log(2.0 * math.pi)


class Model(eqx.Module):
    """The trainable pieces: the network and the logits of β₂…β_T (β₁ fixed)."""

    network: MLPNet
    logits: jax.Array
    beta1: float = eqx.field(static=True)

    @property
    def num_steps(self) -> int:
        return self.logits.shape[0] + 1


def from_dpm(params: dict, network: MLPNet) -> Model:
    """The hand-written model holding dpm_ppl's SVI params (``svi.get_params(state)``)."""
    _, static = eqx.partition(network, eqx.is_inexact_array)
    schedule = params["schedule$params"]
    return Model(eqx.combine(params["network$params"], static), schedule.logits, schedule.beta1)


def _schedule(model: Model):
    """β, ᾱ_0…ᾱ_T and 1 − ᾱ_0…1 − ᾱ_T (log space and expm1, as `dpm_ppl._schedules`)."""
    betas = jnp.concatenate([jnp.full((1,), model.beta1, model.logits.dtype), jax.nn.sigmoid(model.logits)])
    log_abar = jnp.concatenate([jnp.zeros((1,), betas.dtype), jnp.cumsum(jnp.log1p(-betas))])
    return betas, jnp.exp(log_abar), -jnp.expm1(log_abar)


def _reverse(model: Model, betas, oma, x, t):
    """Mean and variance of p(xᵗ⁻¹|xᵗ) for a batch ``x`` at steps ``t`` (`GaussianReverse`)."""
    z_mu, z_sigma = jax.vmap(model.network)(x, t)
    beta_t = betas[t - 1][:, None]
    lower = (oma[t - 1] * betas[t - 1] / oma[t])[:, None]
    v = jax.nn.sigmoid(z_sigma)
    var = jnp.exp(v * jnp.log(beta_t) + (1.0 - v) * jnp.log(lower))
    return jnp.sqrt(1.0 - beta_t) * x + jnp.sqrt(beta_t) * z_mu, var


def _draws(key, batch: int, T: int, shape):
    """The stratified steps t ∈ 2…T and the noise of xᵗ, from the key `DiffusionELBO` gets."""
    _, _, k_bound = jax.random.split(key, 3)  # guide and model keys: their draws are never used
    k_t, k_x = jax.random.split(k_bound)
    k_perm, k_u = jax.random.split(k_t)
    u = (jax.random.permutation(k_perm, batch) + jax.random.uniform(k_u)) / batch
    t = 2 + jnp.minimum(jnp.floor(u * (T - 1)).astype(jnp.int32), T - 2)
    return t, jax.random.normal(k_x, shape)


def loss_from_draws(model: Model, x0, t, noise):
    """−Σ_batch K(x⁰) (paper Eq 14) with the KL at the given step per example, scaled by T − 1."""
    T, d = model.num_steps, x0.shape[-1]
    betas, abar, oma = _schedule(model)
    xt = jnp.sqrt(abar[t])[:, None] * x0 + jnp.sqrt(oma[t])[:, None] * noise
    mean_p, var_p = _reverse(model, betas, oma, xt, t)
    beta_t = betas[t - 1][:, None]
    mean_q = (jnp.sqrt(abar[t - 1]) * betas[t - 1] / oma[t])[:, None] * x0
    mean_q = mean_q + (jnp.sqrt(1.0 - beta_t) * (oma[t - 1] / oma[t])[:, None]) * xt
    var_q = (oma[t - 1] * betas[t - 1] / oma[t])[:, None]
    kl = 0.5 * (jnp.log(var_p) - jnp.log(var_q) + (var_q + (mean_q - mean_p) ** 2) / var_p - 1.0)
    kl = (T - 1) * kl.sum(-1)
    entropy_T = 0.5 * d * (LOG_2PI + 1.0 + jnp.log(oma[T]))
    entropy_1 = 0.5 * d * (LOG_2PI + 1.0 + jnp.log(betas[0]))
    c = betas[0] + abar[T]
    prior = -0.5 * d * LOG_2PI - 0.5 * (c * jnp.sum(x0**2, -1) + (1.0 - c) * d)
    return -jnp.sum(-kl + entropy_T - entropy_1 + prior)


def loss(model: Model, key, x0):
    """`DiffusionELBO().loss(key, params, model, guide, x0)` written out."""
    t, noise = _draws(key, x0.shape[0], model.num_steps, x0.shape)
    return loss_from_draws(model, x0, t, noise)


def train_step(optimizer: optax.GradientTransformation, model: Model, opt_state, key, x0):
    """One update, as `SVI.update`: ``key`` is the state's key, split into the next one and the step's."""
    key, k_step = jax.random.split(key)
    value, grads = eqx.filter_value_and_grad(loss)(model, k_step, x0)
    updates, opt_state = optimizer.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
    return eqx.apply_updates(model, updates), opt_state, key, value


def sample(model: Model, key, num_samples: int, dim: int = 2):
    """x⁰ ~ p(x⁰) by ancestral sampling (paper Eq 5) and the fixed last step; ``dpm_ppl.sample``'s draws
    for one batch."""
    betas, _, oma = _schedule(model)
    k_chain, k_last = jax.random.split(jax.random.fold_in(key, 0))
    k_T, k_steps = jax.random.split(k_chain)
    x_T = jax.random.normal(k_T, (num_samples, dim))

    def step(x, inputs):
        t, k = inputs
        mean, var = _reverse(model, betas, oma, x, jnp.full((num_samples,), t))
        return mean + jnp.sqrt(var) * jax.random.normal(k, x.shape), None

    T = model.num_steps
    x1, _ = lax.scan(step, x_T, (jnp.arange(T, 1, -1), jax.random.split(k_steps, T - 1)))
    return jnp.sqrt(1.0 - betas[0]) * x1 + jnp.sqrt(betas[0]) * jax.random.normal(k_last, x1.shape)


def _log_normal(x, mean, var):
    return -0.5 * (LOG_2PI + jnp.log(var) + (x - mean) ** 2 / var)


def log_weights(model: Model, keys, x0):
    """log w = log π(xᵀ) + Σ_{t≥2}[log p(xᵗ⁻¹|xᵗ) − log q(xᵗ|xᵗ⁻¹)] + log π(x⁰) − log π(x¹) (Eq 9, the last
    step's q cancelling) for one forward trajectory per key: keys ``(n,)``, x0 ``(n, d)``."""
    betas, _, oma = _schedule(model)
    T, (n, d) = model.num_steps, x0.shape
    eps = jax.vmap(lambda k: jax.random.normal(k, (1, T, d))[0])(keys)  # (n, T, d), as `ForwardChain`

    def forward(x, inputs):
        beta, e = inputs
        x = jnp.sqrt(1.0 - beta) * x + jnp.sqrt(beta) * e
        return x, x

    _, traj = lax.scan(forward, x0, (betas, jnp.moveaxis(eps, 1, 0)))  # (T, n, d): x¹…xᵀ
    prev = jnp.concatenate([x0[None], traj[:-1]])
    log_q = _log_normal(traj, jnp.sqrt(1.0 - betas)[:, None, None] * prev, betas[:, None, None]).sum(-1)
    ts = jnp.broadcast_to(jnp.arange(2, T + 1)[:, None], (T - 1, n))
    mean, var = _reverse(model, betas, oma, traj[1:].reshape(-1, d), ts.reshape(-1))
    log_p = _log_normal(traj[:-1].reshape(-1, d), mean, var).sum(-1).reshape(T - 1, n)

    def log_pi(x):
        return -0.5 * (LOG_2PI + x**2).sum(-1)

    return log_pi(traj[-1]) + (log_p - log_q[1:]).sum(0) + log_pi(x0) - log_pi(traj[0])


def log_likelihood(model: Model, data_keys, x0, num_trajectories: int, chunk_size: int):
    """log p̂(x⁰) = logsumexp_m log w_m − log M per datum, M trajectories in chunks (a `lax.scan` carrying a
    running max and sum); trajectory m of datum i uses ``fold_in(data_keys[i], m)`` as dpm_ppl does."""
    M, C = num_trajectories, chunk_size
    batch = x0.shape[0]

    def body(carry, j):
        peak, total = carry
        ms = j * C + jnp.arange(C)
        keys = jax.vmap(lambda k: jax.vmap(lambda m: jax.random.fold_in(k, m))(ms))(data_keys)  # (batch, C)
        lw = log_weights(model, keys.reshape(-1), jnp.repeat(x0, C, axis=0)).reshape(batch, C)
        lw = jnp.where(ms < M, lw, -jnp.inf)
        new_peak = jnp.maximum(peak, lw.max(-1))
        total = total * jnp.exp(peak - new_peak) + jnp.exp(lw - new_peak[:, None]).sum(-1)
        return (new_peak, total), None

    init = (jnp.full((batch,), -jnp.inf, x0.dtype), jnp.zeros((batch,), x0.dtype))
    (peak, total), _ = lax.scan(body, init, jnp.arange(-(-M // C)))
    return peak + jnp.log(total) - math.log(M)
