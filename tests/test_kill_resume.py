"""Crash safety: a training process killed with SIGKILL at random moments, resumed each time from its
checkpoint, ends with exactly the parameters of an uninterrupted run (same seed, CPU)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest


DRIVER = '''
import sys
from pathlib import Path
import jax, numpy as np
import dpm_ppl as dpm
from dpm_ppl.nn import MLPNet
from dpm_ppl.train import TrainConfig, fit

out = Path(sys.argv[1])
T = 5
rng = np.random.default_rng(0)
x = (rng.standard_normal((600, 2)) @ np.array([[1.0, 0.8], [0.0, 0.6]])).astype(np.float32)
diffusion = dpm.GaussianDiffusion(
    (2,), dpm.LearnedSchedule(dpm.GeometricSchedule(T, 1e-3, 0.5)),
    network=MLPNet(2, T, width=32, depth=2, key=jax.random.key(0)),
)
config = TrainConfig(steps=600, batch_size=64, steps_per_call=10, checkpoint_every=20, eval_every=300, eval_size=50)
resume = (out / "checkpoint.eqx").exists()
result = fit(diffusion, x[:500], x[500:], config, jax.random.key(1), out_dir=out, resume=resume, progress=False,
             spec={"driver": 1})
leaves = jax.tree.leaves(result.params)
np.savez(out / "final.npz", *[np.asarray(l) for l in leaves])
'''


def _run(driver: Path, out: Path, kill_after: float | None) -> bool:
    """Run the driver; SIGKILL it after ``kill_after`` seconds. True if it finished by itself."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, str(driver), str(out)], env=env, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return False
    assert proc.returncode == 0, err.decode()[-2000:]
    return True


def test_sigkill_and_resume_is_bit_identical(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir(), killed.mkdir()
    t0 = time.perf_counter()
    assert _run(driver, reference, None)
    duration = time.perf_counter() - t0

    rng = np.random.default_rng(1)
    kills = 0
    for _ in range(12):
        # kill somewhere between start-up and the end of an uninterrupted run
        if _run(driver, killed, float(rng.uniform(0.3, 0.95) * duration)):
            break
        kills += 1
    else:
        assert _run(driver, killed, None)
    assert kills >= 2, "the run finished before it could be interrupted twice; lengthen it"
    assert (killed / "checkpoint.eqx").exists()

    ref = np.load(reference / "final.npz")
    got = np.load(killed / "final.npz")
    assert ref.files == got.files
    for name in ref.files:
        np.testing.assert_array_equal(got[name], ref[name])  # bit for bit


@pytest.mark.parametrize("cut", [10, 200])
def test_truncated_checkpoint_is_refused_and_prev_kept(tmp_path, cut):
    """A checkpoint truncated mid-write is refused with a clear error; the previous one still loads."""
    import jax

    from dpm_ppl import checkpoint

    path = tmp_path / "c.eqx"
    checkpoint.save(path, {"a": jax.numpy.arange(100.0)}, {"s": 1}, {"step": 1})
    checkpoint.save(path, {"a": jax.numpy.arange(100.0) + 1}, {"s": 1}, {"step": 2})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - cut])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupted"):
        checkpoint.load(path, {"a": jax.numpy.zeros(100)}, {"s": 1})
    tree, header = checkpoint.load(Path(str(path) + ".prev"), {"a": jax.numpy.zeros(100)}, {"s": 1})
    assert header["meta"]["step"] == 1 and float(tree["a"][0]) == 0.0
