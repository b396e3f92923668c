"""β schedules (paper §2.4.1): values against closed forms, learning, validation."""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EPS32

from dpm_ppl import ArraySchedule, GeometricSchedule, HarmonicSchedule, LearnedSchedule, ReferenceSchedule
from dpm_ppl import _gaussian as gaussian
from dpm_ppl._schedules import validate_betas


@pytest.mark.parametrize("T", [1, 2, 5, 10])
def test_harmonic_values(T):
    """β_t = 1/(T − t + 1) (paper footnote 2), the last value β_T = 1 clipped to 1 − 10⁻⁶."""
    sched = HarmonicSchedule(T)
    t = np.arange(1, T + 1, dtype=np.float64)
    expected = 1.0 / (T - t + 1)
    expected[-1] = 1.0 - 1e-6
    betas = np.asarray(sched(), np.float64)
    assert betas.shape == (T,) and sched.num_steps == T and not sched.is_learned
    # float32 storage: each value is the float64 closed form rounded once (relative error ≤ eps/2).
    np.testing.assert_allclose(betas, expected, rtol=EPS32, atol=0)
    assert np.all(betas < 1.0), "β_T must be clipped strictly below 1"


def test_reference_schedule_matches_paper_spec_numbers():
    """The reference schedule at T = 1000: β₁ ≈ 2.0e-3, β₂ ≈ 1.0e-3, β_T ≈ 0.49999, ᾱ_T ≈ 9.9e-4."""
    betas = ReferenceSchedule(1000)()
    abar_T = float(gaussian.alpha_bar(betas)[-1])
    b = np.asarray(betas, np.float64)
    # Each tolerance is half a unit in the last digit quoted by the spec ("2.0e-3" → ±0.05e-3) ...
    assert abs(b[0] - 2.0e-3) <= 0.05e-3, b[0]
    assert abs(b[1] - 1.0e-3) <= 0.05e-3, b[1]
    assert abs(abar_T - 9.9e-4) <= 0.05e-4, abar_T
    # ... except β_T, which the spec truncates (0.4999955 → "0.49999"): one unit in the last digit.
    assert abs(b[-1] - 0.49999) <= 1e-5, b[-1]
    # The spec's closed form b_t = 1/linspace(T, 2, T)[t], floor 1e-6 (+1e-3 at t = 1), in float64:
    base = 1.0 / np.linspace(1000, 2, 1000)
    floor = np.full(1000, 1e-6)
    floor[0] += 1e-3
    np.testing.assert_allclose(b, floor + base * (1.0 - floor - 1e-5), rtol=EPS32)  # one float32 rounding


def test_geometric_endpoints_and_ratio():
    """β₁ = beta_min, β_T = beta_max and a constant ratio (beta_max/beta_min)^(1/(T−1))."""
    T, lo, hi = 7, 1e-4, 0.3
    b = np.asarray(GeometricSchedule(T, lo, hi)(), np.float64)
    np.testing.assert_allclose([b[0], b[-1]], [lo, hi], rtol=EPS32)  # one float32 rounding each
    ratio = (hi / lo) ** (1.0 / (T - 1))
    np.testing.assert_allclose(b[1:] / b[:-1], ratio, rtol=4 * EPS32)  # ratio of two rounded values


class TestLearnedSchedule:
    init = GeometricSchedule(6, 1e-3, 0.5)

    def test_initial_values_and_fixed_beta1(self):
        """The learned schedule starts at init's β (sigmoid of its logits) and keeps init's β₁ fixed."""
        learned = LearnedSchedule(self.init)
        assert learned.is_learned and learned.num_steps == 6
        assert learned.logits.shape == (5,)
        assert learned.beta1 == float(self.init()[0])
        # sigmoid(logit(β)) in float32: a few roundings of O(1) quantities, ≤ 8 eps relative.
        np.testing.assert_allclose(learned(), self.init(), rtol=8 * EPS32)

    def test_gradient_reaches_logits_not_beta1(self):
        """d Σβ / d logit_t = β_t(1 − β_t) for t ≥ 2 (sigmoid derivative); β₁ is not a leaf at all."""
        learned = LearnedSchedule(self.init)
        grads = jax.grad(lambda s: jnp.sum(s()))(learned)
        b = np.asarray(learned(), np.float64)
        np.testing.assert_allclose(grads.logits, b[1:] * (1.0 - b[1:]), rtol=8 * EPS32)  # float32 sigmoid'
        assert np.all(np.asarray(grads.logits) != 0.0)
        leaves = jax.tree_util.tree_leaves(learned)
        assert len(leaves) == 1 and leaves[0] is learned.logits, "only the logits may be trainable"

    def test_rejects_learned_init(self):
        """A learned schedule cannot initialise another one."""
        with pytest.raises(ValueError, match=r"`init` must be a fixed schedule"):
            LearnedSchedule(LearnedSchedule(self.init))


@pytest.mark.parametrize("bad", [0, -3, 2.5, "5", True, None])
@pytest.mark.parametrize("cls", [HarmonicSchedule, ReferenceSchedule, GeometricSchedule])
def test_invalid_num_steps(cls, bad):
    """T must be an integer ≥ 1; the error names `num_steps` and repeats the value given."""
    with pytest.raises(
        ValueError, match=r"`num_steps` \(T\) must be an integer ≥ 1, got " + repr(bad).replace(".", r"\.")
    ):
        cls(bad)


_BAD_BETAS = [
    ([0.1, 0.0, 0.2], 2, "0.0"),
    ([0.1, -0.2], 2, "-0.2"),
    ([1.0, 0.5], 1, "1.0"),
    ([0.5, 1.5], 2, "1.5"),
    ([0.5, math.nan], 2, "nan"),
    ([0.5, math.inf], 2, "inf"),
]


@pytest.mark.parametrize(("betas", "step", "value"), _BAD_BETAS)
def test_validate_betas_rejects_values_outside_unit_interval(betas, step, value):
    """Every β_t must lie strictly in (0, 1) and be finite; the error names the step and the value."""
    shown = rf"β_{step} = {re.escape(value)} does not"
    with pytest.raises(ValueError, match=r"`betas` must lie strictly inside \(0, 1\); " + shown):
        validate_betas(np.array(betas))
    with pytest.raises(ValueError, match=shown):  # the user-array schedule validates the same way
        ArraySchedule(betas)


def test_validate_betas_message_shows_plain_number():
    """The offending value is shown as a plain number, as the user typed it."""
    with pytest.raises(ValueError, match=r"β_2 = 0\.0 does not"):
        validate_betas(np.array([0.1, 0.0]))


def test_validate_betas_shape_and_length():
    """Wrong length through `num_steps`, 2-D and empty arrays are rejected with the shapes named."""
    with pytest.raises(ValueError, match=r"`betas` has length 2 but the diffusion has T = 3 steps"):
        validate_betas(np.array([0.1, 0.2]), num_steps=3)
    with pytest.raises(ValueError, match=r"`my_betas` must be a non-empty 1-D array .* got shape \(2, 2\)"):
        validate_betas(np.full((2, 2), 0.1), name="my_betas")
    with pytest.raises(ValueError, match=r"got shape \(0,\)"):
        ArraySchedule([])
    out = validate_betas([0.1, 0.2], num_steps=2)
    assert out.dtype == np.float64 and out.tolist() == [0.1, 0.2]


def test_array_schedule_values():
    """A valid user array comes back unchanged (up to float32 rounding)."""
    values = [1e-4, 0.01, 0.3, 0.9]
    sched = ArraySchedule(values)
    assert sched.num_steps == 4
    np.testing.assert_allclose(sched(), values, rtol=EPS32)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta_min": 0.0}, r"`beta_min` must lie in \(0, 1\), got 0\.0"),
        ({"beta_max": 1.0}, r"`beta_max` must lie in \(0, 1\), got 1\.0"),
        ({"beta_min": math.nan}, r"`beta_min` must lie in \(0, 1\), got nan"),
        ({"beta_min": 0.4, "beta_max": 0.2}, r"`beta_min` \(0\.4\) must not exceed `beta_max` \(0\.2\)"),
    ],
)
def test_geometric_rejects_bad_endpoints(kwargs, message):
    """Geometric endpoints outside (0, 1) or in the wrong order are rejected by name and value."""
    with pytest.raises(ValueError, match=message):
        GeometricSchedule(5, **kwargs)
