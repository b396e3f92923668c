"""Data-parallel training: the same steps on 1 device, on 4 simulated CPU devices, and on two processes
joined by `dpm fit --distributed` through a loopback coordinator reach the same parameters. Importance
sampling and sampling split each batch over the devices and give the same numbers.

Each run is its own process (the device count is fixed when JAX starts). Sums over a minibatch split
across devices are added in another order, so the runs agree to float tolerance, not bit for bit.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest


ROOT = Path(__file__).resolve().parents[1]
FIT = ["models/swiss_roll.py", "--steps", "40", "--T", "10", "--batch-size", "64", "--num-samples", "100"]
FIT += ["--no-progress"]


def _dpm_fit(out: Path, *extra: str, devices: int = 1) -> subprocess.Popen:
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    cmd = [sys.executable, "-m", "dpm_ppl.cli", "fit", *FIT, "--out", str(out), *extra]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(*procs: subprocess.Popen) -> list[str]:
    errs = []
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        errs.append(err)
    return errs


def _params(run: Path) -> list[np.ndarray]:
    from dpm_ppl.cli._run import load_run

    return [np.asarray(x) for x in jax.tree.leaves(eqx.filter(load_run(run).diffusion, eqx.is_array))]


def _assert_same_training(run: Path, reference: Path) -> None:
    got, want = _params(run), _params(reference)
    assert len(got) == len(want) and len(want) > 0
    for g, w in zip(got, want):
        # 40 Adam steps from identical batches and noise: only the summation order differs
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(w).max())))
    k_got = json.loads((run / "results.json").read_text())["K_bits"]
    k_want = json.loads((reference / "results.json").read_text())["K_bits"]
    assert abs(k_got - k_want) < 1e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, list[str]]]:
    """One training on 1 device, on 4 devices, and on 2 processes, started together to share the wait."""
    out = {name: tmp_path_factory.mktemp(name) for name in ("one", "four", "two_processes")}
    flags = ["--distributed", "--coordinator", f"localhost:{_free_port()}", "--num-processes", "2"]
    procs = {
        "one": [_dpm_fit(out["one"])],
        "four": [_dpm_fit(out["four"], devices=4)],
        "two_processes": [_dpm_fit(out["two_processes"], *flags, "--process-id", str(i)) for i in range(2)],
    }
    return {name: (out[name], _finish(*ps)) for name, ps in procs.items()}


def test_four_devices_agree_with_one(runs):
    _assert_same_training(runs["four"][0], runs["one"][0])


def test_distributed_two_processes_loopback(runs):
    run, errs = runs["two_processes"]
    assert "process 0 of 2: training on 2 devices (1 here)" in errs[0]
    assert "process 1 of 2: training on 2 devices (1 here)" in errs[1]
    assert (run / "run.json").is_file() and (run / "results.json").is_file()  # written by process 0
    _assert_same_training(run, runs["one"][0])


def test_batch_not_divisible_by_devices_is_refused(monkeypatch):
    from dpm_ppl.infer import _train as train

    monkeypatch.setattr(jax, "device_count", lambda: 4)
    with pytest.raises(ValueError, match="`batch_size` = 66 cannot be split over the 4 devices.*multiple of 4"):
        train._global_batch(66, 500)
    with pytest.raises(ValueError, match="3 training examples cannot be split over 4 devices"):
        train._global_batch(64, 3)
    assert train._global_batch(64, 30) == 28  # all the data, rounded down to whole shards


def test_distributed_flags_need_distributed(tmp_path):
    from dpm_ppl.cli import main

    assert main(["fit", "models/swiss_roll.py", "--out", str(tmp_path), "--num-processes", "2"]) == 2


# importance sampling and sampling on a trained run, recording how many devices each compiled batch ran on
_PROGRAM = """
import importlib, json, sys, jax, numpy as np
L, S = (importlib.import_module(f"dpm_ppl.infer._{name}") for name in ("likelihood", "sample"))  # modules
from dpm_ppl import load_run
devices = {"is": [], "sample": []}
def spy(name, module, function):
    def run(*args, **kwargs):
        out = function(*args, **kwargs)
        devices[name].append(len(out[0].sharding.device_set))
        return out
    setattr(module, function.__name__, run)
spy("is", L, L._streamed)
spy("sample", S, S._batch)
run = load_run(sys.argv[1])
est = L.log_likelihood(run.diffusion, run.split.test[:37], jax.random.key(3), num_trajectories=40, chunk_size=16,
                       batch_size=10)
drawn = S.sample(run.diffusion, jax.random.key(5), 70, trajectory=True, batch_size=32)
out = {k: np.asarray(getattr(est, k)).tolist() for k in ("log_p_hat", "khat")}
out.update(x0=np.asarray(drawn.x0).tolist(), trajectory=np.asarray(drawn.trajectory).tolist(), devices=devices)
print(json.dumps(out))
"""


def test_importance_sampling_and_sampling_split_over_devices(runs):
    """Importance sampling: 37 data in batches of 10 → 12 on 4 devices (3 each, the last batch padded); every
    batch runs on all 4 devices, and the estimates and k̂ equal the 1-device ones (each datum's trajectories stay
    on one device). Sampling: 70 samples in batches of 32: the two full batches run on 4 devices, the last 6 on
    one, and the draws and trajectories are the 1-device ones."""
    env = {devices: dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
           for devices in (1, 4)}  # fmt: skip
    procs = {
        d: subprocess.Popen(
            [sys.executable, "-c", _PROGRAM, str(runs["one"][0])],
            cwd=ROOT,
            env=e,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for d, e in env.items()
    }
    out = {}
    for d, proc in procs.items():
        stdout, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        out[d] = json.loads(stdout.strip().splitlines()[-1])
    assert out[1]["devices"] == {"is": [1] * 4, "sample": [1] * 3}
    assert out[4]["devices"] == {"is": [4] * 4, "sample": [4, 4, 1]}
    np.testing.assert_allclose(out[4]["log_p_hat"], out[1]["log_p_hat"], rtol=1e-6)
    np.testing.assert_allclose(out[4]["khat"], out[1]["khat"], rtol=1e-5)
    np.testing.assert_allclose(out[4]["x0"], out[1]["x0"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[4]["trajectory"], out[1]["trajectory"], rtol=1e-6, atol=1e-6)
