"""Validation, early stopping and interruption of `fit`: the best-by-validation parameters, patience,
wall-time checkpoints, SIGINT/SIGTERM, and resumes that return exactly what an uninterrupted run does."""

import dataclasses
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from dpm_ppl import GaussianDiffusion, GeometricSchedule, LearnedSchedule, TrainConfig, TrainingInterrupted
from dpm_ppl.infer import _checkpoint as checkpoint
from dpm_ppl.infer import _train as train
from dpm_ppl.nn import _mlp as nn


T = 4
SCHEDULE = GeometricSchedule(T, 0.05, 0.6)
KEY = 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patience": 0}, r"`patience` must be a positive integer .* or None \(never stop early\), got 0\."),
        ({"patience": -1}, r"`patience` must be a positive integer .*got -1\."),
        ({"patience": 1.5}, r"`patience` must be a positive integer .*got 1\.5\."),
        ({"patience": True}, r"`patience` must be a positive integer .*got True\."),
        ({"checkpoint_seconds": 0}, r"`checkpoint_seconds` must be a positive finite number of seconds .*got 0\."),
        ({"checkpoint_seconds": -1}, r"`checkpoint_seconds` must be a positive finite number .*got -1\."),
        ({"checkpoint_seconds": math.nan}, r"`checkpoint_seconds` must be a positive finite number .*got nan\."),
        ({"checkpoint_seconds": math.inf}, r"`checkpoint_seconds` must be a positive finite number .*got inf\."),
        ({"checkpoint_seconds": True}, r"`checkpoint_seconds` must be a positive finite number .*got True\."),
        ({"keep_best": "yes"}, r"`keep_best` must be True or False, got 'yes'\."),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_config_accepts_none():
    cfg = TrainConfig(patience=None, checkpoint_seconds=None, keep_best=False)
    assert (cfg.patience, cfg.checkpoint_seconds, cfg.keep_best) == (None, None, False)
    assert TrainConfig(patience=3, checkpoint_seconds=0.5).patience == 3


# -- early stopping on a tiny training set that the network overfits ---------------------------------


def overfit_data():
    """16 training rows and 200 validation rows of N(0, [[1, .9], [.9, 1]]): at learning rate 3·10⁻² the
    validation K improves for about 100 steps, then falls as the network memorises the 16 rows."""
    rng = np.random.default_rng(0)
    cov = [[1.0, 0.9], [0.9, 1.0]]
    return tuple(rng.multivariate_normal([0.0, 0.0], cov, size=n).astype(np.float32) for n in (16, 200))


def mlp_diffusion():
    net = nn.MLPNet(2, T, width=16, depth=1, key=jax.random.key(0))
    return GaussianDiffusion((2,), LearnedSchedule(SCHEDULE), network=net)


STOP = TrainConfig(
    steps=300, batch_size=16, learning_rate=3e-2, warmup=0, steps_per_call=10, eval_every=20,
    checkpoint_every=300, eval_size=200, patience=3, checkpoint_seconds=None,
)  # fmt: skip


def _leaves(tree):
    """Every leaf as a numpy array (typed PRNG keys as their key data)."""
    unkey = lambda x: jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
    return [np.asarray(unkey(x)) for x in jax.tree_util.tree_leaves(tree)]


def assert_same(a, b):
    a, b = _leaves(a), _leaves(b)
    assert len(a) == len(b) and len(a) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def without_seconds(history):
    return {k: v for k, v in history.items() if k != "seconds"}


def improvements(history):
    """The evaluation steps at which the validation K beat every earlier one."""
    best, steps = -math.inf, []
    for s, K in zip(history["eval_step"], history["eval_K_bits"]):
        if K > best:
            best, steps = K, steps + [s]
    return steps


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted early-stopped run, with its run folder and the steps of its checkpoints."""
    out = tmp_path_factory.mktemp("reference")
    train_x, val_x = overfit_data()
    seen = []
    result = train.fit(mlp_diffusion(), train_x, val_x, STOP, jax.random.key(KEY), out_dir=out, spec={"T": T},
                       progress=False, on_checkpoint=seen.append)  # fmt: skip
    return result, out, seen


def test_early_stopping_returns_the_best(reference):
    """Patience 3: training stops 3 evaluations after the best one, before the last step; the returned
    parameters are the best evaluation's, and their validation K recomputed with the fit's evaluation key
    (the third of `split(key, 3)`) is exactly the best K recorded. best.eqx holds them; checkpoint.eqx
    holds the last state, written at each new best and when stopping."""
    result, out, seen = reference
    h = result.history
    stopped = h["stopped_step"]
    assert result.stopped_early and stopped is not None and stopped < STOP.steps
    assert h["step"][-1] == stopped == h["eval_step"][-1]
    assert result.best_step == h["best_step"] < stopped
    assert h["eval_step"].index(result.best_step) == len(h["eval_step"]) - 1 - STOP.patience
    assert h["best_K_bits"] == max(h["eval_K_bits"]) and max(h["eval_K_bits"][-STOP.patience :]) < h["best_K_bits"]

    _, val_x = overfit_data()
    eval_key = jax.random.split(jax.random.key(KEY), 3)[2]
    terms = train.evaluate_bound(mlp_diffusion(), result.params, val_x[: STOP.eval_size], eval_key)
    assert float(terms.bits()["K"].mean()) == h["best_K_bits"]

    best, header = checkpoint.load(out / train.BEST_CHECKPOINT, result.state, {"T": T})
    assert header["meta"]["step"] == result.best_step
    assert_same(best, result.state)
    last, header = checkpoint.load(out / train.CHECKPOINT, result.state, {"T": T})
    assert header["meta"]["step"] == stopped and header["meta"]["best"]["step"] == result.best_step
    assert not all(np.array_equal(a, b) for a, b in zip(_leaves(last), _leaves(result.state)))
    assert seen == improvements(h) + [stopped]
    assert len(improvements(h)) >= 2  # so that the resume tests below meet a best.eqx.prev


def test_keep_best_false_returns_the_last(reference):
    """keep_best=False trains identically but returns the state of the last step (the checkpoint's)."""
    ref, out, _ = reference
    train_x, val_x = overfit_data()
    last = train.fit(mlp_diffusion(), train_x, val_x, dataclasses.replace(STOP, keep_best=False), jax.random.key(KEY),
                     progress=False)  # fmt: skip
    assert last.stopped_early and last.best_step == ref.history["stopped_step"]
    assert without_seconds(last.history) == without_seconds(ref.history)
    on_disk, _ = checkpoint.load(out / train.CHECKPOINT, last.state, {"T": T})
    assert_same(last.state, on_disk)
    assert not all(np.array_equal(a, b) for a, b in zip(_leaves(last.params), _leaves(ref.params)))


class _Crash(Exception):
    pass


def _crash_at(step):
    def on_checkpoint(s):
        if s == step:
            raise _Crash(s)

    return on_checkpoint


def test_resume_from_wall_time_checkpoints_is_exact(reference, tmp_path):
    """Wall-time checkpoints (here after every chunk) land between evaluations; a run killed just after
    one, before and after its best step, and resumed twice returns bit for bit the reference's state,
    best step and history."""
    ref, _, _ = reference
    best = ref.best_step
    cuts = [best - STOP.steps_per_call, best + STOP.steps_per_call]  # not multiples of eval_every
    assert all(c % STOP.eval_every for c in cuts) and 0 < cuts[0] and cuts[1] < ref.history["stopped_step"]
    cfg = dataclasses.replace(STOP, checkpoint_seconds=1e-6)
    train_x, val_x = overfit_data()
    for i, cut in enumerate(cuts):
        with pytest.raises(_Crash):
            train.fit(mlp_diffusion(), train_x, val_x, cfg, jax.random.key(KEY), out_dir=tmp_path, spec={"T": T},
                      resume=i > 0, progress=False, on_checkpoint=_crash_at(cut))  # fmt: skip
        assert checkpoint.read_header(tmp_path / train.CHECKPOINT)[0]["meta"]["step"] == cut
    resumed = train.fit(mlp_diffusion(), train_x, val_x, cfg, jax.random.key(KEY), out_dir=tmp_path, spec={"T": T},
                        resume=True, progress=False)  # fmt: skip
    assert resumed.best_step == best and resumed.stopped_early
    assert_same(resumed.state, ref.state)
    assert without_seconds(resumed.history) == without_seconds(ref.history)


def test_killed_between_best_and_checkpoint(reference, tmp_path, monkeypatch):
    """A run killed after writing a new best.eqx but before the checkpoint that refers to it resumes from
    the older checkpoint with best.eqx.prev (the best that checkpoint knows), and still ends exactly as
    the reference."""
    ref, _, _ = reference
    best = ref.best_step
    real_save = checkpoint.save

    def dying_save(path, tree, spec, meta=None):
        if path.name == train.CHECKPOINT and meta["step"] == best:
            raise _Crash(best)
        real_save(path, tree, spec, meta)

    cfg = dataclasses.replace(STOP, checkpoint_seconds=1e-6)
    train_x, val_x = overfit_data()
    monkeypatch.setattr(checkpoint, "save", dying_save)
    with pytest.raises(_Crash):
        train.fit(mlp_diffusion(), train_x, val_x, cfg, jax.random.key(KEY), out_dir=tmp_path, spec={"T": T},
                  progress=False)  # fmt: skip
    monkeypatch.undo()
    meta = checkpoint.read_header(tmp_path / train.CHECKPOINT)[0]["meta"]
    previous_best = improvements(ref.history)[-2]
    assert meta["step"] == best - STOP.steps_per_call and meta["best"]["step"] == previous_best
    assert checkpoint.read_header(tmp_path / train.BEST_CHECKPOINT)[0]["meta"]["step"] == best
    assert checkpoint.read_header(tmp_path / (train.BEST_CHECKPOINT + ".prev"))[0]["meta"]["step"] == previous_best
    resumed = train.fit(mlp_diffusion(), train_x, val_x, cfg, jax.random.key(KEY), out_dir=tmp_path, spec={"T": T},
                        resume=True, progress=False)  # fmt: skip
    assert resumed.best_step == best
    assert_same(resumed.state, ref.state)
    assert without_seconds(resumed.history) == without_seconds(ref.history)


def test_resume_after_early_stop_does_not_train(reference, tmp_path):
    """Resuming a run that stopped early (e.g. after a crash in the report) returns the same best state
    without training further; without best.eqx it says what is missing."""
    ref, out, _ = reference
    shutil.copytree(out, tmp_path / "run")
    train_x, val_x = overfit_data()
    written = []
    again = train.fit(mlp_diffusion(), train_x, val_x, STOP, jax.random.key(KEY), out_dir=tmp_path / "run",
                      spec={"T": T}, resume=True, progress=False, on_checkpoint=written.append)  # fmt: skip
    assert written == [] and again.stopped_early and again.best_step == ref.best_step
    assert_same(again.state, ref.state)
    assert without_seconds(again.history) == without_seconds(ref.history)
    for name in (train.BEST_CHECKPOINT, train.BEST_CHECKPOINT + ".prev"):
        (tmp_path / "run" / name).unlink()
    with pytest.raises(checkpoint.CheckpointError, match=rf"best validation K was at step {ref.best_step}"):
        train.fit(mlp_diffusion(), train_x, val_x, STOP, jax.random.key(KEY), out_dir=tmp_path / "run",
                  spec={"T": T}, resume=True, progress=False)  # fmt: skip


# -- signals ------------------------------------------------------------------------------------------

SETUP = """
import jax, numpy as np
from dpm_ppl import IsotropicOracle
from dpm_ppl import GaussianDiffusion
from dpm_ppl import GeometricSchedule, LearnedSchedule
from dpm_ppl import TrainConfig

schedule = GeometricSchedule(4, 0.05, 0.6)
diffusion = GaussianDiffusion((2,), LearnedSchedule(schedule), kernel=IsotropicOracle(schedule()))
x = np.random.default_rng(0).standard_normal((300, 2)).astype(np.float32)
config = TrainConfig(steps=2000, batch_size=32, steps_per_call=10, eval_every=500, checkpoint_every=2000,
                     eval_size=50, checkpoint_seconds=1e-6)
"""

DRIVER = (
    """
import signal, sys, time
# as in an interactive shell, even when the test runs in a background job that ignores SIGINT
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
from pathlib import Path
from dpm_ppl import fit
"""
    + SETUP
    + """
def slowly(step):  # a checkpoint after every chunk, and time for the test to send its signal
    print(f"checkpoint {step}", flush=True)
    time.sleep(0.05)

fit(diffusion, x[:250], x[250:], config, jax.random.key(1), out_dir=Path(sys.argv[1]), progress=False,
    on_checkpoint=slowly)
print("finished", flush=True)
"""
)


def _setup():
    namespace = {}
    exec(SETUP, namespace)
    return namespace["diffusion"], namespace["x"], namespace["config"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_writes_checkpoint_and_resumes(tmp_path, sig):
    """A training process sent SIGINT (twice, quickly: the second must not spoil the write) or SIGTERM
    finishes its chunk, writes the checkpoint and exits with TrainingInterrupted naming the signal, the
    step and the checkpoint; resuming from it ends with the uninterrupted run's parameters."""
    driver, out = tmp_path / "driver.py", tmp_path / "run"
    driver.write_text(DRIVER)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    with open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen([sys.executable, str(driver), str(out)], env=env, stdout=subprocess.PIPE,
                                stderr=err, text=True)  # fmt: skip
        try:
            line = proc.stdout.readline()
            assert line.startswith("checkpoint "), (line, (tmp_path / "stderr").read_text()[-2000:])
            proc.send_signal(sig)
            if sig == signal.SIGINT:
                time.sleep(0.01)
                proc.send_signal(sig)
            rest = proc.stdout.read()
            proc.wait(timeout=120)
        finally:
            proc.kill()
            proc.stdout.close()
    stderr = (tmp_path / "stderr").read_text()
    assert proc.returncode != 0 and "finished" not in rest, stderr[-2000:]
    header, _ = checkpoint.read_header(out / train.CHECKPOINT)
    step = header["meta"]["step"]
    name = signal.Signals(sig).name
    assert 0 < step < 2000 and f"checkpoint {step}" in rest.splitlines()[-1]
    assert (
        f"TrainingInterrupted: training interrupted by {name} at step {step} of 2000; "
        f"the checkpoint at {out / train.CHECKPOINT} holds it" in stderr
    ), stderr[-2000:]

    diffusion, x, config = _setup()
    resumed = train.fit(diffusion, x[:250], x[250:], config, jax.random.key(1), out_dir=out, resume=True,
                        progress=False)  # fmt: skip
    assert resumed.history["step"][-1] == 2000
    if sig == signal.SIGINT:  # one comparison with an uninterrupted run is enough
        whole = train.fit(diffusion, x[:250], x[250:], config, jax.random.key(1), progress=False)
        for a, b in zip(_leaves(resumed.state), _leaves(whole.state)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        assert resumed.best_step == whole.best_step


def test_signal_in_process_and_handlers_restored(tmp_path, monkeypatch):
    """In the calling process: SIGINT raised during a checkpoint write is held until the chunk after it,
    which is checkpointed (a second SIGINT in the middle of that write only sets the flag again) before
    TrainingInterrupted; the previous handlers are back afterwards."""
    diffusion, x, config = _setup()
    config = dataclasses.replace(config, checkpoint_seconds=None, checkpoint_every=30, steps=200)
    real_save = checkpoint.save

    def save_and_get_interrupted(path, tree, spec, meta=None):
        if meta["step"] in (30, 40):
            os.kill(os.getpid(), signal.SIGINT)
        real_save(path, tree, spec, meta)

    monkeypatch.setattr(checkpoint, "save", save_and_get_interrupted)
    # a shell runs background jobs with SIGINT ignored, and `fit` keeps an ignored signal ignored: take it back
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(TrainingInterrupted) as info:
            train.fit(diffusion, x[:250], x[250:], config, jax.random.key(1), out_dir=tmp_path, progress=False)
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    finally:
        signal.signal(signal.SIGINT, ignored)
    err = info.value
    assert isinstance(err, KeyboardInterrupt)
    assert (err.step, err.signal_name, err.checkpoint) == (40, "SIGINT", tmp_path / train.CHECKPOINT)
    assert str(err) == (
        f"training interrupted by SIGINT at step 40 of 200; the checkpoint at {tmp_path / train.CHECKPOINT} holds it"
    )
    state, header = checkpoint.load(tmp_path / train.CHECKPOINT, err.state)
    assert header["meta"]["step"] == 40
    assert_same(state, err.state)


def test_fit_in_a_thread_installs_no_handlers():
    """Off the main thread `fit` cannot install signal handlers and does not try."""
    diffusion, x, config = _setup()
    config = dataclasses.replace(config, steps=20)
    results, errors = [], []

    def work():
        try:
            results.append(train.fit(diffusion, x[:250], x[250:], config, jax.random.key(1), progress=False))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=120)
    assert not errors and len(results) == 1 and results[0].best_step == 20


def test_no_out_dir_message(monkeypatch):
    """Without out_dir the interruption says that no checkpoint was written (here SIGTERM arrives during
    the evaluation after the first chunk)."""
    diffusion, x, config = _setup()
    config = dataclasses.replace(config, steps=50, eval_every=10)
    original = train.evaluate_bound

    def interrupted_bound_terms(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate_bound", interrupted_bound_terms)
    with pytest.raises(TrainingInterrupted, match=r"by SIGTERM at step 10 of 50; no checkpoint was written") as info:
        train.fit(diffusion, x[:250], x[250:], config, jax.random.key(1), progress=False)
    assert info.value.checkpoint is None and info.value.step == 10
