"""The posterior benchmark (benchmarks/posterior.py) scores samplers against the right answer: its closed-form
posterior and evidence agree with dense algebra and brute-force Monte Carlo, its sliced Wasserstein distance
separates exact draws from prior draws, its problems are deterministic in their seed, and the command runs
end to end, writes its JSON lines and resumes from them."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed: the checkout's
from benchmarks import posterior as P  # noqa: E402
from benchmarks import sections as S  # noqa: E402
from benchmarks.__main__ import main  # noqa: E402


def test_problem_is_deterministic_in_its_seed():
    a, b, c = P.make_problem(8, 2, 3), P.make_problem(8, 2, 3), P.make_problem(8, 2, 4)
    for name in ("weights", "A", "x_star", "y"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert not np.allclose(getattr(a, name), getattr(c, name))
    assert a.sigma_y == b.sigma_y != c.sigma_y
    # the construction: 25 unit-variance components on the grid, singular values in (0, 1) descending
    assert a.means.shape == (25, 8) and {tuple(m[:2]) for m in a.means} == {
        (-8.0 * i, -8.0 * j) for i in range(-2, 3) for j in range(-2, 3)
    }
    np.testing.assert_array_equal(a.means[:, 2:4], a.means[:, :2])
    s = np.linalg.svd(a.A, compute_uv=False)
    assert np.all((0 < s) & (s < 1)) and a.weights.sum() == pytest.approx(1.0)
    assert 0 < a.sigma_y <= s.max()
    with pytest.raises(ValueError, match="even"):
        P.mixture_means(7)


@pytest.mark.parametrize("dy", [1, 4])
def test_woodbury_posterior_equals_dense_algebra(dy):
    p = P.make_problem(8, dy, 1)
    ex = P.exact_posterior(p)
    A, s2 = p.A, p.sigma_y**2
    cov = np.linalg.inv(np.eye(8) + A.T @ A / s2)
    np.testing.assert_allclose(ex.cov(), cov, atol=1e-10)
    np.testing.assert_allclose(ex.post_means, (cov @ ((A.T @ p.y / s2)[:, None] + p.means.T)).T, atol=1e-9)
    # evidence and weights with dense d-dimensional Gaussians: y = A x + ε, x ~ N(μ_k, I)
    log_lik = np.array([stats.multivariate_normal(A @ m, s2 * np.eye(dy) + A @ A.T).logpdf(p.y) for m in p.means])
    log_joint = np.log(p.weights) + log_lik
    assert ex.log_evidence == pytest.approx(np.logaddexp.reduce(log_joint), abs=1e-10)
    np.testing.assert_allclose(ex.log_post_weights, log_joint - np.logaddexp.reduce(log_joint), atol=1e-10)
    # Matheron draws have the mixture's mean and covariance
    x = ex.sample(np.random.default_rng(0), 100_000)
    w = np.exp(ex.log_post_weights)
    mean = w @ ex.post_means
    spread = (ex.post_means - mean).T @ (w[:, None] * (ex.post_means - mean))
    se = np.sqrt(np.diag(cov + spread) / len(x))
    assert np.all(np.abs(x.mean(0) - mean) < 5 * se)
    np.testing.assert_allclose(np.cov(x.T), cov + spread, atol=0.05 * np.abs(cov + spread).max())


def test_posterior_and_evidence_match_importance_reweighted_prior_draws():
    """d = 2 (one μ coordinate pair): the posterior by reweighting prior draws by N(y; Ax, σ²), the evidence as
    the mean of those weights, within their Monte Carlo standard errors."""
    p = P.make_problem(2, 1, 5)
    ex = P.exact_posterior(p)
    rng = np.random.default_rng(1)
    x = P.prior_sample(p, rng, 400_000)
    lik = stats.norm.pdf(p.y[0], x @ p.A[0], p.sigma_y)
    Z, Z_se = lik.mean(), lik.std() / math.sqrt(len(lik))
    assert abs(math.exp(ex.log_evidence) - Z) < 5 * Z_se
    w = lik / lik.sum()
    ess = 1.0 / np.sum(w**2)
    assert ess > 1_000
    post = ex.sample(rng, 400_000)
    for f in (lambda z: z[:, 0], lambda z: z[:, 1], lambda z: z[:, 0] * z[:, 1], lambda z: z[:, 0] ** 2):
        is_mean = np.sum(w * f(x))
        sd = np.sqrt(np.sum(w * (f(x) - is_mean) ** 2))
        assert abs(f(post).mean() - is_mean) < 5 * sd / math.sqrt(ess) + 1e-9


def test_sliced_wasserstein_separates_posterior_from_prior():
    p = P.make_problem(8, 2, 0)
    ex = P.exact_posterior(p)
    rng = np.random.default_rng(2)
    dirs = P.directions(8, 100, rng)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=1), 1.0)
    a, b = ex.sample(rng, 2_000), ex.sample(rng, 2_000)
    floor = P.sliced_wasserstein(a, b, dirs)
    ceiling = P.sliced_wasserstein(P.prior_sample(p, rng, 2_000), a, dirs)
    assert P.sliced_wasserstein(a, a, dirs) == 0.0
    assert floor < 0.5 and ceiling > 10 * floor
    # 1-D W1 between equal-size samples: a shift by c costs |c| along every unit direction's projection
    shift = np.array([3.0] + [0.0] * 7)
    assert P.sliced_wasserstein(a + shift, a, dirs) == pytest.approx(3.0 * np.mean(np.abs(dirs[:, 0])))
    with pytest.raises(ValueError, match="equal-size"):
        P.sliced_wasserstein(a[:10], b, dirs)


def test_results_section_is_spliced_and_kept():
    section = f"{P.BEGIN}\nposterior tables\n{P.END}"
    appended = S.splice("# Benchmark results\n\nother\n", section, "posterior")
    assert appended.startswith("# Benchmark results") and appended.rstrip().endswith(P.END)
    replaced = S.splice(appended, f"{P.BEGIN}\nnew\n{P.END}", "posterior")
    assert "posterior tables" not in replaced and "new" in replaced and "other" in replaced
    assert S.existing_section(replaced, "posterior") == f"{P.BEGIN}\nnew\n{P.END}"
    assert S.existing_section("# nothing", "posterior") is None


def test_posterior_command_runs_writes_json_lines_and_resumes(tmp_path):
    results, md = tmp_path / "results.jsonl", tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\nthe other benchmarks\n")
    args = ["posterior", "--dims", "8", "--dys", "1", "--problems", "1", "--T", "20", "--extra", "none"]
    args += ["--particles", "25", "--runs", "2", "--methods", "smoothed", "--results", str(results)]
    args += ["--markdown", str(md)]
    out = main(args)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [r["method"] for r in rows] == ["reference", "smoothed"]
    ref, smc = rows
    assert ref["floor"] > 0 and ref["ceiling"] > ref["floor"] and ref["model_gap"] is not None
    assert ref["floor_pairs"] == P.FLOOR_PAIRS and ref["floor_sd"] > 0  # the floor: a mean over independent exact sets
    assert smc["sw"] > 0 and smc["seconds"] > 0 and math.isfinite(smc["log_Z"])
    assert smc["log_Z_err"] == pytest.approx(smc["log_Z"] - ref["log_evidence"])
    assert out["cells"][(8, 1, 20)]["methods"]["smoothed"]["n"] == 1
    text = md.read_text()
    assert "the other benchmarks" in text and P.BEGIN in text and "### Targets" in text and "d = 8, d_y = 1" in text
    # the same settings again: everything is on disk, nothing is re-run, the tables are rewritten once
    main(args)
    assert len(results.read_text().splitlines()) == 2
    assert md.read_text().count(P.BEGIN) == 1
    main(args[:-4] + ["--markdown", str(md), "--report-only", "--results", str(results)])
    assert len(results.read_text().splitlines()) == 2
