"""Crash safety: a training process killed with SIGKILL at random moments, resumed each time from its
checkpoint, ends with exactly the parameters of an uninterrupted run (same seed, CPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest


DRIVER = """
import sys
from pathlib import Path
import jax, numpy as np
import dpm_ppl as dpm
from dpm_ppl.nn import MLPNet
from dpm_ppl import TrainConfig, fit

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
"""


def _checkpoint_step(out: Path) -> int:
    """The step recorded in the newest checkpoint (0 when none is written yet)."""
    try:
        line = (out / "checkpoint.eqx").read_bytes().partition(b"\n")[0]
        return int(json.loads(line)["meta"]["step"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def _run(driver: Path, out: Path, kill_at_step: int | None, delay: float = 0.0) -> bool:
    """Run the driver; SIGKILL it ``delay`` seconds after its checkpoint reaches ``kill_at_step``.

    True if it finished by itself. Killing on training progress rather than wall time puts every kill
    inside the training loop however slow the machine's start-up (import, compilation) is.
    """
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, str(driver), str(out)], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while kill_at_step is not None and proc.poll() is None and time.monotonic() < deadline:
        if _checkpoint_step(out) >= kill_at_step:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            if proc.wait() == -signal.SIGKILL:
                proc.communicate()  # drain and close the pipe
                return False
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-2000:]
    return True


def test_sigkill_and_resume_is_bit_identical(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir(), killed.mkdir()
    assert _run(driver, reference, None)

    rng = np.random.default_rng(1)
    # three kills at random points of training: after a random checkpoint, a random fraction of a chunk later
    targets = np.sort(rng.choice(np.arange(20, 500, 20), size=3, replace=False))
    kills = sum(not _run(driver, killed, int(step), float(rng.uniform(0.0, 0.02))) for step in targets)
    assert kills == 3, "the run finished before it could be interrupted three times"
    assert _checkpoint_step(killed) >= targets[-1]
    assert _run(driver, killed, None)

    ref = np.load(reference / "final.npz")
    got = np.load(killed / "final.npz")
    assert ref.files == got.files
    for name in ref.files:
        np.testing.assert_array_equal(got[name], ref[name])  # bit for bit


@pytest.mark.parametrize("cut", [10, 200])
def test_truncated_checkpoint_is_refused_and_prev_kept(tmp_path, cut):
    """A checkpoint truncated mid-write is refused with a clear error; the previous one still loads."""
    import jax

    from dpm_ppl.infer import _checkpoint as checkpoint

    path = tmp_path / "c.eqx"
    checkpoint.save(path, {"a": jax.numpy.arange(100.0)}, {"s": 1}, {"step": 1})
    checkpoint.save(path, {"a": jax.numpy.arange(100.0) + 1}, {"s": 1}, {"step": 2})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - cut])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupted"):
        checkpoint.load(path, {"a": jax.numpy.zeros(100)}, {"s": 1})
    tree, header = checkpoint.load(Path(str(path) + ".prev"), {"a": jax.numpy.zeros(100)}, {"s": 1})
    assert header["meta"]["step"] == 1 and float(tree["a"][0]) == 0.0


def test_checkpoint_name_never_missing_during_a_write(tmp_path, monkeypatch):
    """A process killed at any point of `save` leaves a loadable file under the checkpoint's own name:
    here the write dies just before the final rename, and the old checkpoint is still in place."""
    import jax

    from dpm_ppl.infer import _checkpoint as checkpoint

    path = tmp_path / "c.eqx"
    like = {"a": jax.numpy.zeros(4)}
    checkpoint.save(path, {"a": jax.numpy.ones(4)}, {"s": 1}, {"step": 1})
    real_replace = os.replace

    def dying_replace(src, dst):
        if Path(dst) == path:
            raise KeyboardInterrupt("killed before the final rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, {"a": jax.numpy.full(4, 2.0)}, {"s": 1}, {"step": 2})
    monkeypatch.undo()
    for name in (path, Path(str(path) + ".prev")):
        tree, header = checkpoint.load(name, like, {"s": 1})
        assert header["meta"]["step"] == 1 and float(tree["a"][0]) == 1.0
