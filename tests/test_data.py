"""Data validation, the paper's standardisation (Table 1 caption) and one scale per column, the
train/validation/test split, and the Swiss roll's exact density."""

import json
import math

import numpy as np
import pytest
from helpers import EPS32
from scipy.special import logsumexp

from dpm_ppl.datasets import Standardiser, SwissRoll, check_data, validation_indices
from dpm_ppl.datasets._base import constant_columns


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
    """Dataset.split: validated float32 arrays, the validation rows (10%) carved out of raw's training rows;
    the training set has mean ‖z‖² = d = 2, the standardiser is fitted on the training rows alone."""
    roll = SwissRoll(num_train=2000, num_test=500)
    split = roll.split(seed=3)
    assert split.train.shape == (1800, 2) and split.val.shape == (200, 2) and split.test.shape == (500, 2)
    assert split.train.dtype == split.val.dtype == split.test.dtype == np.float32
    mean_sq = float((split.train.astype(np.float64) ** 2).sum(-1).mean())
    assert abs(mean_sq - 2.0) <= 1e-5  # float32 rounding of 1800 values of size O(1): ≪ 1e-5
    raw_train, raw_test = roll.raw(seed=3)
    train, val, test = roll.raw_split(seed=3)
    np.testing.assert_array_equal(test, raw_test)
    rows = [{tuple(r) for r in a} for a in (train, val)]
    assert not rows[0] & rows[1] and rows[0] | rows[1] == {tuple(r) for r in raw_train}  # a partition of raw's train
    fitted = Standardiser.fit(check_data(train))
    np.testing.assert_array_equal(split.standardiser.shift, fitted.shift)
    assert split.standardiser.scale == fitted.scale
    np.testing.assert_array_equal(split.val, fitted(check_data(val)))
    np.testing.assert_allclose(split.standardiser.inverse(split.train), train, rtol=0, atol=1e-5 * 14)
    # the same seed carves the same rows, another seed others
    np.testing.assert_array_equal(roll.split(seed=3).val, split.val)
    assert not np.array_equal(validation_indices(2000, 0.1, 3)[0], validation_indices(2000, 0.1, 4)[0])


def test_validation_indices():
    """round(fraction·n) validation rows, at least 1 and leaving at least 1; a partition of 0…n−1."""
    for n, fraction, want in ((2000, 0.1, 200), (2, 0.5, 1), (2, 0.999, 1), (7, 0.001, 1), (10, 0.25, 2)):
        val, train = validation_indices(n, fraction, seed=0)
        assert len(val) == want and sorted(np.concatenate([val, train]).tolist()) == list(range(n))
    with pytest.raises(ValueError, match=r"at least 2 are needed"):
        validation_indices(1, 0.1, seed=0)


def _float32_tol(x, std):
    """Entry-wise bound on the float32 error of z = (x − shift)/scale: a few ulps of |x| + |shift|, over scale."""
    return 8 * EPS32 * (np.abs(x).max(0) + np.abs(np.asarray(std.shift, np.float64))) / np.asarray(std.scale)


def test_standardiser_per_column():
    """One scale per column: on the training set each column of z has mean 0 and sd 1 (float32 rounding);
    inverse undoes it; log_jacobian = Σ log(scale); a constant column gets scale 1 (z = 0 there)."""
    rng = np.random.default_rng(0)
    x = rng.normal([3.0, -1.0, 0.5, 7.0], [2.0, 0.5, 1e-3, 1.0], size=(1000, 4))
    x[:, 3] = 7.0  # constant
    x = x.astype(np.float32)
    std = Standardiser.fit(x, per_column=True)
    assert std.per_column and std.scale.shape == (4,) and std.scale.dtype == np.float32
    assert std.scale[3] == 1.0 and constant_columns(x).tolist() == [False, False, False, True]
    z = std(x).astype(np.float64)
    tol = _float32_tol(x, std)
    assert np.all(np.abs(z.mean(0)) <= tol)
    # sd: the scale is stored in float32 (relative error ≤ eps/2), z entries off by ≤ tol
    assert np.all(np.abs(z[:, :3].std(0) - 1.0) <= EPS32 + 2 * tol[:3])
    np.testing.assert_array_equal(z[:, 3], 0.0)
    assert np.all(np.abs(std.inverse(std(x)) - x) <= tol * std.scale)
    want = float(np.sum(np.log(np.asarray(std.scale, np.float64))))
    assert std.log_jacobian(4) == pytest.approx(want, rel=1e-15, abs=1e-15)
    with pytest.raises(AssertionError):
        std.log_jacobian(3)
    # the global scale on the same data: one float, E‖z‖² = d
    glob = Standardiser.fit(x)
    assert not glob.per_column and isinstance(glob.scale, float)
    with pytest.raises(ValueError, match=r"constant"):
        Standardiser.fit(np.full((10, 2), 3.0, np.float32), per_column=True)


def _gauss_log_prob(x, mean, cov):
    x = np.asarray(x, np.float64) - mean
    sol = np.linalg.solve(cov, x.T).T
    return -0.5 * (len(mean) * math.log(2 * math.pi) + np.linalg.slogdet(cov)[1] + np.sum(x * sol, -1))


@pytest.mark.parametrize("per_column", [False, True])
def test_log_jacobian_converts_a_density_between_units(per_column):
    """For x ~ N(m, S) in data units, z = (x − shift)/scale is N((m − shift)/scale, S/(scale scaleᵀ)); then
    log N(x; m, S) = log N(z; ·, ·) − log_jacobian(d) (up to the float32 rounding of z, propagated through
    the gradient of the log density), and exp(log p_x(inverse(z)) + log_jacobian) integrates to 1 over z."""
    rng = np.random.default_rng(1)
    mean = np.array([10.0, -3.0])
    a = np.array([[3.0, 0.0], [0.4, 0.2]])
    cov = a @ a.T
    x = rng.multivariate_normal(mean, cov, size=400).astype(np.float32)
    std = Standardiser.fit(x, per_column=per_column)
    s = np.broadcast_to(np.asarray(std.scale, np.float64), (2,))
    shift = np.asarray(std.shift, np.float64)
    z_mean, z_cov = (mean - shift) / s, cov / np.outer(s, s)
    z = std(x[:20]).astype(np.float64)
    lhs = _gauss_log_prob(x[:20], mean, cov)
    rhs = _gauss_log_prob(z, z_mean, z_cov) - std.log_jacobian(2)
    grad = np.abs(np.linalg.solve(z_cov, (z - z_mean).T).T)  # |∇_z log p(z)|
    tol = (grad * _float32_tol(x, std)).sum(-1) + 1e-9
    assert np.all(np.abs(lhs - rhs) <= tol)
    # ∫ p_x(inverse(z))·exp(log_jacobian) dz = 1 (trapezoid over ±10 sd of z on a 801² grid)
    axes = [np.linspace(m - 10 * math.sqrt(v), m + 10 * math.sqrt(v), 801) for m, v in zip(z_mean, np.diag(z_cov))]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    dens = np.exp(_gauss_log_prob(std.inverse(grid), mean, cov) + std.log_jacobian(2)).reshape(801, 801)
    total = np.trapezoid(np.trapezoid(dens, axes[1], axis=1), axes[0])
    assert abs(total - 1.0) < 1e-6


@pytest.mark.parametrize("per_column", [False, True])
def test_standardiser_json_round_trip(per_column):
    """to_json → json text → from_json restores shift and scale bit for bit (float32 values, float64 text),
    so the standardised data are identical; the older {"shift", "scale"} form still reads."""
    x = np.random.default_rng(2).normal(size=(100, 3)).astype(np.float32) * [1.0, 3.0, 0.1] + [1e3, 0.1, -7.0]
    std = Standardiser.fit(x.astype(np.float32), per_column=per_column)
    d = json.loads(json.dumps(std.to_json()))
    assert d["per_column"] is per_column and isinstance(d["scale"], list if per_column else float)
    back = Standardiser.from_json(d)
    assert back.shift.dtype == np.float32 and back.shift.tobytes() == std.shift.tobytes()
    if per_column:
        assert back.scale.dtype == np.float32 and back.scale.tobytes() == std.scale.tobytes()
    else:
        assert back.scale == std.scale and isinstance(back.scale, float)
    np.testing.assert_array_equal(back(x), std(x))
    assert back.log_jacobian(3) == std.log_jacobian(3)
    if not per_column:
        legacy = Standardiser.from_json({"shift": std.shift.tolist(), "scale": std.scale})
        assert not legacy.per_column and legacy.scale == std.scale


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


def test_image_validation_set_is_carved_by_image():
    """Images trained on in several dequantised copies: the validation set holds one copy of each of
    round(0.1·n) training images and no copy of those images is trained on."""
    from dpm_ppl.datasets._images import DeadLeaves

    data = DeadLeaves(size=8, num_train=50, num_test=10, copies=3)
    raw_train, raw_test = data.raw(0)
    train, val, test = data.raw_split(0)
    assert train.shape == (3 * 45, 8, 8) and val.shape == (5, 8, 8)
    np.testing.assert_array_equal(test, raw_test)
    levels = np.floor(raw_train[:50] * 256)  # the integer images behind raw's first copy
    val_images = {im.tobytes() for im in np.floor(val * 256)}
    train_images = {im.tobytes() for im in np.floor(train * 256)}
    assert len(train_images) == len({im.tobytes() for im in levels}) - len(val_images)
    assert not val_images & train_images
    split = data.split(0)
    assert split.val.shape == (5, 8, 8)
