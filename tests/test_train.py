"""Training by SVI on K: configuration checks, learning on correlated Gaussian data, exact resume."""

import dataclasses
import math
import shutil

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import N_SE, mean_se

from dpm_ppl import GaussianDiffusion, GeometricSchedule, IsotropicOracle, LearnedSchedule, TrainConfig
from dpm_ppl.datasets import Standardiser
from dpm_ppl.infer import _checkpoint as checkpoint
from dpm_ppl.infer import _train as train
from dpm_ppl.nn import _mlp as nn


T = 5
INIT_SCHEDULE = GeometricSchedule(T, 0.05, 0.6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, r"`steps` must be a positive integer, got 0"),
        ({"steps": 2.5}, r"`steps` must be a positive integer, got 2\.5"),
        ({"batch_size": -1}, r"`batch_size` must be a positive integer, got -1"),
        ({"checkpoint_every": True}, r"`checkpoint_every` must be a positive integer, got True"),
        ({"learning_rate": math.nan}, r"`learning_rate` must be a positive finite number, got nan"),
        ({"learning_rate": -1e-3}, r"`learning_rate` must be a positive finite number, got -0\.001"),
        ({"grad_clip": math.inf}, r"`grad_clip` must be a positive finite number, got inf"),
        ({"warmup": -5}, r"`warmup` must be ≥ 0, got -5"),
        ({"estimator": "bogus"}, r"`estimator` must be one of .*got 'bogus'"),
    ],
)
def test_config_validation(kwargs, message):
    """Every TrainConfig field is checked at construction; the error names the field and the value."""
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


RHO = 0.9
COV = np.array([[1.0, RHO], [RHO, 1.0]])


def correlated_gaussian(n_train=2000, n_test=1000, with_density=False):
    """Standardised 2-D Gaussian data N(0, COV), correlation 0.9 (so log p − L_null ≈ −½ log(1 − 0.81)
    ≈ 0.83 nats per datum); optionally the exact log density of the standardised test points,
    log p_std(z) = log N(x; 0, COV) + d·log(scale)."""
    rng = np.random.default_rng(0)
    x = rng.multivariate_normal([0.0, 0.0], COV, size=n_train + n_test)
    std = Standardiser.fit(x[:n_train])
    train_x, test_x = std(x[:n_train]), std(x[n_train:])
    if not with_density:
        return train_x, test_x
    raw = x[n_train:]
    log_p = -0.5 * (np.einsum("ni,ij,nj->n", raw, np.linalg.inv(COV), raw) + np.log(np.linalg.det(2 * np.pi * COV)))
    return train_x, test_x, log_p + std.log_jacobian(2)


def new_diffusion():
    net = nn.MLPNet(2, T, width=32, depth=2, key=jax.random.key(0))
    return GaussianDiffusion((2,), LearnedSchedule(INIT_SCHEDULE), network=net)


def cheap_diffusion():
    """No network (a fixed reverse kernel) and a learned schedule: the loop's mechanics at a fraction of the
    compile time of an MLP."""
    return GaussianDiffusion((2,), LearnedSchedule(INIT_SCHEDULE), kernel=IsotropicOracle(INIT_SCHEDULE()))


CONFIG = TrainConfig(
    steps=300, batch_size=128, learning_rate=1e-2, warmup=20, steps_per_call=100,
    eval_every=300, checkpoint_every=100, eval_size=1000,
)  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One 300-step run with checkpoints every 100 steps; a copy of the step-100 checkpoint is kept."""
    root = tmp_path_factory.mktemp("fit")
    run_dir, resume_dir = root / "full", root / "resume"
    resume_dir.mkdir()
    seen = []

    def on_checkpoint(step):
        seen.append(step)
        if step == 100:
            shutil.copy(run_dir / train.CHECKPOINT, resume_dir / train.CHECKPOINT)

    train_x, test_x, log_p = correlated_gaussian(with_density=True)
    result = train.fit(
        new_diffusion(), train_x, test_x, CONFIG, jax.random.key(1),
        out_dir=run_dir, spec={"T": T}, progress=False, on_checkpoint=on_checkpoint,
    )  # fmt: skip
    return result, seen, run_dir, resume_dir, (train_x, test_x, log_p)


def test_short_fit_beats_the_null_model(uninterrupted):
    """After 300 steps the held-out bound exceeds L_null: mean(K − log π(x⁰)) > 4 stderr > 0 (the data's
    correlation 0.9 allows up to ≈ 0.83 nats), yet stays below the exact log density of the data
    (mean(K − log p) ≤ 4 stderr); β₁ stays fixed and β₂…β_T moved."""
    result, _, _, _, (_, test_x, log_p) = uninterrupted
    diffusion = new_diffusion()
    terms = train.evaluate_bound(diffusion, result.params, test_x, jax.random.key(2))
    K = np.asarray(terms.K, np.float64)
    gain, se = mean_se(K - np.asarray(terms.log_null, np.float64))
    assert gain > N_SE * se, (gain, se)
    excess, se_excess = mean_se(K - log_p)
    assert excess <= N_SE * se_excess, (excess, se_excess)  # a lower bound cannot beat the true density
    learned = result.params["schedule$params"]
    assert learned.beta1 == diffusion.schedule.beta1
    assert np.all(np.asarray(learned.logits) != np.asarray(diffusion.schedule.logits))
    assert result.history["step"] == [100, 200, 300] and result.history["eval_step"] == [300]
    assert np.isfinite(result.history["eval_K_bits"]).all()


def test_checkpoints_written_and_rotated(uninterrupted):
    """Checkpoints at steps 100, 200, 300; the file holds step 300 and `.prev` step 200."""
    _, seen, run_dir, _, _ = uninterrupted

    assert seen == [100, 200, 300]
    header, _ = checkpoint.read_header(run_dir / train.CHECKPOINT)
    prev, _ = checkpoint.read_header(run_dir / (train.CHECKPOINT + ".prev"))
    assert (header["meta"]["step"], prev["meta"]["step"]) == (300, 200)
    assert header["spec"] == {"T": T}


def test_resume_is_bit_identical(uninterrupted):
    """Resuming from the step-100 checkpoint with the same key and config reproduces the uninterrupted
    run exactly: every parameter leaf bit-identical, and the same loss history."""
    result, _, _, resume_dir, (train_x, test_x, _) = uninterrupted
    resumed = train.fit(
        new_diffusion(), train_x, test_x, CONFIG, jax.random.key(1),
        out_dir=resume_dir, spec={"T": T}, resume=True, progress=False,
    )  # fmt: skip
    a, b = jax.tree_util.tree_leaves(result.params), jax.tree_util.tree_leaves(resumed.params)
    assert len(a) == len(b) and len(a) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert resumed.history["step"] == result.history["step"]
    assert resumed.history["loss_bits"] == result.history["loss_bits"]


def test_resume_errors(tmp_path):
    """resume=True without a checkpoint is a FileNotFoundError naming the path; a checkpoint of another
    spec is refused naming the field."""
    train_x, test_x = correlated_gaussian(200, 50)
    cfg = TrainConfig(steps=1, batch_size=8, steps_per_call=1, eval_size=10)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*checkpoint\.eqx"):
        train.fit(
            cheap_diffusion(), train_x, test_x, cfg, jax.random.key(0), out_dir=tmp_path, resume=True, progress=False
        )
    with pytest.raises(ValueError, match=r"`resume=True` needs `out_dir`"):
        train.fit(cheap_diffusion(), train_x, test_x, cfg, jax.random.key(0), resume=True, progress=False)


def test_non_finite_loss_raises(tmp_path):
    """Data with values whose square overflows float32 make the bound non-finite: FloatingPointError
    naming the step, and no checkpoint is written."""
    train_x, test_x = correlated_gaussian(200, 50)
    train_x = train_x.copy()
    train_x[:] = 1e20
    cfg = TrainConfig(steps=2, batch_size=8, steps_per_call=2, eval_size=10, checkpoint_every=1)
    with pytest.raises(FloatingPointError, match=r"non-finite at step 0"):
        train.fit(cheap_diffusion(), train_x, test_x, cfg, jax.random.key(0), out_dir=tmp_path, progress=False)
    assert not (tmp_path / train.CHECKPOINT).exists()


def test_checkpoint_every_is_honoured(tmp_path):
    """checkpoint_every = 3 with steps_per_call = 2 and 4 steps: either the config is refused naming both
    settings, or checkpoints are written at steps 3 and 4 as documented ("every checkpoint_every steps
    and at the end")."""
    try:
        cfg = TrainConfig(steps=4, batch_size=8, steps_per_call=2, checkpoint_every=3, eval_every=4, eval_size=10)
    except ValueError as err:
        assert "checkpoint_every" in str(err) and "steps_per_call" in str(err)
        return
    train_x, test_x = correlated_gaussian(200, 50)
    seen = []
    train.fit(cheap_diffusion(), train_x, test_x, cfg, jax.random.key(0), out_dir=tmp_path, progress=False,
              on_checkpoint=seen.append)  # fmt: skip
    assert seen == [3, 4]


# -- numerical guards: a non-finite loss or gradient stops training or skips the step -------------


def _poisoned(n_bad=2):
    """200 standardised training rows of which the first ``n_bad`` are 1e20 (finite in float32, but
    their square overflows: the prior term of K becomes infinite on any batch that draws one)."""
    train_x, test_x = correlated_gaussian(200, 50)
    train_x = train_x.copy()
    train_x[:n_bad] = 1e20
    return train_x, test_x


GUARD = TrainConfig(steps=40, batch_size=8, learning_rate=1e-2, warmup=0, steps_per_call=4, checkpoint_every=4,
                    eval_every=40, eval_size=50)  # fmt: skip


def _leaves(tree):
    """Every leaf as a numpy array (typed PRNG keys as their key data)."""
    unkey = lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    return [np.asarray(unkey(x)) for x in jax.tree_util.tree_leaves(tree)]


def test_non_finite_loss_stops_or_skips(tmp_path):
    """on_nonfinite="stop": NonFiniteError names the step and the bound's term (`prior`) and holds the
    state from just before that step, every leaf finite; the checkpoint on disk is intact and from no
    later than the bad step. on_nonfinite="skip" on the same run: the bad steps are skipped and counted,
    the first being the step "stop" stopped at, where the whole SVI state (parameters, optimiser
    moments, PRNG key) is bit-identical to the one "stop" kept; training ends with finite parameters and
    a finite held-out K."""
    train_x, test_x = _poisoned()
    with pytest.raises(train.NonFiniteError, match=r"The bound became non-finite at step \d+: term .*`prior`") as info:
        train.fit(cheap_diffusion(), train_x, test_x, GUARD, jax.random.key(6), out_dir=tmp_path / "stop",
                  progress=False)  # fmt: skip
    err = info.value
    s = err.step
    assert s > GUARD.steps_per_call and s % GUARD.steps_per_call != 0, s  # inside a later chunk (key chosen for it)
    assert err.cause == "loss" and "prior" in err.terms and f"step {s}" in str(err)
    assert all(np.all(np.isfinite(x)) for x in _leaves(err.state))
    header, _ = checkpoint.read_header(tmp_path / "stop" / train.CHECKPOINT)  # verified: not truncated or corrupt
    assert header["meta"]["step"] == (s // GUARD.steps_per_call) * GUARD.steps_per_call

    skip = dataclasses.replace(GUARD, on_nonfinite="skip", checkpoint_every=s)  # a checkpoint at step s
    at_s = tmp_path / "at_s.eqx"

    def keep(step):
        if step == s:
            shutil.copy(tmp_path / "skip" / train.CHECKPOINT, at_s)

    result = train.fit(cheap_diffusion(), train_x, test_x, skip, jax.random.key(6), out_dir=tmp_path / "skip",
                       progress=False, on_checkpoint=keep)  # fmt: skip
    skipped = result.history["skipped_steps"]
    assert skipped[0] == s and len(skipped) < skip.steps and skipped == sorted(set(skipped))
    state, _ = checkpoint.load(at_s, err.state)
    for a, b in zip(_leaves(err.state), _leaves(state)):
        np.testing.assert_array_equal(a, b)
    assert all(np.all(np.isfinite(x)) for x in _leaves(result.params))
    assert np.isfinite(result.history["loss_bits"]).all() and np.isfinite(result.history["eval_K_bits"]).all()


class SqrtNet(eqx.Module):
    """A 'network' whose output is 0·√w·x at w = 0: the bound is finite but d/dw = 0·∞ = NaN."""

    w: jax.Array

    def __call__(self, x, t):
        del t
        z = 0.0 * jnp.sqrt(self.w) * x
        return z, z


def test_non_finite_gradient_stops_or_skips():
    """A NaN gradient under a finite bound is caught too: "stop" names the step and the parameter
    (`w`); "skip" skips every step, leaving the parameter where it started."""
    train_x, test_x = correlated_gaussian(200, 50)
    diffusion = GaussianDiffusion((2,), INIT_SCHEDULE, network=SqrtNet(jnp.zeros(())))
    cfg = TrainConfig(steps=3, batch_size=8, steps_per_call=3, eval_every=3, checkpoint_every=3, eval_size=20)
    with pytest.raises(train.NonFiniteError, match=r"gradient became non-finite at step 0 .*\.w") as info:
        train.fit(diffusion, train_x, test_x, cfg, jax.random.key(0), progress=False)
    assert info.value.cause == "gradient"
    result = train.fit(diffusion, train_x, test_x, dataclasses.replace(cfg, on_nonfinite="skip"), jax.random.key(0),
                       progress=False)  # fmt: skip
    assert result.history["skipped_steps"] == [0, 1, 2]
    assert float(result.params["network$params"].w) == 0.0


def test_on_nonfinite_validated():
    with pytest.raises(ValueError, match=r"`on_nonfinite` must be one of \('stop', 'skip'\), got 'ignore'"):
        TrainConfig(on_nonfinite="ignore")


@pytest.mark.slow
def test_long_float32_run_stays_finite():
    """10,000 steps at T = 1000 in float32 (the Swiss roll's model: learned β from 10⁻⁶…0.5, MLP 3×128 with a
    readout per step): no step is non-finite (the default guard would stop), the held-out bound's every term is
    finite at every t, and so are 2,000 samples with their whole trajectories. Recorded in README
    ("Reliability")."""
    from dpm_ppl.datasets import SwissRoll
    from dpm_ppl.infer._sample import sample

    T_long = 1000
    split = SwissRoll(num_train=20_000, num_test=500).split(seed=0)
    schedule = LearnedSchedule(GeometricSchedule(T_long, beta_min=1e-6, beta_max=0.5))
    diffusion = GaussianDiffusion(
        (2,), schedule, network=nn.MLPNet(2, T_long, width=128, depth=3, key=jax.random.key(0))
    )
    cfg = TrainConfig(steps=10_000, batch_size=256, learning_rate=2e-3, steps_per_call=250, eval_every=2_500,
                      checkpoint_every=10_000, eval_size=500)  # fmt: skip
    result = train.fit(diffusion, split.train, split.test, cfg, jax.random.key(0), progress=False)
    assert result.history["skipped_steps"] == []
    assert np.isfinite(result.history["loss_bits"]).all() and np.isfinite(result.history["eval_K_bits"]).all()
    trained = diffusion.bind(result.params)
    terms = train.evaluate_bound(trained, {}, split.test, jax.random.key(1))
    for name in ("kl", "entropy_T", "entropy_1", "prior", "log_null"):
        assert np.all(np.isfinite(np.asarray(getattr(terms, name)))), name
    drawn = sample(trained, jax.random.key(2), 2_000, trajectory=True)
    assert np.all(np.isfinite(np.asarray(drawn.x0))) and np.all(np.isfinite(np.asarray(drawn.trajectory)))
    K_bits = float(np.mean(np.asarray(terms.bits()["K"])))
    print(f"\nT = {T_long}, {cfg.steps} steps: {result.seconds:.0f} s of training, held-out K = {K_bits:.3f} bits")
