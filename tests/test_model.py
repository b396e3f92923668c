"""`GaussianDiffusion`: the NumPyro model (reverse chain), guide (forward chain) and prior sub-model."""

import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from helpers import EPS32, assert_within_se, mean_se, np_log_normal, perturbed_mlp, var_se
from numpyro import handlers
from numpyro.infer.util import log_density

from dpm_ppl import (
    ForwardChain,
    GaussianDiffusion,
    GaussianOracle,
    GeometricSchedule,
    HarmonicSchedule,
    IsotropicOracle,
    LearnedSchedule,
    ReverseChain,
)
from dpm_ppl import _gaussian as gaussian
from dpm_ppl._chains import LAST_STEP


T = 5
SCHEDULE = GeometricSchedule(T, 0.05, 0.6)


def oracle_model(event_shape=(2,)):
    return GaussianDiffusion(event_shape, SCHEDULE, kernel=IsotropicOracle(SCHEDULE()))


def network_model():
    return GaussianDiffusion((2,), LearnedSchedule(SCHEDULE), network=perturbed_mlp(2, T, 11))


@pytest.mark.parametrize("event_shape", [(2,), (2, 3)])
def test_model_and_guide_traces(event_shape):
    """Model: "trajectory" is a ReverseChain of shape (B, T, *event), "x0" the observed fixed last step
    N(√(1−β₁)x¹, β₁) with the LAST_STEP flag. Guide: "trajectory" is the ForwardChain from x⁰."""
    B = 4
    d = oracle_model(event_shape)
    x0 = jax.random.normal(jax.random.key(0), (B,) + event_shape)
    guide_tr = handlers.trace(handlers.seed(d.guide, 1)).get_trace(x0)
    model_tr = handlers.trace(handlers.replay(handlers.seed(d.model, 2), guide_tr)).get_trace(x0)
    site = model_tr["trajectory"]
    assert isinstance(site["fn"], ReverseChain) and site["value"].shape == (B, T) + event_shape
    assert isinstance(guide_tr["trajectory"]["fn"], ForwardChain)
    assert guide_tr["trajectory"]["value"].shape == (B, T) + event_shape
    np.testing.assert_array_equal(site["value"], guide_tr["trajectory"]["value"])  # replayed
    obs = model_tr["x0"]
    assert obs["is_observed"] and obs["infer"].get(LAST_STEP) is True
    np.testing.assert_array_equal(obs["value"], x0)
    x1 = guide_tr["trajectory"]["value"][:, 0]
    beta1 = float(SCHEDULE()[0])
    expected = np_log_normal(np.asarray(x0), np.sqrt(1 - beta1) * np.asarray(x1), beta1)
    expected = expected.reshape(B, -1).sum(-1)
    # float32 log densities with variance β₁ = 0.05: 16 eps relative to the O(10) magnitudes
    np.testing.assert_allclose(obs["fn"].log_prob(obs["value"]), expected, rtol=16 * EPS32, atol=1e-5)
    assert "data" in model_tr and model_tr["data"]["type"] == "plate" and model_tr["data"]["args"][0] == B


def test_model_samples_x0_from_the_exact_marginal():
    """Without data the model samples x⁰ ~ p(x⁰); with the Gaussian oracle that is N(μ₀, σ₀²) of
    `marginal_x0` (n = 20 000, 4 stderr on mean and variance)."""
    oracle = GaussianOracle(SCHEDULE(), mean=[1.0, -2.0], std=[0.5, 1.5])
    d = GaussianDiffusion((2,), SCHEDULE, kernel=oracle)
    n = 20_000
    x0 = jax.jit(lambda k: handlers.seed(d.model, k)(num_samples=n))(jax.random.key(3))
    assert x0.shape == (n, 2)
    mu0, s20 = oracle.marginal_x0()
    m, se = mean_se(x0)
    assert_within_se(m, se, mu0, "model mean")
    v, se_v = var_se(x0)
    assert_within_se(v, se_v, s20, "model variance")
    tr = handlers.trace(handlers.seed(d.model, 0)).get_trace(num_samples=3)
    assert not tr["x0"]["is_observed"] and tr["trajectory"]["value"].shape == (3, T, 2)


def test_prior_inside_user_model_has_exact_log_density():
    """A user's query model: x⁰ ~ prior() then y ~ N(x⁰, 0.5²). After `bind(params)` its trace has the
    sites trajectory, x0, y and no params; `log_density` at a trace equals the hand sum
    log π(x^T) + Σ_t log p(xᵗ⁻¹|xᵗ) + log N(x⁰; √(1−β₁)x¹, β₁) + log N(y; x⁰, 0.25)."""
    d = network_model()
    params = d.param_init()
    frozen = d.bind(params)
    y = jnp.array([0.3, -0.7])

    def query(y):
        x0 = frozen.prior()
        numpyro.sample("y", dist.Normal(x0, 0.5).to_event(1), obs=y)

    sites = jax.jit(lambda k: {n: s["value"] for n, s in handlers.trace(handlers.seed(query, k)).get_trace(y).items()})
    values = sites(jax.random.key(4))
    assert set(values) == {"trajectory", "x0", "y"}
    traj, x0 = values["trajectory"], values["x0"]
    assert traj.shape == (T, 2) and x0.shape == (2,)
    lp = jax.jit(lambda v: log_density(query, (y,), {}, v)[0])({"trajectory": traj, "x0": x0})
    assert np.isfinite(float(lp))
    betas = np.asarray(frozen.schedule(), np.float64)
    kernel = frozen.reverse_kernel(frozen.schedule())
    steps = jax.jit(lambda traj: [kernel(traj[t - 1], t) for t in range(2, T + 1)])(traj)
    chain = float(gaussian.log_prior(traj[-1], 1))
    for t, (mean, var) in zip(range(2, T + 1), steps):
        chain += float(np_log_normal(np.asarray(traj[t - 2]), np.asarray(mean), np.asarray(var)).sum())
    last = np_log_normal(np.asarray(x0), np.sqrt(1 - betas[0]) * np.asarray(traj[0]), betas[0]).sum()
    obs = np_log_normal(np.asarray(y), np.asarray(x0), 0.25).sum()
    # float32 sum of ~T·d terms of O(1–10): 64 eps relative to their magnitude
    np.testing.assert_allclose(float(lp), chain + last + obs, rtol=64 * EPS32, atol=1e-4)


def test_bind_freezes_params():
    """bind(params) returns a copy with trainable=False holding the given network and schedule values;
    its programs register no params, while the unbound model registers network$params, schedule$params."""
    d = network_model()
    params = d.param_init()
    new_logits = params["schedule$params"].logits + 0.5
    params["schedule$params"] = eqx.tree_at(lambda s: s.logits, params["schedule$params"], new_logits)
    frozen = d.bind(params)
    assert d.trainable and not frozen.trainable
    np.testing.assert_array_equal(frozen.schedule.logits, new_logits)
    np.testing.assert_array_equal(frozen.network.readout.weight, d.network.readout.weight)
    x0 = jnp.zeros((2, 2))

    def kinds(m):
        """The site types of one model trace, traced abstractly (jax.eval_shape: nothing is compiled)."""
        out = []

        def run():
            out.append({s["type"] for s in handlers.trace(handlers.seed(m.model, 0)).get_trace(x0).values()})
            return 0

        jax.eval_shape(run)
        return out[0]

    assert "param" in kinds(d) and "param" not in kinds(frozen)
    assert set(d.param_init()) == {"network$params", "schedule$params"}
    betas = frozen.schedule()
    assert float(betas[0]) == pytest.approx(d.schedule.beta1, rel=EPS32)  # β₁ stays fixed
    np.testing.assert_allclose(betas[1:], jax.nn.sigmoid(new_logits), rtol=EPS32)


def test_wrong_data_shape_names_x0():
    """Data of the wrong event shape or rank are rejected by the model and the guide, naming `x0`,
    the expected shape and the shape given."""
    d = oracle_model((2,))
    for bad in (jnp.zeros((4, 3)), jnp.zeros((4,)), jnp.zeros((4, 2, 1))):
        msg = re.escape(f"`x0` must have shape (batch, 2) for this model, got {tuple(bad.shape)}")
        with pytest.raises(ValueError, match=msg):
            handlers.seed(d.model, 0)(bad)
        with pytest.raises(ValueError, match=msg):
            handlers.seed(d.guide, 0)(bad)


def test_declaration_errors():
    """Exactly one of network/kernel; event_shape non-empty and positive; schedule a dpm_ppl schedule."""
    kernel, net = IsotropicOracle(SCHEDULE()), perturbed_mlp(2, T, 11)
    with pytest.raises(ValueError, match=r"exactly one of `network` .* or `kernel`"):
        GaussianDiffusion((2,), SCHEDULE)
    with pytest.raises(ValueError, match=r"exactly one of `network` .* or `kernel`"):
        GaussianDiffusion((2,), SCHEDULE, network=net, kernel=kernel)
    with pytest.raises(ValueError, match=r"`event_shape` must be a non-empty tuple of positive sizes, got \(2, 0\)"):
        GaussianDiffusion((2, 0), SCHEDULE, kernel=kernel)
    with pytest.raises(ValueError, match=r"`event_shape` .* got \(\)"):
        GaussianDiffusion((), SCHEDULE, kernel=kernel)
    with pytest.raises(TypeError, match=r"`schedule` must be a dpm_ppl schedule, got ndarray"):
        GaussianDiffusion((2,), np.full(T, 0.1), kernel=kernel)


def test_properties():
    """num_steps = T, event_ndim and dim = ∏ event_shape."""
    d = oracle_model((2, 3))
    assert (d.num_steps, d.event_ndim, d.dim) == (T, 2, 6)
    assert GaussianDiffusion((4,), HarmonicSchedule(7), kernel=IsotropicOracle(HarmonicSchedule(7)())).num_steps == 7
