"""Pareto-smoothed importance sampling's k̂ (Vehtari et al. 2024) of a set of log weights, right for discrete
weights too.

k̂ is fitted by `arviz_stats` to the ⌊3√M⌋ largest weights. Discrete weights tie: many trajectories of a
binary model share a log weight to float rounding, and a generalised-Pareto fit to a tail of tied values reads
the ties as an infinitely heavy tail (k̂ ≫ 1 on weights of relative variance < 1). Ties at working precision are
therefore spread over the tail's own spacing before the fit, which leaves continuous weights unchanged.
"""

from __future__ import annotations

import math

import numpy as np
from jaxtyping import Array, Float


__all__ = ["KHAT_THRESHOLD", "khat_from_top", "num_top", "psis_khat"]

KHAT_THRESHOLD = 0.7  # PSIS: above it the importance-sampling estimate is unreliable (Vehtari et al. 2024)


def _tail_length(num_trajectories: int) -> int:
    """The PSIS tail length arviz-stats uses for M draws at r_eff = 1 (Vehtari et al. 2024, §3)."""
    M = num_trajectories
    return int(math.floor(3 * math.sqrt(M))) if M > 225 else M // 5


def num_top(num_trajectories: int) -> int:
    """How many of the largest log weights PSIS needs: the tail and the cutoff just below it."""
    return min(_tail_length(num_trajectories) + 1, num_trajectories)


# Ties at working precision (see `_khat_from_top`): log weights whose consecutive differences and whose
# spread are within _TIE_ULPS units of roundoff of their magnitude, and whose nearest other log weights are
# at least _TIE_ISOLATION times that spread away, are one atom of the weights' distribution.
_TIE_ULPS = 1024
_TIE_ISOLATION = 100.0


def _working_eps(values: np.ndarray) -> float:
    """The unit roundoff of the precision the log weights were computed in: float32's if every value is a float32."""
    is_float32 = np.array_equal(values.astype(np.float32).astype(np.float64), values)
    return float(np.finfo(np.float32 if is_float32 else np.float64).eps)


def _tied_groups(top: np.ndarray) -> list[tuple[int, int]]:
    """The index ranges [a, b) of `top` (finite, descending) that are atoms: ≥ 2 log weights equal at working precision.

    A run of log weights whose consecutive gaps are ≤ δ = _TIE_ULPS·ε·max(1, max|log w|) (ε the working
    precision's, `_working_eps`) is an atom if its whole width is ≤ δ as well and the log weights next to it
    are ≥ _TIE_ISOLATION × its width away (only the one above for the last run, whose lower neighbour is not
    in `top`), so exact ties more than δ from other values are atoms; the width and isolation conditions keep
    dense continuous weights, whose spacings can be comparable to δ at large |log w| in float32, unmerged.
    """
    tol = _TIE_ULPS * _working_eps(top) * max(1.0, float(np.abs(top).max()))
    gaps = top[:-1] - top[1:]
    cuts = np.flatnonzero(gaps > tol) + 1
    starts, ends = np.r_[0, cuts], np.r_[cuts, len(top)]
    runs = (ends - starts >= 2) & (top[starts] - top[ends - 1] <= tol)
    groups = []
    for a, b in zip(starts[runs], ends[runs]):
        width = top[a] - top[b - 1]
        neighbours = ([gaps[a - 1]] if a > 0 else []) + ([gaps[b - 1]] if b < len(top) else [])
        if all(g >= _TIE_ISOLATION * width for g in neighbours):
            groups.append((int(a), int(b)))
    return groups


def _spread_ties(top: np.ndarray, groups: list[tuple[int, int]]) -> np.ndarray:
    """Spread each atom of `top` (descending) evenly over a window of the tail's mean spacing; re-sorted.

    The distinct log weights of `top` (the atoms' means and the untied values) have mean spacing
    Δ = (max − min)/(number − 1). The n members of an atom at value v (their mean) are put at the mid-rank
    quantiles of U(v − Δ/2, v + Δ/2): v + Δ/2 − (i − ½)Δ/n, i = 1…n, the deterministic counterpart of the
    continuous extension v + (U − ½)Δ of lattice data of step Δ. Untied log weights are unchanged.
    """
    starts = dict(groups)
    blocks, i = [], 0
    while i < len(top):
        blocks.append((i, starts.get(i, i + 1)))
        i = blocks[-1][1]
    values = np.array([top[a:b].mean() for a, b in blocks])
    step = (values[0] - values[-1]) / (len(values) - 1)  # len(blocks) ≥ 2: one block over `top` is a constant tail
    out = top.copy()
    for (a, b), value in zip(blocks, values):
        if b - a > 1:
            out[a:b] = value + step / 2 - (np.arange(b - a) + 0.5) / (b - a) * step
    return -np.sort(-out)


def khat_from_top(top: np.ndarray, num_trajectories: int) -> float:
    """PSIS k̂ of M weights from their largest log weights (descending): arviz-stats' `psislw`, ties spread first.

    PSIS (Vehtari et al. 2024, "Pareto smoothed importance sampling", JMLR 25(72)) fits a generalized
    Pareto distribution to the n_tail = ⌊3√M⌋ largest weights' exceedances over the next one, the cutoff.
    It reads only the tail and the cutoff, so the other M − len(top) entries are filled with the cutoff
    (a transient host array of M floats per datum). `psislw` smooths log *ratios* r with weights exp(−r)
    (LOO's convention), so it is given −log w: `psislw(log_w)` would fit the left tail (the ecosystem
    notes' sign trap).

    **Ties.** The fit assumes a continuous tail. Discrete weights (e.g. binomial diffusion on a few bits:
    few distinct trajectories) have atoms, many log weights equal exactly or to float rounding: an atom at
    the cutoff makes most exceedances ~0 and the fit fails (NaN) or gives k̂ ≫ 1 for weights of small
    variance. So each atom (`_tied_groups`: equal at working precision, isolated) is first spread
    deterministically, in log w, over a window as wide as the mean spacing Δ of the distinct log weights
    of `top`, at mid-rank quantiles (`_spread_ties`): the deterministic counterpart of the continuous
    extension of discrete data by uniform jitter (Denuit & Lambert 2005, J. Multivariate Anal. 93). Each
    atom becomes a narrow bounded block, so a bounded discrete tail gets k̂ ≤ 0 or small, while a lattice
    tail such as w = 2^J, P(J = j) ∝ 2^(−αj) (Δ ≈ log 2) becomes a piecewise-uniform density in log w with
    the same tail index k = 1/α. Distinct values closer than Δ may interleave; windows of half the gaps to
    the neighbouring values would keep their order, but then a large atom next to a close small one stays
    a spike (measured on 4-bit oracle weights: k̂ up to 2.7 at relative variance ≤ 7). Untied log weights
    are untouched, so continuous weights without ties give `psislw`'s k̂ exactly. The atom at the cutoff
    is seen only down to the cutoff; its visible part is spread over the whole window. A tail that is one
    atom is constant: −inf, as is an exactly constant tail. With few atoms in the tail (e.g. 3) k̂
    describes their spacing and masses, and can exceed 0.7 for bounded weights until M reaches them.
    """
    n_tail = _tail_length(num_trajectories)
    if n_tail < 5:
        return float("nan")
    top = np.asarray(top, np.float64)
    if top[0] - top[n_tail - 1] < np.finfo(float).tiny:
        return float("-inf")
    if np.isfinite(top).all():
        groups = _tied_groups(top)
        if groups and groups[0][0] == 0 and groups[0][1] >= n_tail:
            return float("-inf")  # the whole tail is one atom
        if groups:
            top = _spread_ties(top, groups)
    full = np.concatenate([top, np.full(num_trajectories - len(top), top[-1])])
    from arviz_stats.base import array_stats  # deferred: arviz-stats imports xarray and pandas (~1 s)

    # arviz_stats leaves `r_eff` unannotated, so its default 1 makes it an int
    _, khat = array_stats.psislw(-full, r_eff=1.0)  # pyright: ignore[reportArgumentType]
    return float(khat)


def psis_khat(log_w: Float[Array, "*batch M"] | np.ndarray) -> np.ndarray:
    """The PSIS Pareto k̂ of importance weights exp(log_w) along the last axis (arviz-stats).

    k̂ estimates the shape of the weights' right tail: the weights have finite variance for k < ½,
    and the estimate is reliable for k̂ < 0.7 (Vehtari et al. 2024). Log weights tied exactly or to
    float rounding (discrete weights) are spread over the tail's spacing before the fit (`_khat_from_top`).
    NaN when M < 25 or the fit fails, −inf for a constant tail (constant to working precision).
    """
    log_w = np.asarray(log_w, np.float64)
    M = log_w.shape[-1]
    top = -np.sort(-log_w, axis=-1)[..., : num_top(M)]
    flat = top.reshape(-1, top.shape[-1])
    return np.array([khat_from_top(row, M) for row in flat]).reshape(log_w.shape[:-1])
