"""The user-facing declarations: diffusion probabilistic models as NumPyro programs.

`GaussianDiffusion` and `BinomialDiffusion` share one declaration (`AbstractDiffusion`); they
differ only in their kernel family (`dpm_ppl.AbstractFamily`) and in how a network becomes a reverse kernel.

The reverse chain is the model, the forward chain is the guide (paper §2.1–2.3):

    model:  x^T ~ π,  x^{t−1} ~ p(x^{t−1}|x^t) for t = T…2  (site "trajectory"),  x⁰ ~ p(x⁰|x¹)  (site "x0")
    guide:  x^t ~ q(x^t|x^{t−1}) for t = 1…T  (site "trajectory")

so ``SVI(d.model, d.guide, optax.adam(1e-3), DiffusionELBO())`` maximises the bound K (Eq 14) and
``Trace_ELBO`` on the same pair estimates the same number by plain Monte Carlo.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal, cast

import equinox as eqx
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from jaxtyping import Array, ArrayLike, Float
from numpyro import handlers
from numpyro.contrib.module import eqx_module

from ._chains import LAST_STEP, ForwardChain, ReverseChain
from ._family import AbstractFamily, BinomialFamily, GaussianFamily
from ._kernels import BinomialReverse, GaussianReverse, ReverseKernel
from ._schedules import AbstractSchedule


__all__ = ["AbstractDiffusion", "BinomialDiffusion", "GaussianDiffusion", "TRAJECTORY", "X0"]

TRAJECTORY = "trajectory"
X0 = "x0"


class AbstractDiffusion(eqx.Module):
    """A diffusion probabilistic model (paper §2): the declaration shared by every kernel family.

    Concrete models declare the fields below and say how a network becomes a reverse kernel
    (`_network_kernel`) and which family's closed forms apply (`family`).
    """

    event_shape: eqx.AbstractVar[tuple[int, ...]]
    schedule: eqx.AbstractVar[AbstractSchedule]
    network: eqx.AbstractVar[eqx.Module | None]
    kernel: eqx.AbstractVar[ReverseKernel | None]
    trainable: eqx.AbstractVar[bool]

    @property
    @abc.abstractmethod
    def family(self) -> AbstractFamily:
        """The kernel family: its closed forms serve the chains, the bound and the sampler."""

    @abc.abstractmethod
    def _network_kernel(self, network: Callable[[Array, ArrayLike], Any], betas: Float[Array, " T"]) -> ReverseKernel:
        """The reverse kernel of a (registered) network."""

    def __check_init__(self):
        if (self.network is None) == (self.kernel is None):
            raise ValueError("Give exactly one of `network` (trained) or `kernel` (a fixed reverse kernel).")
        if not self.event_shape or any(int(n) < 1 for n in self.event_shape):
            raise ValueError(f"`event_shape` must be a non-empty tuple of positive sizes, got {self.event_shape!r}.")
        if not isinstance(self.schedule, AbstractSchedule):
            raise TypeError(f"`schedule` must be a dpm_ppl schedule, got {type(self.schedule).__name__}.")

    @property
    def num_steps(self) -> int:
        """T, the number of diffusion steps."""
        return self.schedule.num_steps

    @property
    def event_ndim(self) -> int:
        return len(self.event_shape)

    @property
    def dim(self) -> int:
        """d, the number of dimensions of one example."""
        return math.prod(self.event_shape)

    # -- pieces shared by model, guide and prior --------------------------------------------

    def betas(self) -> Float[Array, " T"]:
        """β₁…β_T; inside a NumPyro program a learned schedule is the param ``"schedule$params"``."""
        schedule = self.schedule
        if self.trainable and schedule.is_learned:
            schedule = cast(AbstractSchedule, eqx_module("schedule", schedule))  # numpyro: untyped, same class
        return schedule()

    def reverse_kernel(self, betas: Float[Array, " T"]) -> ReverseKernel:
        """The reverse kernel; a network becomes the param ``"network$params"`` inside a program."""
        if self.kernel is not None:
            return self.kernel
        network = eqx_module("network", self.network) if self.trainable else self.network
        # __check_init__ makes the network present here; an Equinox network is called as (x, t) -> outputs,
        # which eqx.Module does not declare, and numpyro's eqx_module returns it untyped.
        return self._network_kernel(cast(Callable[[Array, ArrayLike], Any], network), betas)

    def _chain(self, batch_shape: tuple[int, ...]) -> tuple[Array, Array]:
        betas = self.betas()
        traj = cast(  # numpyro.sample is hinted ArrayLike; a ReverseChain draws an Array
            Array,
            numpyro.sample(
                TRAJECTORY,
                ReverseChain(self.reverse_kernel(betas), betas, batch_shape, self.event_shape, family=self.family),
            ),
        )
        x1 = traj[(..., 0) + (slice(None),) * self.event_ndim]
        return betas, x1

    def _last_step(self, x1: Array, beta1: Array) -> dist.Distribution:
        return self.family.reverse_distribution(self.family.last_step(x1, beta1)).to_event(self.event_ndim)

    def _check_data(self, x0: Array) -> None:
        if tuple(x0.shape[1:]) != self.event_shape or x0.ndim != self.event_ndim + 1:
            raise ValueError(
                f"`x0` must have shape (batch, {', '.join(map(str, self.event_shape))}) for this model, "
                f"got {tuple(x0.shape)}."
            )

    # -- the NumPyro programs ------------------------------------------------------------------

    def model(self, x0: Array | None = None, num_samples: int = 1) -> Array:
        """The reverse chain p(x⁰…x^T) (paper Eq 5): x⁰ is observed when given, sampled otherwise."""
        if x0 is not None:
            self._check_data(x0)
            num_samples = x0.shape[0]
        with numpyro.plate("data", num_samples):
            betas, x1 = self._chain((num_samples,))
            x0_site = numpyro.sample(X0, self._last_step(x1, betas[0]), obs=x0, infer={LAST_STEP: True})
            return cast(Array, x0_site)  # numpyro.sample is hinted ArrayLike: here the draw or ``x0``

    def guide(self, x0: Array, num_samples: int = 1) -> None:
        """The forward chain q(x¹…x^T | x⁰) (paper Eq 2), the variational distribution."""
        del num_samples
        self._check_data(x0)
        with numpyro.plate("data", x0.shape[0]):
            numpyro.sample(TRAJECTORY, ForwardChain(x0, self.betas(), self.event_ndim, family=self.family))

    def prior(self, batch_shape: tuple[int, ...] = ()) -> Array:
        """x⁰ ~ p(x⁰) as a sub-model for your own NumPyro programs: sample sites "trajectory" and "x0".

        Add observation sites or ``numpyro.factor`` terms on the returned x⁰ to pose a posterior
        query p(x⁰)·r(x⁰) (paper §2.5). Call it on a `bind`-frozen model.
        """
        betas, x1 = self._chain(tuple(batch_shape))
        x0 = numpyro.sample(X0, self._last_step(x1, betas[0]), infer={LAST_STEP: True})
        return cast(Array, x0)  # numpyro.sample is hinted ArrayLike: here a draw

    def bind(self, params: dict) -> AbstractDiffusion:
        """A frozen copy whose network and schedule hold ``params`` (e.g. ``svi.get_params(state)``)."""

        def modules():
            betas_schedule = eqx_module("schedule", self.schedule) if self.schedule.is_learned else self.schedule
            network = eqx_module("network", self.network) if self.network is not None else None
            return betas_schedule, network

        modules_now = handlers.substitute(modules, data=params)()
        # numpyro's handlers return the wrapped function's result untyped
        schedule, network = cast(tuple[AbstractSchedule, eqx.Module | None], modules_now)
        return dataclasses.replace(self, schedule=schedule, network=network, trainable=False)

    def param_init(self) -> dict:
        """The initial values of this model's NumPyro params, keyed as SVI keys them."""
        trace = handlers.trace(handlers.seed(self.model, 0)).get_trace(jnp.zeros((1,) + self.event_shape))
        return {name: site["value"] for name, site in trace.items() if site["type"] == "param"}


class GaussianDiffusion(AbstractDiffusion):
    """A Gaussian diffusion probabilistic model (paper §2, Table App.1).

    **Arguments:**

    - `event_shape`: the shape of one example, e.g. ``(2,)`` for the Swiss roll.
    - `schedule`: the β schedule (`dpm_ppl.GeometricSchedule` and the others); a `LearnedSchedule` is trained by SVI.
    - `network`: an Equinox network ``(x, t) -> (z_mu, z_sigma)`` turned into the reverse kernel
      by `GaussianReverse` and trained; registered with `numpyro.contrib.module.eqx_module`.
    - `kernel`: instead of a network, any fixed callable ``(x_t, t) -> (mean, variance)`` (the
      oracles of `dpm_ppl`, or your own).
    - `mean`: the mean parameterisation of `GaussianReverse` ("reference" or "paper").
    - `trainable`: whether `model`/`guide` register the network and schedule as NumPyro params
      (`bind` returns a frozen copy holding trained values).
    """

    event_shape: tuple[int, ...] = eqx.field(static=True)
    schedule: AbstractSchedule
    network: eqx.Module | None = None
    kernel: ReverseKernel | None = None
    mean: Literal["reference", "paper"] = eqx.field(static=True, default="reference")
    trainable: bool = eqx.field(static=True, default=True)

    @property
    def family(self) -> GaussianFamily:
        return GaussianFamily()

    def _network_kernel(self, network, betas):
        return GaussianReverse(network, betas, self.mean)


class BinomialDiffusion(AbstractDiffusion):
    """A binomial diffusion probabilistic model on {0, 1}ᵈ (paper Table App.1, §2.4.1, App. D.1.2).

    The same NumPyro programs as `GaussianDiffusion` (reverse chain as the model, forward chain as
    the guide, fixed last step), with Bernoulli sites. Use the fixed schedule
    `HarmonicSchedule` (β_t = 1/(T−t+1), §2.4.1): discrete states admit no frozen noise, so a
    learned schedule gets no gradient. Generic ``Trace_ELBO`` cannot reparameterise Bernoulli
    sites; `DiffusionELBO` evaluates K from closed forms.

    **Arguments:**

    - `event_shape`: the shape of one example, e.g. ``(20,)`` for the heartbeat.
    - `schedule`: the β schedule (fixed).
    - `network`: an Equinox network ``(x, t) -> z`` (one array of the event shape) turned into
      the reverse rate f_b by `BinomialReverse`, e.g. `dpm_ppl.nn.MLPNet(..., heads=1)`.
    - `kernel`: instead of a network, any fixed callable ``(x_t, t) -> logit of f_b`` (e.g.
      `dpm_ppl.BernoulliOracle`).
    - `base_rate`: p of π = ∏ B(p) and of the forward kernel (paper: 0.5 printed, 0.2 used).
    - `rate`: the rate parameterisation of `BinomialReverse` ("x0" or "paper").
    - `trainable`: as for `GaussianDiffusion`.
    """

    event_shape: tuple[int, ...] = eqx.field(static=True)
    schedule: AbstractSchedule
    network: eqx.Module | None = None
    kernel: ReverseKernel | None = None
    base_rate: float = eqx.field(static=True, default=0.5)
    rate: Literal["x0", "paper"] = eqx.field(static=True, default="x0")
    trainable: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if getattr(self.schedule, "is_learned", False):
            raise ValueError(
                "Binomial diffusion needs a fixed schedule (paper §2.4.1: no frozen noise for discrete states); "
                "use dpm_ppl.HarmonicSchedule(T)."
            )

    @property
    def family(self) -> BinomialFamily:
        return BinomialFamily(self.base_rate)

    def _network_kernel(self, network, betas):
        return BinomialReverse(network, betas, self.base_rate, self.rate)
