"""Reverse kernels from pretrained denoisers in the DDPM parameterisation (Ho et al. 2020; Nichol & Dhariwal 2021).

A network trained elsewhere to predict the noise ε (or the clean example x⁰) from (xᵗ, t) defines the
Gaussian reverse kernel p(xᵗ⁻¹ | xᵗ) = N(μ̃_t(xᵗ, x̂⁰), σ_t²): the forward posterior q(xᵗ⁻¹ | xᵗ, x⁰)
(`gaussian.posterior`) with x⁰ replaced by its prediction. `DenoiserKernel` makes any such JAX callable a
dpm_ppl reverse kernel, so the network becomes a `GaussianDiffusion` that `sample`, `log_likelihood`,
`bound_terms` and the posterior queries accept.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from . import _gaussian as gaussian
from ._schedules import alpha_bar, one_minus_alpha_bar, validate_betas


__all__ = ["DenoiserKernel"]

_PREDICTS = ("eps", "x0")
_VARIANCES = ("beta_tilde", "beta", "learned")


class DenoiserKernel(eqx.Module):
    """The Gaussian reverse kernel of a pretrained denoiser: N(μ̃_t(xᵗ, x̂⁰), σ_t²) (DDPM, Ho et al. 2020).

    With the network's output on one example:

    - ``predicts="eps"``: ε̂ = fn(xᵗ, t), and x̂⁰ = (xᵗ − √(1−ᾱ_t)·ε̂)/√ᾱ_t (xᵗ = √ᾱ_t x⁰ + √(1−ᾱ_t) ε).
    - ``predicts="x0"``: x̂⁰ = fn(xᵗ, t).

    With ``clip_x0 = c``, x̂⁰ is clipped to [−c, c] (DDPM's sampler clips images to [−1, 1]). The mean is
    μ̃_t = √ᾱ_{t−1}β_t/(1−ᾱ_t)·x̂⁰ + √α_t(1−ᾱ_{t−1})/(1−ᾱ_t)·xᵗ (`gaussian.posterior`); since μ̃_t is linear
    in x⁰, the denoiser that predicts E[x⁰ | xᵗ] gives the exact mean of q(xᵗ⁻¹ | xᵗ). The variance:

    - ``"beta_tilde"``: β̃_t = (1−ᾱ_{t−1})β_t/(1−ᾱ_t), the entropy lower bound (Eq 24; exact for a point mass);
    - ``"beta"``: β_t, the upper bound (exact for N(0, I) data);
    - ``"learned"``: fn returns ``(prediction, v)`` and σ_t² = exp(v·log β_t + (1−v)·log β̃_t) (Nichol &
      Dhariwal 2021, Eq 15), v of any shape that broadcasts against xᵗ. (Their released code outputs
      v' ∈ [−1, 1] and uses v = (v' + 1)/2: wrap fn accordingly.)

    ``t`` is the paper's step index: the kernel is called for t = 2…T (step 1 is the fixed last step,
    `gaussian.last_step`) and passes t on to fn unchanged. Networks trained with a 0-based timestep
    (β_t at index t − 1, as in most released DDPM code) need ``lambda x, t: net(x, t - 1)``. ``fn`` runs on
    one example (the chains vmap it) and must be a JAX callable: the kernel is jitted, vmapped and, in
    posterior inference, differentiated with respect to xᵗ. An Equinox module works, and its arrays
    are leaves of this kernel.

    **Arguments:**

    - `fn`: ``(x_t, t) -> prediction`` (or ``-> (prediction, v)`` with ``variance="learned"``), the
      prediction of the event shape.
    - `betas`: the schedule β₁…β_T the network was trained with (concrete values, each in (0, 1)).
    - `predicts`: ``"eps"`` (noise prediction) or ``"x0"`` (clean-example prediction).
    - `variance`: ``"beta_tilde"``, ``"beta"`` or ``"learned"``.
    - `clip_x0`: ``None`` (default) or c > 0: clip x̂⁰ to [−c, c].
    """

    fn: Callable[[Array, Array], Any]
    betas: Float[Array, " T"]
    predicts: Literal["eps", "x0"] = eqx.field(static=True)
    variance: Literal["beta_tilde", "beta", "learned"] = eqx.field(static=True)
    clip_x0: float | None = eqx.field(static=True)

    def __init__(
        self,
        fn: Callable[[Array, Array], Any],
        betas: ArrayLike,
        predicts: Literal["eps", "x0"] = "eps",
        variance: Literal["beta_tilde", "beta", "learned"] = "beta_tilde",
        clip_x0: float | None = None,
    ):
        if not callable(fn):
            raise ValueError(
                f"`fn` must be a callable (x_t, t) -> prediction on one example, got {type(fn).__name__}. "
                "Pass the network itself, or e.g. `lambda x, t: net(x, t - 1)` for a 0-based timestep."
            )
        if predicts not in _PREDICTS:
            raise ValueError(
                f"`predicts` must be one of {_PREDICTS}, got {predicts!r}: 'eps' for a network that predicts "
                "the noise ε of xᵗ = √ᾱ_t x⁰ + √(1−ᾱ_t) ε (DDPM), 'x0' for one that predicts x⁰."
            )
        if variance not in _VARIANCES:
            raise ValueError(
                f"`variance` must be one of {_VARIANCES}, got {variance!r}: 'beta_tilde' (β̃_t) or 'beta' (β_t) "
                "for fixed variances, 'learned' when fn returns (prediction, v) (improved DDPM)."
            )
        if clip_x0 is not None:
            bad = isinstance(clip_x0, bool) or not isinstance(clip_x0, (int, float, np.integer, np.floating))
            if bad or not (math.isfinite(clip_x0) and clip_x0 > 0):
                raise ValueError(
                    f"`clip_x0` must be None or a finite number > 0 (x̂⁰ is clipped to [−clip_x0, clip_x0]), "
                    f"got {clip_x0!r}. Use 1.0 for images scaled to [−1, 1]."
                )
            clip_x0 = float(clip_x0)
        try:
            concrete = np.asarray(betas)
        except Exception as err:  # a tracer: the schedule must be known when the kernel is built
            raise ValueError(
                "`betas` must be concrete numbers (the schedule the network was trained with), not a traced "
                "array: build the kernel outside jit, e.g. from `schedule()`."
            ) from err
        self.fn = fn
        self.betas = jnp.asarray(validate_betas(concrete), dtype=jnp.result_type(float))
        self.predicts = predicts
        self.variance = variance
        self.clip_x0 = clip_x0

    def _split(self, out: Any, x_t: Array) -> tuple[Array, Array | None]:
        """(prediction, v) from fn's output, checked against ``variance`` and xᵗ's shape (at trace time)."""
        pair = isinstance(out, (tuple, list))
        if self.variance == "learned":
            if not pair or len(out) != 2:
                raise ValueError(
                    "With `variance='learned'`, `fn` must return (prediction, v), v the interpolation "
                    f"coefficient of σ² = exp(v log β_t + (1−v) log β̃_t); it returned {type(out).__name__}."
                )
            pred, v = out
        else:
            if pair:
                raise ValueError(
                    f"`fn` returned a {type(out).__name__} of {len(out)} items, but `variance={self.variance!r}` "
                    "expects one array (the prediction). For a network that also outputs v use `variance='learned'`."
                )
            pred, v = out, None
        pred = jnp.asarray(pred)
        if pred.shape != x_t.shape:
            raise ValueError(
                f"`fn` must return a prediction of the example's shape {x_t.shape}, got shape {pred.shape}. "
                "It is called on one example (the chains vmap it), with t a scalar."
            )
        return pred, v

    def predict_x0(self, x_t: Array, t: Int[ArrayLike, ""]) -> tuple[Array, Array | None]:
        """(x̂⁰, v): the network's clean-example prediction (clipped with `clip_x0`) and its v, if learned."""
        t = jnp.asarray(t)
        pred, v = self._split(self.fn(x_t, t), x_t)
        if self.predicts == "eps":
            x0 = (x_t - jnp.sqrt(one_minus_alpha_bar(self.betas)[t]) * pred) / jnp.sqrt(alpha_bar(self.betas)[t])
        else:
            x0 = pred
        if self.clip_x0 is not None:
            x0 = jnp.clip(x0, -self.clip_x0, self.clip_x0)
        return x0, v

    def __call__(self, x_t: Array, t: Int[ArrayLike, ""]) -> tuple[Array, Array]:
        t = jnp.asarray(t)
        x0, v = self.predict_x0(x_t, t)
        mean, beta_tilde = gaussian.posterior(x0, x_t, t, self.betas)
        beta = self.betas[t - 1]
        if self.variance == "beta_tilde":
            var = beta_tilde
        elif self.variance == "beta":
            var = jnp.broadcast_to(beta, x_t.shape)
        else:
            assert v is not None  # variance="learned": `_split` returned fn's v
            var = jnp.broadcast_to(gaussian.interpolate_variance(v, beta_tilde, beta), x_t.shape)
        return mean, var
