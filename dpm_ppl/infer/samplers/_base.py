"""The sampler interface: one small class per sampler, owning its options and their validation."""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
from jaxtyping import PRNGKeyArray

from .._query import LogR
from ._result import Posterior


__all__ = ["AbstractSampler"]


class AbstractSampler(eqx.Module):
    """A sampler of p̃(x⁰) ∝ p(x⁰)·r(x⁰) (paper §2.5) for `dpm_ppl.posterior`.

    A concrete sampler declares its options as fields (validated in ``__check_init__``, so bad
    options fail at construction), says in `check` which queries it cannot serve, and samples in
    `run`.
    """

    name: ClassVar[str]

    def check(self, log_r: LogR) -> None:
        """Raise `dpm_ppl.QueryError` when this sampler cannot serve the query (before any sampling)."""
        del log_r

    @abc.abstractmethod
    def run(self, log_r: LogR, key: PRNGKeyArray, progress: bool = True) -> Posterior:
        """Sample the query's posterior."""
