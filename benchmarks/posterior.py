"""Posterior benchmark: the Gaussian-mixture linear inverse problem of Cardoso et al. (MCGdiff, ICLR 2024).

The prior is a mixture of 25 unit-variance Gaussians on a 5 × 5 grid (spacing 8) repeated along the
dimensions; the observation y = A x* + σ_y ε is a random d_y × d linear map with prescribed singular
values. The posterior is again a mixture of Gaussians with the same covariance, in closed form, and so is
the evidence. Each sampler's draws are scored by the sliced Wasserstein distance to exact draws, beside
the floor (two exact sets) and the ceiling (prior draws), and log Ẑ against the exact evidence.

The prior model is the diffusion with the moment-matched oracle kernel of the mixture
(`dpm_ppl.GaussianMixtureOracle`): its p(x⁰) is close to, not equal to, the mixture (the reverse
conditionals are mixtures, the kernel matches their first two moments), so part of any sampler's
distance is the model's own gap (column *model prior* in the tables: the model's unconditional draws
against the mixture, beside the mixture-vs-mixture floor).

python -m benchmarks posterior                  # the default grid, resumed from posterior_results.jsonl
python -m benchmarks posterior --quick          # d ∈ {8, 80}, d_y ∈ {1, 2}, 3 problems
python -m benchmarks posterior --report-only    # only rewrite the tables from the results file
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from .sections import markers, splice


HERE = Path(__file__).resolve().parent
RESULTS = HERE / "posterior_results.jsonl"
MARKDOWN = HERE / "RESULTS.md"
BEGIN, END = markers("posterior")

NUM_DIRECTIONS = 100  # of the sliced Wasserstein distance
DRAWS = 2_000  # scored per method and problem, and the size of each exact set
FLOOR_PAIRS = 8  # independent exact sets whose mean distance to the scoring set is the floor
GRID = 5  # components on a GRID × GRID lattice
SPACING = 8.0
BETA_1, BETA_T = 1e-4, 0.02  # DDPM's linear schedule
TARGET_DY1, TARGET_DY2 = 2.0, 1.5  # SW / floor ratios of the default SMC (d_y = 1; d_y ≥ 2)
TARGET_CELL_SECONDS = 300.0  # 20 problems at d = 800, T = 1000


# --------------------------------------------------------------------------------------------------
# The problem and its exact posterior (float64 numpy)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One inverse problem: prior mixture Σ_k w_k N(μ_k, I_d), observation y = A x* + σ_y ε, ε ~ N(0, I)."""

    d: int
    dy: int
    seed: int
    means: np.ndarray  # (K, d)
    weights: np.ndarray  # (K,)
    A: np.ndarray  # (dy, d)
    sigma_y: float
    x_star: np.ndarray  # (d,)
    y: np.ndarray  # (dy,)


def mixture_means(d: int) -> np.ndarray:
    """μ_(i,j) = (−8i, −8j) repeated d/2 times, for i, j ∈ {−2, …, 2}: shape (25, d)."""
    if d % 2:
        raise ValueError(f"d must be even (the 2-D grid is repeated d/2 times), got {d}.")
    half = GRID // 2
    pts = np.array([(-SPACING * i, -SPACING * j) for i in range(-half, half + 1) for j in range(-half, half + 1)])
    return np.tile(pts, (1, d // 2))


def make_problem(d: int, dy: int, seed: int) -> Problem:
    """The problem of Cardoso et al. (2024, §4.1 / App.) for ``seed``: deterministic in (d, dy, seed)."""
    rng = np.random.default_rng([seed, d, dy])
    means = mixture_means(d)
    K = means.shape[0]
    z = rng.standard_normal(K)
    weights = z**2 / np.sum(z**2)
    A0 = rng.standard_normal((dy, d))
    U, _, Vt = np.linalg.svd(A0, full_matrices=False)  # U (dy, dy), Vt (dy, d)
    s = np.sort(rng.uniform(0.0, 1.0, dy))[::-1]
    A = U @ np.diag(s) @ Vt[:dy]
    sigma_y = float(rng.uniform(0.0, 1.0) * s.max())
    k = rng.choice(K, p=weights)
    x_star = means[k] + rng.standard_normal(d)
    y = A @ x_star + sigma_y * rng.standard_normal(dy)
    return Problem(d, dy, seed, means, weights, A, sigma_y, x_star, y)


def _log_normal(y: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """log N(y; mean_k, cov) for means of shape (K, m)."""
    L = np.linalg.cholesky(cov)
    z = np.linalg.solve(L, (y - mean).T)  # (m, K)
    m = cov.shape[0]
    return -0.5 * (m * math.log(2 * math.pi) + 2 * np.sum(np.log(np.diag(L))) + np.sum(z**2, axis=0))


@dataclasses.dataclass(frozen=True)
class ExactPosterior:
    """p(x | y) = Σ_k w̃_k N(m_k, Σ), Σ = (I + AᵀA/σ²)⁻¹ = I − Aᵀ G⁻¹ A with G = σ²I + AAᵀ."""

    problem: Problem
    G: np.ndarray  # (dy, dy)
    post_means: np.ndarray  # (K, d)
    log_post_weights: np.ndarray  # (K,) normalised
    log_evidence: float

    def cov(self) -> np.ndarray:
        """Σ as a dense (d, d) matrix (for checks; the sampler never forms it)."""
        A = self.problem.A
        return np.eye(A.shape[1]) - A.T @ np.linalg.solve(self.G, A)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` exact draws by Matheron's rule: x' ~ N(μ_k, I), y' = A x' + σε, x = x' + AᵀG⁻¹(y − y')."""
        p = self.problem
        k = rng.choice(len(p.weights), size=n, p=np.exp(self.log_post_weights))
        x = p.means[k] + rng.standard_normal((n, p.d))
        y_sim = x @ p.A.T + p.sigma_y * rng.standard_normal((n, p.dy))
        return x + np.linalg.solve(self.G, (p.y - y_sim).T).T @ p.A


def exact_posterior(p: Problem) -> ExactPosterior:
    """The closed-form posterior and evidence, with d_y-sized solves only (O(K·d·d_y))."""
    A, s2 = p.A, p.sigma_y**2
    G = s2 * np.eye(p.dy) + A @ A.T
    log_lik = _log_normal(p.y, p.means @ A.T, G)  # log N(y; Aμ_k, G)
    log_joint = np.log(p.weights) + log_lik
    log_evidence = float(np.logaddexp.reduce(log_joint))
    # m_k = Σ(Aᵀy/σ² + μ_k), Σv = v − Aᵀ G⁻¹ A v
    v = (A.T @ p.y)[None, :] / s2 + p.means
    post_means = v - np.linalg.solve(G, A @ v.T).T @ A
    return ExactPosterior(p, G, post_means, log_joint - log_evidence, log_evidence)


def mode_tv(x: np.ndarray, ex: ExactPosterior) -> float:
    """Total variation between the draws' share of each component (nearest posterior mean m_k) and the exact
    posterior weights w̃_k: how much of a sampler's distance is the mass it puts on the wrong modes."""
    m = ex.post_means
    d2 = np.sum(x**2, 1)[:, None] - 2.0 * x @ m.T + np.sum(m**2, 1)[None, :]
    freq = np.bincount(np.argmin(d2, axis=1), minlength=len(m)) / len(x)
    return float(0.5 * np.sum(np.abs(freq - np.exp(ex.log_post_weights))))


def prior_sample(p: Problem, rng: np.random.Generator, n: int) -> np.ndarray:
    k = rng.choice(len(p.weights), size=n, p=p.weights)
    return p.means[k] + rng.standard_normal((n, p.d))


# --------------------------------------------------------------------------------------------------
# Sliced Wasserstein


def directions(d: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniform unit vectors in R^d, shape (n, d)."""
    u = rng.standard_normal((n, d))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, dirs: np.ndarray) -> float:
    """Mean over the directions of the 1-D W1 distance between the projections of ``a`` and ``b``
    (equal sizes: the mean |sorted a − sorted b|)."""
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs equal-size samples, got {a.shape} and {b.shape}.")
    pa = np.sort(np.asarray(a, np.float64) @ dirs.T, axis=0)
    pb = np.sort(np.asarray(b, np.float64) @ dirs.T, axis=0)
    return float(np.mean(np.abs(pa - pb)))


# --------------------------------------------------------------------------------------------------
# Methods


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    label: str
    kind: str  # "smc", "perturbed", "nuts"
    options: dict
    max_d: int | None = None  # run only for d ≤ max_d
    time_cap: float | None = None  # skip the remaining problems of a cell once one took longer


def methods_for(particles: int, runs: int, quick: bool = False) -> dict[str, Method]:
    """The benchmark's rows; each scores `DRAWS` of its draws (particles × runs ≥ DRAWS)."""
    smc = dict(num_particles=particles, num_runs=runs)
    nuts = dict(num_chains=4, num_samples=min(DRAWS, particles * runs) // 4, num_warmup=200 if quick else 500)
    return {
        m.name: m
        for m in (
            Method(
                "smoothed", "SMC, twist smoothed (default)", "smc", {**smc, "twist": "smoothed", "covariance": "auto"}
            ),
            Method(
                "smoothed_diag",
                "SMC, smoothed, diagonal covariance",
                "smc",
                {**smc, "twist": "smoothed", "covariance": "diagonal"},
            ),
            Method("tds", "SMC, twist tds", "smc", {**smc, "twist": "tds"}),
            Method("noisy", "SMC, twist noisy", "smc", {**smc, "twist": "noisy"}),
            Method(
                "smoothed_rejuv",
                "SMC, smoothed, rejuvenate=2",
                "smc",
                {**smc, "twist": "smoothed", "covariance": "auto", "rejuvenate": 2},
            ),
            Method("perturbed", "Perturbed", "perturbed", dict(smc)),
            Method("nuts", "NUTS (whitened)", "nuts", nuts, max_d=8, time_cap=600.0),
        )
    }


DEFAULT_METHODS = ("smoothed", "smoothed_diag", "tds", "noisy", "smoothed_rejuv", "perturbed", "nuts")


def _covered(err: float, se: float, diagnostics: dict | None) -> bool:
    """Whether the reported 95% interval log Z ± t_{n−1}·SE (n runs; `Posterior.log_Z_interval`) holds the truth."""
    from scipy import stats

    n = (diagnostics or {}).get("num_runs") or 4
    return bool(abs(err) <= stats.t.ppf(0.975, n - 1) * se)


def _sampler(method: Method):
    import dpm_ppl as dpm

    if method.kind == "smc":
        return dpm.SMC(**method.options)
    if method.kind == "perturbed":
        return dpm.Perturbed(**method.options)
    if method.kind == "nuts":
        if not hasattr(dpm, "NUTS"):
            return None
        return dpm.NUTS(**method.options)
    raise ValueError(method.kind)


def make_model(p: Problem, T: int):
    import dpm_ppl as dpm

    betas = np.linspace(BETA_1, BETA_T, T)
    oracle_cls = getattr(dpm, "GaussianMixtureOracle", None)
    if oracle_cls is None:  # not yet exported at the top level
        from dpm_ppl._kernels import GaussianMixtureOracle as oracle_cls
    oracle = oracle_cls(betas, p.means, p.weights, std=1.0)
    return dpm.GaussianDiffusion((p.d,), dpm.ArraySchedule(betas), kernel=oracle)


def query(diffusion, y, A, sigma):
    """y ~ N(A x⁰, σ_y²): A and σ_y are observations (arguments), so every problem of a cell shares one
    compiled sampler."""
    import numpyro
    import numpyro.distributions as dist

    x0 = diffusion.prior((1,))
    numpyro.sample("y", dist.Normal(x0 @ A.T, sigma).to_event(1), obs=y)


def observations(p: Problem) -> dict:
    return {"y": np.asarray(p.y[None], np.float32), "A": np.asarray(p.A, np.float32), "sigma": np.float32(p.sigma_y)}


def _draws(post, n: int) -> np.ndarray:
    """n draws, an equal share from each chain (run), evenly spaced along it: a run's resampled draws are
    ordered by ancestor, so its first draws would be a few lineages, not a sample."""
    x = np.asarray(post.x0, np.float64)[:, :, 0]  # (chain, draw, d)
    chains, draws = x.shape[:2]
    if chains * draws < n:
        raise ValueError(f"the sampler returned {chains * draws} draws, fewer than {n}")
    per = -(-n // chains)
    idx = np.linspace(0, draws - 1, per).round().astype(int) if per <= draws else np.arange(draws)
    return np.concatenate([x[c, idx] for c in range(chains)])[:n]


def _num(x):
    if x is None:
        return None
    x = float(np.asarray(x).reshape(-1)[0])
    return x if math.isfinite(x) else None


def run_method(method: Method, p: Problem, model, key, exact: np.ndarray, dirs: np.ndarray, ex: ExactPosterior):
    """Sample one problem with one method; its numbers as a dict (None if the sampler is unavailable)."""
    import warnings

    import dpm_ppl as dpm

    sampler = _sampler(method)
    if sampler is None:
        return None
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        post = dpm.posterior(query, model, observations(p), key=key, sampler=sampler, progress=False)
    wall = time.perf_counter() - t0
    x = _draws(post, len(exact))
    log_Z = _num(post.log_Z)
    se = _num(post.log_Z_stderr)
    return {
        "sw": sliced_wasserstein(x, exact, dirs),
        "log_Z": log_Z,
        "log_Z_se": se,
        "log_Z_err": None if log_Z is None else log_Z - ex.log_evidence,
        "covered": None if log_Z is None or se is None else _covered(log_Z - ex.log_evidence, se, post.diagnostics),
        "seconds": wall,
        "sampler_seconds": float(post.seconds),
        "ess_min": _num(post.ess_min),
        "khat": _num(post.khat),
        "rhat_max": _num(post.rhat_max),
        "diagnostics": {k: _num(v) for k, v in (post.diagnostics or {}).items()},
        "num_warnings": len(post.warnings),
        "mean_err": float(np.linalg.norm(x.mean(0) - exact.mean(0))),
        "mode_tv": mode_tv(x, ex),
    }


# --------------------------------------------------------------------------------------------------
# The run, its resumable JSON lines and the report


@dataclasses.dataclass(frozen=True)
class Settings:
    dims: tuple[int, ...]
    dys: tuple[int, ...]
    problems: int
    T: int
    methods: tuple[str, ...]
    particles: int
    runs: int
    extra: tuple[tuple[int, int, int], ...]  # (d, dy, T) cells beside the grid
    quick: bool = False

    @property
    def draws(self) -> int:
        """Draws scored per method and problem (an equal share from each run or chain), and the size of each
        exact set: `DRAWS`, or particles × runs where that is fewer (tiny test settings)."""
        return min(DRAWS, self.particles * self.runs)

    def cells(self) -> list[tuple[int, int, int]]:
        cells = [(d, dy, self.T) for d in self.dims for dy in self.dys]
        return cells + [c for c in self.extra if c not in cells]


def _load(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a crash: dropped, its problem re-run
                continue
    return rows


def _key(row: dict) -> tuple:
    return (row["d"], row["dy"], row["T"], row["seed"], row["method"], row["config"])


def _config(method: Method) -> str:
    return json.dumps(method.options, sort_keys=True)


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


MODEL_GAP_SEEDS = 3  # the model's unconditional draws (a full sampling run) for the first seeds of a cell only


def floor_of(p: Problem, T: int, ex: ExactPosterior, exact: np.ndarray, dirs: np.ndarray) -> dict:
    """The floor: the mean SW distance of `FLOOR_PAIRS` independent exact sets to the scoring set, what a perfect
    sampler scores on average. One pair alone is too noisy where the posterior is multimodal (its mode shares are
    binomial draws): measured 0.055 and 0.33 for two pairs of the same d = 80, d_y = 1 problem."""
    rng = np.random.default_rng([p.seed, p.d, p.dy, T, 2])
    dists = [sliced_wasserstein(ex.sample(rng, len(exact)), exact, dirs) for _ in range(FLOOR_PAIRS)]
    return {"floor": float(np.mean(dists)), "floor_sd": float(np.std(dists, ddof=1)), "floor_pairs": FLOOR_PAIRS}


def reference_row(p: Problem, T: int, ex: ExactPosterior, exact: np.ndarray, dirs: np.ndarray, rng) -> dict:
    """The floor (two exact sets), the ceiling (prior draws), and, for the first seeds, the model's own gap."""
    n = len(exact)
    row = {
        **floor_of(p, T, ex, exact, dirs),
        "ceiling": sliced_wasserstein(prior_sample(p, rng, n), exact, dirs),
        "prior_floor": sliced_wasserstein(prior_sample(p, rng, n), prior_sample(p, rng, n), dirs),
        "mode_tv_floor": mode_tv(exact, ex),
        "model_gap": None,
        "model_seconds": None,
    }
    if p.seed < MODEL_GAP_SEEDS:
        import jax

        import dpm_ppl as dpm

        t0 = time.perf_counter()
        draws = np.asarray(dpm.sample(make_model(p, T), jax.random.key(p.seed), n).x0, np.float64)
        row["model_seconds"] = time.perf_counter() - t0
        row["model_gap"] = sliced_wasserstein(draws, prior_sample(p, rng, n), dirs)
    return row


def run(settings: Settings, out: Path, log=_log) -> list[dict]:
    """Run every (problem, cell, method) not yet in ``out``; append each as one JSON line as it finishes.

    Problems are the outer loop (seed 0 of every cell, then seed 1, …), so a run stopped early has
    covered every cell evenly; a re-run with the same settings resumes where it stopped.
    """
    import jax

    rows = _load(out)
    done = {_key(r) for r in rows}
    methods = methods_for(settings.particles, settings.runs, settings.quick)
    unknown = [m for m in settings.methods if m not in methods]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {sorted(methods)}")
    chosen = [methods[m] for m in settings.methods]
    # a method over its time cap in a cell stays skipped there, across re-runs too
    over_cap = {
        (r["d"], r["dy"], r["T"], r["method"])
        for r in rows
        if r["method"] in methods
        and methods[r["method"]].time_cap is not None
        and r.get("seconds", 0) > methods[r["method"]].time_cap
    }
    unavailable: set[str] = set()
    stale = {_key(r): r for r in rows if r["method"] == "reference" and "floor_pairs" not in r}
    for seed in range(settings.problems):
        for d, dy, T in settings.cells():
            p = make_problem(d, dy, seed)
            ex = exact_posterior(p)
            rng = np.random.default_rng([seed, d, dy, T, 1])
            dirs = directions(d, NUM_DIRECTIONS, rng)
            exact = ex.sample(rng, settings.draws)
            base = dict(d=d, dy=dy, T=T, seed=seed, log_evidence=ex.log_evidence)
            where = f"d={d} dy={dy} T={T} problem {seed + 1}/{settings.problems}"
            ref = {**base, "method": "reference", "config": f"draws={settings.draws}"}
            if _key(ref) in stale:  # written before the mode TV or the mean floor: add them (deterministic sets)
                old = stale.pop(_key(ref))
                row = {**old, "mode_tv_floor": mode_tv(exact, ex), "floor_one_pair": old["floor"]}
                row.update(floor_of(p, T, ex, exact, dirs))
                _append(out, row)
            if _key(ref) not in done:
                row = {**ref, **reference_row(p, T, ex, exact, dirs, rng)}
                _append(out, row)
                done.add(_key(row))
                log(f"{where} floor {row['floor']:.3f} ceiling {row['ceiling']:.3f} model prior {row['model_gap']}")
            model = None
            for m in chosen:
                if m.max_d is not None and d > m.max_d or m.name in unavailable or (d, dy, T, m.name) in over_cap:
                    continue
                row_key = {**base, "method": m.name, "config": _config(m)}
                if _key(row_key) in done:
                    continue
                if model is None:
                    model = make_model(p, T)
                res = run_method(m, p, model, jax.random.key(10_000 * seed + 7), exact, dirs, ex)
                if res is None:
                    unavailable.add(m.name)
                    log(f"{m.name}: not available in this dpm_ppl (no dpm_ppl.NUTS yet), skipped")
                    continue
                row = {**row_key, **res}
                _append(out, row)
                done.add(_key(row))
                err, se = res["log_Z_err"], res["log_Z_se"]
                log(
                    f"{where} {m.name:15s} SW {res['sw']:.3f} log Z − exact "
                    + ("—" if err is None else f"{err:+.2f} ± {2 * (se or math.nan):.2f}")
                    + f" {res['seconds']:.1f} s"
                )
                if m.time_cap is not None and res["seconds"] > m.time_cap:
                    over_cap.add((d, dy, T, m.name))
                    log(
                        f"  {m.name} took {res['seconds']:.0f} s > {m.time_cap:.0f} s: skipped in the rest of this cell"
                    )
    return _load(out)


# --------------------------------------------------------------------------------------------------
# Tables


def _ci(values) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None], np.float64)
    if len(v) == 0:
        return math.nan, math.nan, 0
    half = 1.96 * v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else math.nan
    return float(v.mean()), float(half), len(v)


def _fmt(mean: float, half: float, digits: int = 3, fixed: bool = False) -> str:
    if not math.isfinite(mean):
        return "—"
    spec = f".{digits}f" if fixed else f".{digits}g"
    if not math.isfinite(half):
        return format(mean, spec)
    return f"{format(mean, spec)} ± {format(half, spec if fixed else '.2g')}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def summarise(rows: list[dict], settings: Settings) -> dict:
    """Per cell: the reference numbers and, per method, SW, log Z error, coverage, seconds."""
    methods = methods_for(settings.particles, settings.runs, settings.quick)
    configs = {m.name: _config(m) for m in methods.values()}
    latest: dict[tuple, dict] = {}
    for r in rows:
        latest[_key(r)] = r  # a re-run of the same problem replaces the earlier line
    cells = {}
    for d, dy, T in settings.cells():
        seeds = set(range(settings.problems))
        cell = [r for r in latest.values() if (r["d"], r["dy"], r["T"]) == (d, dy, T) and r["seed"] in seeds]
        ref = [r for r in cell if r["method"] == "reference" and r["config"] == f"draws={settings.draws}"]
        if not ref:
            continue
        c = {
            "n_ref": len(ref),
            "floor": _ci(r["floor"] for r in ref),
            "ceiling": _ci(r["ceiling"] for r in ref),
            "prior_floor": _ci(r.get("prior_floor") for r in ref),
            "model_gap": _ci(r.get("model_gap") for r in ref),
            "mode_tv_floor": _ci(r.get("mode_tv_floor") for r in ref),
            "floor_by_seed": {r["seed"]: r["floor"] for r in ref},
            "methods": {},
        }
        for name in settings.methods:
            if name not in methods:
                continue
            mr = [r for r in cell if r["method"] == name and r["config"] == configs[name]]
            if not mr:
                continue
            cov = [
                _covered(r["log_Z_err"], r["log_Z_se"], r.get("diagnostics"))
                for r in mr
                if r.get("log_Z_err") is not None and r.get("log_Z_se") is not None
            ]
            ratio = [r["sw"] / c["floor_by_seed"][r["seed"]] for r in mr if r["seed"] in c["floor_by_seed"]]
            c["methods"][name] = {
                "n": len(mr),
                "sw": _ci(r["sw"] for r in mr),
                "ratio": _ci(ratio),
                "mode_tv": _ci(r.get("mode_tv") for r in mr),
                "log_Z_err": _ci(r.get("log_Z_err") for r in mr),
                "coverage": (float(np.mean(cov)) if cov else math.nan, len(cov)),
                "seconds": _ci(r["seconds"] for r in mr),
                "total_seconds": float(sum(r["seconds"] for r in mr)),
                "warned": float(np.mean([r.get("num_warnings", 0) > 0 for r in mr])),
            }
        cells[(d, dy, T)] = c
    return cells


def _default_smc(cells: dict, cell: tuple[int, int, int]) -> tuple[dict | None, dict | None]:
    """A cell's results and its default SMC's (None where not measured)."""
    c = cells.get(cell)
    return c, None if c is None else c["methods"].get("smoothed")


def targets(cells: dict, settings: Settings) -> list[list[str]]:
    """(target, measured, met) for every cell of the grid; cells without default-SMC results say so."""
    out = []
    grid = [(d, dy, settings.T) for d in settings.dims for dy in settings.dys]
    for d, dy, T in grid:
        bar = TARGET_DY1 if dy == 1 else TARGET_DY2
        what = f"default SMC SW within {bar}× the exact-vs-exact floor, d = {d}, d_y = {dy}, T = {T}"
        c, m = _default_smc(cells, (d, dy, T))
        if m is None:
            out.append([what, "not measured", "—"])
            continue
        ratio = m["ratio"][0]
        gap = c["model_gap"][0] / c["prior_floor"][0] if c["model_gap"][2] else math.nan
        note = f"; model prior alone {gap:.1f}× its floor" if math.isfinite(gap) else ""
        out.append(
            [
                what,
                f"{_fmt(*m['ratio'][:2], digits=2, fixed=True)}× (n = {m['n']}{note})",
                "yes" if ratio <= bar else "**no**",
            ]
        )
    for d, dy, T in grid:
        if d != 800 or T != 1000:
            continue
        what = f"default SMC, 20 problems at d = 800, d_y = {dy}, T = 1000 within {TARGET_CELL_SECONDS / 60:.0f} min"
        c, m = _default_smc(cells, (d, dy, T))
        if m is None:
            out.append([what, "not measured", "—"])
            continue
        per20 = m["seconds"][0] * 20
        out.append(
            [
                what,
                f"{per20 / 60:.0f} min ({m['seconds'][0]:.0f} s/problem × 20, n = {m['n']})",
                "yes" if per20 <= TARGET_CELL_SECONDS else "**no**",
            ]
        )
    return out


def _settings_line(settings: Settings, nuts: Method) -> str:
    grid = f"grid d ∈ {{{', '.join(map(str, settings.dims))}}} × d_y ∈ {{{', '.join(map(str, settings.dys))}}}"
    extra = f", plus cells (d, d_y, T) = {', '.join(map(str, settings.extra))}" if settings.extra else ""
    return (
        f"{grid}, T = {settings.T}{extra}; up to {settings.problems} problems per cell "
        f"(seeds 0…{settings.problems - 1}); "
        f"DDPM linear β from {BETA_1} to {BETA_T}; {settings.draws} draws per method; SMC and Perturbed: "
        f"{settings.particles} particles × {settings.runs} runs (log Z's error bar from the spread over runs); "
        f"NUTS: {nuts.options} (d ≤ {nuts.max_d}; a cell's remaining problems skipped after one takes > "
        f"{nuts.time_cap:.0f} s)"
    )


def render(rows: list[dict], settings: Settings, meta: dict) -> str:
    methods = methods_for(settings.particles, settings.runs, settings.quick)
    cells = summarise(rows, settings)
    L = [
        BEGIN,
        "## Posterior: Gaussian-mixture linear inverse problem (MCGdiff)",
        "",
        f"Written by `{meta['command']}` — regenerate with it (`--report-only` rewrites the tables from "
        f"`{meta['results']}`, which keeps one JSON line per finished problem and method and lets a re-run resume).",
        "",
        f"- date: {meta['date']}; git: {meta['git']}"
        + (
            " (tables rewritten with `--report-only`; the problems were run earlier, see the notes)"
            if meta["report_only"]
            else ""
        ),
        f"- machine: {meta['machine']}"
        + (
            ""
            if meta["report_only"]
            else f"; load average (1 min) at start / end: {meta['load_start']} / {meta['load_end']}"
        ),
        f"- device: {meta['device']}",
        f"- settings: {_settings_line(settings, methods['nuts'])}",
        "",
        "The problem (Cardoso et al., *Monte Carlo guided diffusion for Bayesian linear inverse problems*, ICLR 2024): "
        "prior Σ_k w_k N(μ_k, I_d) with 25 means μ_(i,j) = (−8i, −8j) repeated d/2 times, i, j ∈ {−2…2}, "
        "w_k ∝ z_k², z ~ N(0, I₂₅); A = U diag(s) Vᵀ from the SVD of a Gaussian d_y × d matrix with s ~ U(0,1) sorted; "
        "σ_y = u·max s, u ~ U(0,1); y = A x* + σ_y ε, x* from the prior. Exact posterior Σ_k w̃_k N(m_k, Σ), "
        "Σ = I − Aᵀ(σ_y²I + AAᵀ)⁻¹A, exact evidence log Σ_k w_k N(y; Aμ_k, σ_y²I + AAᵀ) (float64, "
        "`benchmarks/posterior.py`). The model: `GaussianDiffusion((d,), ArraySchedule(β), "
        "kernel=GaussianMixtureOracle(β, μ, w))`; the query observes `y ~ Normal(x0 @ A.T, σ_y)`.",
        "",
        f"**SW**: sliced Wasserstein distance of a method's {settings.draws} draws to {settings.draws} exact draws "
        f"(mean over {NUM_DIRECTIONS} random unit directions, the same for every method of a problem, of the 1-D W1 "
        "distance), "
        "mean ± 1.96·sd/√n over the problems. *floor*: the mean distance of 8 independent exact sets to the "
        "scoring set (what a perfect sampler scores on average; one pair alone is too noisy for multimodal "
        "posteriors); *ceiling*: prior draws; "
        "*model prior*: the model's unconditional draws (`dpm_ppl.sample`) against mixture draws, beside *prior floor* "
        "(two mixture sets): how far the diffusion's own p(x⁰) is from the mixture, a gap no sampler can close. "
        "**ratio**: mean over problems of SW / that problem's floor. **mode TV**: total variation between the "
        "draws' shares of the components (each draw assigned to the nearest posterior mean m_k) and the exact "
        "weights w̃_k — the part of the distance that is mass on the wrong modes (*mode TV floor*: an exact set's). "
        "**log Z − exact**: mean ± 1.96·sd/√n; "
        "**covered**: the fraction of problems whose reported 95% interval (`Posterior.log_Z_interval`: "
        "± t_{runs−1}·SE) contains the exact log evidence. **s/problem**: "
        "wall time of `dpm_ppl.posterior`, compilation included: A, σ_y and y are the query's observations and "
        "the mixture the model's arrays, so a process compiles each method once per cell shape and its later "
        "problems reuse the program (rows measured before that, until 2026-12-01 23:00 UTC, compiled per problem).",
        "",
    ]
    L += ["### Targets", ""]
    trows = targets(cells, settings)
    L += _table(["target", "measured", "met"], trows) if trows else ["(no default-SMC cells measured yet)"]
    L += ["", "### Per cell", ""]
    for (d, dy, T), c in cells.items():
        L += [
            f"**d = {d}, d_y = {dy}, T = {T}** — floor {_fmt(*c['floor'][:2])}, ceiling {_fmt(*c['ceiling'][:2])}, "
            f"model prior {_fmt(*c['model_gap'][:2])} (prior floor {_fmt(*c['prior_floor'][:2])}), "
            f"mode TV floor {_fmt(*c['mode_tv_floor'][:2], digits=3, fixed=True)}; "
            f"{c['n_ref']} problems",
            "",
        ]
        rows_ = []
        for name, m in c["methods"].items():
            cov, ncov = m["coverage"]
            rows_.append(
                [
                    methods[name].label,
                    str(m["n"]),
                    _fmt(*m["sw"][:2]),
                    _fmt(*m["ratio"][:2]),
                    _fmt(*m["mode_tv"][:2], digits=3, fixed=True),
                    _fmt(*m["log_Z_err"][:2]),
                    f"{cov:.0%}" if ncov else "—",
                    _fmt(*m["seconds"][:2]),
                ]
            )
        L += _table(["method", "n", "SW", "ratio to floor", "mode TV", "log Z − exact", "covered", "s/problem"], rows_)
        L += [""]
    notes = meta.get("notes")
    if notes:
        L += ["### Notes", "", *notes, ""]
    L += [END]
    return "\n".join(L)


# --------------------------------------------------------------------------------------------------
# Command line


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(v) for v in s.split(",") if v.strip())


def _cells(s: str) -> tuple[tuple[int, int, int], ...]:
    if not s or s == "none":
        return ()
    out = []
    for part in s.split(";"):
        d, dy, T = (int(v) for v in part.split(","))
        out.append((d, dy, T))
    return tuple(out)


def _meta(command: str, results: Path, load_start: str) -> dict:
    import jax

    from .__main__ import _git, _machine

    return {
        "command": command,
        "results": os.path.relpath(results, HERE.parent) if results.is_absolute() else str(results),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git": _git(),
        "machine": _machine(),
        "load_start": load_start,
        "load_end": f"{os.getloadavg()[0]:.1f}",
        "device": ", ".join(str(d) for d in jax.devices()),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks posterior", description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=_ints, default=None, help="dimensions d (even), e.g. 8,80,800")
    p.add_argument("--dys", type=_ints, default=None, help="observation sizes d_y, e.g. 1,2,4")
    p.add_argument("--problems", type=int, default=None, help="problems per cell (seeds 0…n−1)")
    p.add_argument("--T", type=int, default=None, help="diffusion steps of the grid")
    p.add_argument(
        "--extra",
        type=_cells,
        default=None,
        help="cells beside the grid as 'd,dy,T;…' (default '80,2,100'; 'none' for none)",
    )
    p.add_argument("--methods", default=None, help=f"comma-separated, from {','.join(DEFAULT_METHODS)}")
    p.add_argument(
        "--particles", type=int, default=500, help="SMC / Perturbed particles per run (× runs: the 2,000 draws)"
    )
    p.add_argument("--runs", type=int, default=4, help="SMC / Perturbed independent runs")
    p.add_argument(
        "--quick", action="store_true", help="d ∈ {8, 80}, d_y ∈ {1, 2}, 3 problems, T = 1000, no extra cell"
    )
    p.add_argument("--results", "--out", dest="results", type=Path, default=RESULTS, help="the JSON-lines results file")
    p.add_argument(
        "--markdown", type=Path, default=MARKDOWN, help="the Markdown file whose posterior section is rewritten"
    )
    p.add_argument("--report-only", action="store_true", help="rewrite the tables from the results file, run nothing")
    p.add_argument("--note", action="append", default=[], help="a line for the report's notes (repeatable)")
    return p


def settings_from(args) -> Settings:
    q = args.quick
    methods = tuple(args.methods.split(",")) if args.methods else DEFAULT_METHODS
    return Settings(
        dims=args.dims or ((8, 80) if q else (8, 80, 800)),
        dys=args.dys or ((1, 2) if q else (1, 2, 4)),
        problems=args.problems or (3 if q else 20),
        T=args.T or 1000,
        methods=methods,
        particles=args.particles,
        runs=args.runs,
        extra=args.extra if args.extra is not None else (() if q else ((80, 2, 100),)),
        quick=q,
    )


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser().parse_args(argv)
    settings = settings_from(args)
    shown = [a for i, a in enumerate(argv) if a != "--note" and (i == 0 or argv[i - 1] != "--note")]
    command = " ".join(["python -m benchmarks posterior", *shown])  # the notes are printed apart
    load_start = f"{os.getloadavg()[0]:.1f}"
    t0 = time.perf_counter()
    if not args.report_only:
        # Ctrl-C: every finished problem is already on disk; stop cleanly and write the tables so far
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            run(settings, args.results)
    rows = _load(args.results)
    meta = _meta(command.strip(), args.results, load_start)
    meta["notes"] = args.note
    meta["report_only"] = args.report_only
    section = render(rows, settings, meta)
    print(section)
    text = args.markdown.read_text() if args.markdown.exists() else "# Benchmark results\n"
    args.markdown.write_text(splice(text, section, "posterior"))
    _log(f"wrote the posterior section of {args.markdown} ({time.perf_counter() - t0:.0f} s)")
    return {"rows": rows, "cells": summarise(rows, settings), "settings": settings}
