"""`DiffusionELBO`: the paper's bound K (Eq 14) as a NumPyro ELBO, returned as named per-example terms.

For one datum x⁰ (derived from Eq 12):

    K(x⁰) = − Σ_{t=2}^{T} E_{q(xᵗ|x⁰)} KL(q(xᵗ⁻¹|xᵗ,x⁰) ‖ p(xᵗ⁻¹|xᵗ)) + H_q(X^T|x⁰) − H_q(X¹|x⁰) + C(x⁰),

where C(x⁰) = E[log π(x^T)] + log π(x⁰) − E[log π(x¹)] collects the prior and the fixed last step
(it is the paper's −H_p(X^T) on unit-variance data). This is the Rao-Blackwellised form of
E_q[log p(x⁰…ᵀ) − log q(x¹…ᵀ|x⁰)], which NumPyro's ``Trace_ELBO`` estimates on the same model
and guide by plain Monte Carlo; their expectations are equal. Every term comes from the kernel
family's closed forms (`dpm_ppl.AbstractFamily`), so one code path serves Gaussian and binomial diffusion.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray
from numpyro.handlers import replay, seed, substitute, trace
from numpyro.infer.elbo import ELBO

from ._chains import LAST_STEP, ForwardChain, ReverseChain, apply_kernel
from ._event import event_axes
from ._family import AbstractFamily
from ._kernels import ReverseKernel
from ._remat import map_over_time


__all__ = ["BoundTerms", "DiffusionELBO", "bound_terms"]

Estimator = Literal["stratified", "uniform", "all", "trajectory"]
_ESTIMATORS = ("stratified", "uniform", "all", "trajectory")


class BoundTerms(NamedTuple):
    """The bound's pieces per example, in nats; every field has the batch shape.

    - `kl`: Σ_{t=2}^{T} KL_t (an unbiased estimate when t is sampled).
    - `entropy_T`, `entropy_1`: H_q(X^T|x⁰) and H_q(X¹|x⁰).
    - `prior`: C(x⁰), the prior and last-step terms.
    - `log_null`: log π(x⁰); its mean over data is L_null.
    - `dim`: the dimension d of one example (for per-dimension units).
    """

    kl: Array
    entropy_T: Array
    entropy_1: Array
    prior: Array
    log_null: Array
    dim: int

    @property
    def K(self) -> Array:
        """The bound K(x⁰) per example (nats)."""
        return -self.kl + self.entropy_T - self.entropy_1 + self.prior

    def bits(self) -> dict[str, Array]:
        """Every term, K and K − L_null per example, in bits."""
        log2 = math.log(2.0)
        out = {name: getattr(self, name) / log2 for name in ("kl", "entropy_T", "entropy_1", "prior", "log_null")}
        out["K"] = self.K / log2
        out["K_minus_Lnull"] = (self.K - self.log_null) / log2
        return out


def _kl_at(
    key: PRNGKeyArray, x0: Array, t: Array, betas: Array, kernel: ReverseKernel, event_ndim: int, family: AbstractFamily
) -> Array:
    """KL(q(xᵗ⁻¹|xᵗ,x⁰) ‖ p(xᵗ⁻¹|xᵗ)) at one xᵗ ~ q(xᵗ|x⁰) per example (frozen noise for Gaussians)."""
    t_b = t.reshape(t.shape + (1,) * event_ndim)
    xt = family.marginal_sample(x0, t_b, betas, family.noise(key, x0.shape, x0.dtype))
    params = apply_kernel(kernel, xt, t, event_ndim)
    return family.kl(x0, xt, t_b, betas, params).sum(axis=event_axes(event_ndim))


def _sample_steps(key: PRNGKeyArray, batch: int, T: int, stratified: bool) -> Array:
    """t ∈ {2…T} per example, uniform; stratified draws cover the range evenly within a batch."""
    if not stratified:
        return jax.random.randint(key, (batch,), 2, T + 1)
    k_perm, k_u = jax.random.split(key)
    u = (jax.random.permutation(k_perm, batch) + jax.random.uniform(k_u)) / batch
    return 2 + jnp.minimum(jnp.floor(u * (T - 1)).astype(jnp.int32), T - 2)


def _trajectory_terms(
    key: PRNGKeyArray, x0: Array, betas: Array, kernel: ReverseKernel, event_ndim: int, family: AbstractFamily
) -> tuple[Array, Array, Array, Array]:
    """Every term from ONE forward trajectory (teacher forcing): (kl, entropy_T, entropy_1, prior).

    Their combination is exactly log p(x⁰…ᵀ) − log q(x¹…ᵀ|x⁰), the log importance weight of
    paper Eq 9, so it has zero variance when the reverse kernel is the exact time reversal.
    """
    T = betas.shape[0]
    axes = event_axes(event_ndim)
    traj = ForwardChain(x0, betas, event_ndim, family=family).sample(key)  # (batch, T, *event)
    reverse = ReverseChain(kernel, betas, x0.shape[:1], x0.shape[1:], family=family)
    x1, xT = traj[:, 0], traj[:, -1]
    ts = jnp.arange(2, T + 1).reshape((1, T - 1) + (1,) * event_ndim)
    log_post = family.posterior_log_prob(traj[:, :-1], traj[:, 1:], x0[:, None], ts, betas).sum(axis=axes).sum(-1)
    kl = log_post - reverse.step_log_probs(traj).sum(-1)
    entropy_T = -family.marginal_log_prob(xT, x0, T, betas).sum(axis=axes)
    entropy_1 = -family.marginal_log_prob(x1, x0, 1, betas).sum(axis=axes)
    prior = family.log_prior(xT, event_ndim) + family.log_prior(x0, event_ndim) - family.log_prior(x1, event_ndim)
    return kl, entropy_T, entropy_1, prior


def bound_terms(
    key: PRNGKeyArray,
    x0: Float[Array, "batch *event"],  # noqa: F821 (jaxtyping dimension names)
    betas: Float[Array, " T"],
    kernel: ReverseKernel,
    event_ndim: int,
    estimator: Estimator = "all",
    *,
    family: AbstractFamily,
) -> BoundTerms:
    """The terms of K(x⁰) for a batch of data under a reverse kernel of a family (paper Eq 14, per datum).

    Estimators, all unbiased for K(x⁰):

    - ``"all"``: the closed-form KL at every t = 2…T (one xᵗ draw each) and the exact entropies;
      the evaluation default.
    - ``"uniform"`` / ``"stratified"``: the KL at one t per example, scaled by T − 1 (training);
      stratified draws spread the batch's t evenly over 2…T.
    - ``"trajectory"``: every term from one forward trajectory, i.e. log p(x⁰…ᵀ) − log q(x¹…ᵀ|x⁰)
      (what ``Trace_ELBO`` computes): exact to float precision for the exact reverse kernel.
    """
    T = betas.shape[0]
    dim = math.prod(x0.shape[1:])
    batch = x0.shape[0]
    entropy_T = family.entropy_T(x0, betas, event_ndim)
    entropy_1 = family.entropy_1(x0, betas, event_ndim)
    prior = family.bound_constant(x0, betas, event_ndim)
    if estimator not in _ESTIMATORS:
        raise ValueError(f"`estimator` must be one of {_ESTIMATORS}, got {estimator!r}.")
    if T == 1:
        kl = jnp.zeros((batch,), x0.dtype)
    elif estimator == "all":
        keys = jax.random.split(key, T - 1)
        per_t = map_over_time(
            lambda kt: _kl_at(kt[0], x0, jnp.full((batch,), kt[1]), betas, kernel, event_ndim, family),
            (keys, jnp.arange(2, T + 1)),
        )
        kl = per_t.sum(0)
    elif estimator == "trajectory":
        kl, entropy_T, entropy_1, prior = _trajectory_terms(key, x0, betas, kernel, event_ndim, family)
    else:
        k_t, k_x = jax.random.split(key)
        ts = _sample_steps(k_t, batch, T, estimator == "stratified")
        kl = (T - 1) * _kl_at(k_x, x0, ts, betas, kernel, event_ndim, family)
    return BoundTerms(
        kl=kl,
        entropy_T=entropy_T,
        entropy_1=entropy_1,
        prior=prior,
        log_null=family.log_prior(x0, event_ndim),
        dim=dim,
    )


class DiffusionELBO(ELBO):
    """The analytic bound K (paper Eq 14) for a reverse-chain model and a forward-chain guide.

    It traces the guide and the model, finds the trajectory site (a `ForwardChain` in the guide, a
    `ReverseChain` in the model) and evaluates K from closed forms: a KL at a random t per example
    scaled to the full sum for training, the exact sum over t (``estimator="all"``) for evaluation,
    or every term from one whole trajectory (see `bound_terms`). The kernel family (Gaussian or
    binomial) is read off the chains. Any other sites of the
    model and guide (your own latents, factors) enter by plain Monte Carlo, as in ``Trace_ELBO``.

    **Arguments:**

    - `estimator`: "stratified" (default; one t per example, spread evenly over the batch),
      "uniform", "all" (every t) or "trajectory" (see `gaussian_bound_terms`).
    - `num_particles`: the number of independent draws averaged.
    """

    # The binomial trajectory site is discrete but integrated in closed form; `terms` refuses any
    # other discrete latent site, whose Monte-Carlo log-density would carry no score-function gradient.
    can_infer_discrete = True

    def __init__(self, estimator: Estimator = "stratified", num_particles: int = 1):
        if estimator not in _ESTIMATORS:
            raise ValueError(f"`estimator` must be one of {_ESTIMATORS}, got {estimator!r}.")
        super().__init__(num_particles=num_particles)
        self.estimator: Estimator = estimator

    def terms(self, rng_key, param_map, model, guide, *args, **kwargs) -> tuple[BoundTerms, Array, Array]:
        """One draw of the bound: ``(terms, scale, other)`` where ``terms.K * scale`` sums to the
        chain's part of the bound and ``other`` is the Monte-Carlo log p − log q of every other site."""
        k_guide, k_model, k_bound = jax.random.split(rng_key, 3)
        guide_trace = trace(substitute(seed(guide, k_guide), data=param_map)).get_trace(*args, **kwargs)
        model_trace = trace(substitute(replay(seed(model, k_model), guide_trace), data=param_map)).get_trace(
            *args, **kwargs
        )
        chains = [
            name
            for name, site in model_trace.items()
            if site["type"] == "sample"
            and isinstance(site["fn"], ReverseChain)
            and isinstance(guide_trace.get(name, {}).get("fn"), ForwardChain)
        ]
        if len(chains) != 1:
            raise ValueError(
                "DiffusionELBO needs a model with one ReverseChain site and a guide with a ForwardChain site "
                f"of the same name (use GaussianDiffusion or BinomialDiffusion .model / .guide); found {len(chains)}."
            )
        name = chains[0]
        forward, reverse = guide_trace[name]["fn"], model_trace[name]["fn"]
        if forward.family != reverse.family:
            raise ValueError(
                f"The guide's forward chain ({forward.family!r}) and the model's reverse chain "
                f"({reverse.family!r}) must use the same kernel family."
            )
        terms = bound_terms(
            k_bound,
            forward.x0,
            forward.betas,
            reverse.kernel,
            forward.event_ndim,
            self.estimator,
            family=forward.family,
        )
        scale = model_trace[name]["scale"]
        other = jnp.zeros(())
        for site_name, site in model_trace.items():
            if site["type"] == "sample" and site_name != name and not site["infer"].get(LAST_STEP, False):
                other = other + _scaled_log_prob(site)
        for site_name, site in guide_trace.items():
            if site["type"] == "sample" and site_name != name and not site["is_observed"]:
                if site["fn"].support.is_discrete:
                    raise ValueError(
                        f"DiffusionELBO integrates only the diffusion chain exactly; the guide's discrete latent "
                        f"site {site_name!r} would get no gradient. Marginalise it or make it continuous."
                    )
                other = other - _scaled_log_prob(site)
        return terms, jnp.asarray(1.0 if scale is None else scale), other

    def loss(self, rng_key, param_map, model, guide, *args, **kwargs):
        def single(key):
            terms, scale, other = self.terms(key, param_map, model, guide, *args, **kwargs)
            return -(jnp.sum(terms.K * scale) + other)

        if self.num_particles == 1:
            return single(rng_key)
        return jnp.mean(jax.vmap(single)(jax.random.split(rng_key, self.num_particles)))


def _scaled_log_prob(site: dict) -> Array:
    lp = jnp.sum(site["fn"].log_prob(site["value"]))
    return lp if site["scale"] is None else site["scale"] * lp
