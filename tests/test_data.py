"""Data validation, the paper's standardisation (Table 1 caption) and the Swiss roll's exact density."""

import math

import numpy as np
import pytest
from helpers import EPS32
from scipy.special import logsumexp

from dpm_ppl.data import Standardiser, SwissRoll, check_data


class TestCheckData:
    def test_valid_data_pass_as_float32(self):
        """Valid data come back unchanged as float32."""
        x = np.arange(6.0).reshape(3, 2)
        out = check_data(x, (2,))
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, x)

    @pytest.mark.parametrize(("value", "shown"), [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")])
    def test_non_finite_value_named_with_index(self, value, shown):
        """A NaN or ±inf is reported with its value, its index and the count of bad entries."""
        x = np.zeros((5, 2))
        x[3, 1] = value
        x[4, 0] = value
        with pytest.raises(
            ValueError,
            match=rf"`train` contains a non-finite value (np\.float32\()?{shown}\)? at index \(3, 1\) \(2 in all\)",
        ):
            check_data(x, (2,), name="train")

    def test_wrong_event_shape(self):
        """Examples of another shape are refused, naming both shapes."""
        with pytest.raises(ValueError, match=r"`data` has examples of shape \(3,\) but the model expects \(2,\)"):
            check_data(np.zeros((4, 3)), (2,))

    def test_empty(self):
        """Zero examples are refused, naming the shape."""
        with pytest.raises(ValueError, match=r"`data` is empty \(shape \(0, 2\)\)"):
            check_data(np.zeros((0, 2)), (2,))

    def test_one_dimensional(self):
        """A flat 1-D array is refused: examples must be stacked along the first axis."""
        with pytest.raises(
            ValueError, match=r"`data` must be an array of shape \(num_examples, \*event_shape\), got shape \(5,\)"
        ):
            check_data(np.zeros(5))


def test_standardiser_unit_variance():
    """z = (x − shift)/scale with ONE scalar scale: on the training set mean z = 0 and mean ‖z‖² = d
    exactly (up to float32 rounding); inverse undoes it; log_jacobian = d·log(scale)."""
    rng = np.random.default_rng(0)
    x = rng.normal([3.0, -1.0, 0.5], [2.0, 0.5, 1.0], size=(1000, 3))
    std = Standardiser.fit(x)
    z = std(x)
    assert z.dtype == np.float32 and np.ndim(std.scale) == 0
    # float32: z carries ≲ eps·(|x| + |shift|)/scale error per entry (shift is stored in float32)
    tol = 8 * EPS32 * (np.abs(x).max() + np.abs(x.mean(0)).max()) / std.scale
    np.testing.assert_allclose(z.mean(0), 0.0, atol=tol)
    # an entry error δ ≤ tol moves ‖z‖² by ≤ 2·|z|·δ per coordinate: d·2·max|z|·tol in all
    assert abs(float((z.astype(np.float64) ** 2).sum(-1).mean()) - 3.0) <= 3 * 2 * np.abs(z).max() * tol
    np.testing.assert_allclose(std.inverse(z), x, rtol=0, atol=tol * std.scale)
    assert std.log_jacobian(3) == pytest.approx(3 * math.log(std.scale), rel=1e-15)
    with pytest.raises(ValueError, match=r"constant"):
        Standardiser.fit(np.ones((10, 2)))


def test_swiss_roll_split_is_standardised():
    """Dataset.split: validated float32 arrays; the training set has mean ‖z‖² = d = 2."""
    roll = SwissRoll(num_train=2000, num_test=500)
    split = roll.split(seed=3)
    assert split.train.shape == (2000, 2) and split.test.shape == (500, 2)
    assert split.train.dtype == np.float32
    mean_sq = float((split.train.astype(np.float64) ** 2).sum(-1).mean())
    assert abs(mean_sq - 2.0) <= 1e-5  # float32 rounding of 2000 values of size O(1): ≪ 1e-5
    raw_train, _ = roll.raw(seed=3)
    np.testing.assert_allclose(split.standardiser.inverse(split.train), raw_train, rtol=0, atol=1e-5 * 14)


_LO, _HI = 1.5 * np.pi, 4.5 * np.pi


def brute_force_log_prob(x, noise, n=200_001):
    """log ∫ U(s; 1.5π, 4.5π) N(x; (s cos s, s sin s), σ²I) ds by the trapezoid rule over the WHOLE s range.

    Spacing 3π/2·10⁵ ≈ 4.7e-5 against a bump width σ/|c′(s)| ≥ 0.02/14.2 ≈ 1.4e-3 (≥ 30 points per
    width): the trapezoid rule on such a smooth integrand is exact far below 1e-9 (checked by halving).
    """
    s = np.linspace(_LO, _HI, n)
    w = np.full(n, (_HI - _LO) / (n - 1))
    w[0] /= 2
    w[-1] /= 2
    var = noise**2
    out = []
    for xi in np.asarray(x, np.float64):
        sq = (xi[0] - s * np.cos(s)) ** 2 + (xi[1] - s * np.sin(s)) ** 2
        out.append(logsumexp(-sq / (2 * var) - np.log(2 * np.pi * var), b=w / (_HI - _LO)))
    return np.array(out)


def test_swiss_roll_density_matches_brute_force_quadrature():
    """SwissRoll.true_log_prob equals full-range brute-force quadrature to 1e-6 nats on 20 points drawn
    from the documented generator (s away from the ends of the roll) and 3 points 3σ off the roll."""
    roll = SwissRoll()
    rng = np.random.default_rng(1)
    s = rng.uniform(_LO + 0.05, _HI - 0.05, 20)
    x = np.stack([s * np.cos(s), s * np.sin(s)], 1) + roll.noise * rng.standard_normal((20, 2))
    u = s[:3]
    tangent = np.stack([np.cos(u) - u * np.sin(u), np.sin(u) + u * np.cos(u)], 1)  # c′(s)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1) / np.linalg.norm(tangent, axis=1, keepdims=True)
    x = np.concatenate([x, np.stack([u * np.cos(u), u * np.sin(u)], 1) + 3 * roll.noise * normal])
    np.testing.assert_allclose(roll.true_log_prob(x), brute_force_log_prob(x, roll.noise), rtol=0, atol=1e-6)


def test_swiss_roll_density_at_the_ends_of_the_roll():
    """At the two ends of the roll (s = 1.5π and 4.5π, on the curve) the density still matches
    brute-force quadrature to 1e-6 nats."""
    roll = SwissRoll()
    x = np.array([[_LO * np.cos(_LO), _LO * np.sin(_LO)], [_HI * np.cos(_HI), _HI * np.sin(_HI)]])
    np.testing.assert_allclose(roll.true_log_prob(x), brute_force_log_prob(x, roll.noise), rtol=0, atol=1e-6)


def test_brute_force_quadrature_is_converged():
    """The reference itself: halving the spacing changes it by < 1e-9, on noisy interior points and on
    the exact ends of the roll."""
    rng = np.random.default_rng(2)
    s = rng.uniform(_LO + 0.05, _HI - 0.05, 3)
    x = np.stack([s * np.cos(s), s * np.sin(s)], 1) + 0.02 * rng.standard_normal((3, 2))
    x = np.concatenate([x, [[_LO * np.cos(_LO), _LO * np.sin(_LO)], [_HI * np.cos(_HI), _HI * np.sin(_HI)]]])
    np.testing.assert_allclose(
        brute_force_log_prob(x, 0.02), brute_force_log_prob(x, 0.02, n=400_001), atol=1e-9, rtol=0
    )
