"""NUTS on a posterior query, in the whitened (non-centred) coordinates of the reverse chain.

The query's target is p̃(x⁰…x^T) ∝ p(x⁰…x^T)·r(x⁰) (paper §2.5, Eq 16), with p the reverse chain
(Eq 5). NUTS on the trajectory itself (the centred parameterisation) sees a posterior whose scales
differ wildly from step to step and from coordinate to coordinate: a trained kernel's variances
f_Σ(xᵗ, t) shrink toward t = 1 and the conditional structure is a long funnel-like chain, so one
diagonal mass matrix and one step size fit none of it (measured on the trained Swiss roll at T = 40:
R-hat 2.17, ESS 2.7).

`NUTS` instead samples the standard-normal noises that generate the trajectory:

    ε_0, ε_1, …, ε_T ~ N(0, I),
    x^T = ε_T,   x^{t−1} = f_μ(xᵗ, t) + √f_Σ(xᵗ, t)·ε_{t−1}  (t = T…2),   x⁰ = μ₁(x¹) + √β₁·ε_0,

the last line being the fixed last step p(x⁰|x¹) = N(√(1−β₁)x¹, β₁ I) (App. B.2). Under the prior
the noises are exactly N(0, I), whatever the kernel, and r(x⁰) only tilts them: the scales NUTS must
adapt to are those of the likelihood, not of the chain.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import cast

import arviz_stats as azs
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import xarray as xr
from jax import lax
from jaxtyping import Array, PRNGKeyArray
from numpyro import handlers
from numpyro.infer import MCMC, init_to_sample
from numpyro.infer import NUTS as _NumPyroNUTS

from ..._chains import apply_kernel
from ..._checks import positive_int
from ..._model import TRAJECTORY, X0, AbstractDiffusion
from .._query import LogR, QueryError
from ._base import AbstractSampler
from ._result import Posterior, event_dims, observed_dataset, rhat_max


__all__ = ["NOISE", "NUTS", "trajectory_from_noise"]

NOISE = "noise"
"""The whitened model's one sample site: ε_0…ε_T, shape ``(B, T+1, *event)``, index k generating xᵏ."""


def trajectory_from_noise(diffusion: AbstractDiffusion, noise: Array) -> tuple[Array, Array]:
    """The reverse chain as a deterministic map of its standard-normal noises (non-centred).

    ``noise`` has shape ``(B, T+1, *event)``; index k generates xᵏ (k = T: x^T = ε_T itself).
    Returns ``(trajectory, x0)``: the trajectory x¹…x^T of shape ``(B, T, *event)`` (index k holding
    x^{k+1}, as the site ``"trajectory"``) and x⁰ of shape ``(B, *event)``. With ``noise ~ N(0, I)``
    this is exactly ancestral sampling of the model (`dpm_ppl.ReverseChain`, then the last step).
    """
    family, nd = diffusion.family, diffusion.event_ndim
    betas = diffusion.betas()
    kernel = diffusion.reverse_kernel(betas)
    T = diffusion.num_steps
    eps = jnp.moveaxis(noise, 1, 0)  # (T+1, B, *event): eps[k] generates x^k
    x_T = family.prior_sample(eps[T])

    def step(x, inputs):
        t, e = inputs
        x = family.reverse_step(apply_kernel(kernel, x, t, nd), e)
        return x, x

    ts = jnp.arange(T, 1, -1)  # t = T…2 produces x^{T−1}…x^1
    x1, xs = lax.scan(step, x_T, (ts, eps[T - 1 : 0 : -1]))
    traj = jnp.concatenate([xs[::-1], x_T[None]], axis=0)  # x^1…x^T
    x0 = family.reverse_step(family.last_step(x1, betas[0]), eps[0])
    return jnp.moveaxis(traj, 0, 1), x0


def _whitened_model(log_r: LogR):
    """The NumPyro model on the noises: its potential is −log N(ε) − log r(x⁰(ε)) − log prior(latents)."""
    diffusion = log_r.diffusion
    shape = (log_r.num_data, diffusion.num_steps + 1) + tuple(diffusion.event_shape)

    def model():
        noise = numpyro.sample(NOISE, dist.Normal(0.0, 1.0).expand(shape).to_event(len(shape)))
        noise = cast(Array, noise)  # numpyro.sample is hinted ArrayLike: here a draw
        traj, x0 = trajectory_from_noise(diffusion, noise)
        numpyro.deterministic(X0, x0)
        # The query's own prior sites are given these values and hidden: p(x⁰…x^T) is already
        # accounted for by N(ε) (no Jacobian, module docstring); its observations and latents remain.
        handlers.block(handlers.substitute(log_r.query, data={X0: x0, TRAJECTORY: traj}), hide=[X0, TRAJECTORY])(
            diffusion, **log_r.observations
        )

    return model


def _centred_model(log_r: LogR):
    def model():
        log_r.query(log_r.diffusion, **log_r.observations)

    return model


class NUTS(AbstractSampler):
    """NumPyro's NUTS on a query's posterior, with several chains, R-hat and ESS. Gaussian diffusion only.

    With ``whiten=True`` (the default) it samples the standard-normal noises ε_0…ε_T that generate
    the trajectory (`trajectory_from_noise`, the module docstring): the model is one sample site
    ``"noise"`` ~ N(0, I) of shape ``(B, T+1, *event)``, x⁰ and the trajectory computed from it, and
    the user's query run with its ``"x0"`` and ``"trajectory"`` sites substituted by those values and
    hidden from the potential, which is therefore −log N(ε) − log r(x⁰(ε)) − log prior(latents).

    No Jacobian is needed: the map ε ↦ (x^T, …, x⁰) is triangular, with ∂xᵗ⁻¹/∂εₜ₋₁ = √f_Σ(xᵗ, t), so
    p(x⁰…x^T) = N(ε)·|det ∂x/∂ε|⁻¹ (ε the noises of x) — the model's path density is exactly the
    push-forward of N(0, I). The posterior p(x)·r(x⁰) dx pulled back to ε is then
    p(x(ε))·r(x⁰(ε))·|det ∂x/∂ε| dε = N(ε)·r(x⁰(ε)) dε: the determinants cancel.

    ``whiten=False`` runs NUTS on the trajectory itself (the centred parameterisation, potential
    −log p(x⁰…x^T) − log r(x⁰)), kept for comparison: it does not mix on trained models.

    It cannot serve binomial diffusion (discrete states) nor `observe_exactly` (a delta has no
    gradient); use `dpm_ppl.SMC` for those.

    **Arguments:**

    - `num_chains`: independent chains (vectorised), for R-hat.
    - `num_samples`, `num_warmup`: draws and warm-up (step size and diagonal mass adaptation) per chain.
    - `target_accept_prob`: the step-size adaptation's target; raise it (e.g. 0.95) on divergences.
    - `max_tree_depth`: at most 2^depth − 1 leapfrog steps per draw.
    - `whiten`: sample the noises (non-centred, default) or the trajectory (centred).
    - `dense_mass`: adapt a dense mass matrix in warm-up instead of a diagonal one (measured on the
      trained Swiss roll: it made the trees longer, 1,012 against 761 leapfrog steps per draw).

    Chains start at draws from the prior (noises ~ N(0, I); the query's latents from their prior).
    The result's tree holds ``posterior`` (x0 of dims chain, draw, datum, dim…, and the query's
    latents), ``sample_stats`` (diverging, accept_prob, num_steps, step_size, energy per chain and
    draw) and ``observed_data``.
    """

    name = "nuts"

    num_chains: int = 4
    num_samples: int = 500
    num_warmup: int = 500
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    whiten: bool = True
    dense_mass: bool = False

    def __check_init__(self):
        positive_int("num_chains", self.num_chains)
        positive_int("num_samples", self.num_samples)
        positive_int("num_warmup", self.num_warmup)
        positive_int("max_tree_depth", self.max_tree_depth)
        p = self.target_accept_prob
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating)) or not 0.0 < p < 1.0:
            raise ValueError(
                f"`target_accept_prob` must be a number strictly between 0 and 1 (e.g. 0.8; raise it toward "
                f"0.95 when NUTS reports divergences), got {p!r}."
            )
        if not isinstance(self.whiten, (bool, np.bool_)):
            raise ValueError(
                f"`whiten` must be True (sample the noises, non-centred) or False (the trajectory, centred), "
                f"got {self.whiten!r}."
            )

    def check(self, log_r: LogR) -> None:
        if not log_r.diffusion.family.differentiable:
            raise QueryError(
                f"NUTS needs continuous states, and {type(log_r.diffusion).__name__} has discrete ones "
                f"({type(log_r.diffusion.family).__name__}), with no gradient: use dpm_ppl.SMC."
            )
        if log_r.clamp is not None:
            raise QueryError(
                "NUTS cannot sample under `observe_exactly` (a delta on x⁰ has no gradient): use dpm_ppl.SMC, which "
                "clamps exactly, or observe with a Normal of small scale instead."
            )

    def run(self, log_r: LogR, key: PRNGKeyArray, progress: bool = True) -> Posterior:
        self.check(log_r)
        model = _whitened_model(log_r) if self.whiten else _centred_model(log_r)
        drop = NOISE if self.whiten else TRAJECTORY  # not kept per draw: (B, T, *event) each
        kernel = _NumPyroNUTS(
            model,
            dense_mass=bool(self.dense_mass),
            init_strategy=init_to_sample,
            target_accept_prob=float(self.target_accept_prob),
            max_tree_depth=int(self.max_tree_depth),
        )
        mcmc = MCMC(
            kernel,
            num_warmup=int(self.num_warmup),
            num_samples=int(self.num_samples),
            num_chains=int(self.num_chains),
            chain_method="vectorized",
            progress_bar=progress,
        )
        fields = ("diverging", "accept_prob", "num_steps", "adapt_state.step_size", "energy", f"~z.{drop}")
        t0 = time.perf_counter()
        mcmc.run(key, extra_fields=fields)
        samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
        extra = {k: np.asarray(v) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()}
        seconds = time.perf_counter() - t0
        return self._result(log_r, samples, extra, seconds)

    def _result(self, log_r: LogR, samples: dict, extra: dict, seconds: float) -> Posterior:
        diffusion = log_r.diffusion
        post = {X0: (["chain", "draw", "datum", *event_dims(diffusion)], np.asarray(samples[X0]))}
        for name in log_r.latents:
            v = np.asarray(samples[name])
            post[name] = (["chain", "draw"] + [f"{name}_dim_{i}" for i in range(v.ndim - 2)], v)
        stats = {
            "diverging": extra["diverging"].astype(bool),
            "accept_prob": extra["accept_prob"],
            "num_steps": extra["num_steps"],
            "step_size": extra["adapt_state.step_size"],
            "energy": extra["energy"],
        }
        tree = xr.DataTree.from_dict(
            {
                "posterior": xr.Dataset(post),
                "sample_stats": xr.Dataset({k: (["chain", "draw"], v) for k, v in stats.items()}),
                "observed_data": observed_dataset(log_r.observations),
            }
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ess = azs.ess(tree, var_names=[X0])[X0].values
        ess_min = float(np.nanmin(ess)) if np.isfinite(ess).any() else float("nan")
        rhat = rhat_max(tree)
        divergences = int(stats["diverging"].sum())
        saturated = float(np.mean(stats["num_steps"] >= 2**self.max_tree_depth - 1))
        diagnostics = {
            "divergences": float(divergences),
            "mean_accept_prob": float(np.mean(stats["accept_prob"])),
            "mean_num_steps": float(np.mean(stats["num_steps"])),
            "tree_depth_saturated": saturated,
        }
        notes = []
        if rhat is not None and rhat > 1.01:
            notes.append(
                f"R-hat of x0 is {rhat:.3g} > 1.01: the {self.num_chains} chains disagree; run longer "
                "(num_warmup, num_samples) or compare with dpm_ppl.SMC."
            )
        if divergences:
            notes.append(
                f"{divergences} divergent transitions of {stats['diverging'].size}: the draws may miss parts of the "
                "posterior; raise target_accept_prob (e.g. 0.95)."
            )
        if saturated > 0.0:
            notes.append(
                f"{100 * saturated:.3g}% of the draws hit max_tree_depth={self.max_tree_depth}: NUTS was cut short; "
                "raise max_tree_depth."
            )
        if math.isfinite(ess_min) and ess_min < 100:
            notes.append(f"The smallest bulk ESS of x0 is {ess_min:.3g} < 100: too few effective draws to trust.")
        return Posterior(
            sampler=self.name,
            tree=tree,
            log_Z=None,
            log_Z_stderr=None,
            ess_min=ess_min,
            khat=None,
            rhat_max=rhat,
            seconds=seconds,
            diagnostics=diagnostics,
            warnings=tuple(notes),
        )
