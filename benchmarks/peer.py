"""The JAX side of the PyTorch peer: its venv, the weights it loads and a client for `peer_torch.py --serve`.

The CPU wheel of torch on these machines is for Python 3.11, and the package runs on 3.12, so the
peer lives in its own venv (``benchmarks/.venv-torch``, git-ignored, made on first use with
``python3.11 -m venv`` and ``pip install torch==2.13.0 numpy``). torch is never a dependency of
dpm_ppl. The peer runs as a long-lived subprocess that answers one JSON command per line, so its
timed calls interleave with the JAX ones (A, B, C, A, B, C, …) while only one of them runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from . import handwritten as hw


HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-torch"
TORCH = "torch==2.13.0"


class PeerUnavailable(RuntimeError):
    """The peer's venv could not be made or its process could not be started."""


def _python311() -> str:
    for name in ("python3.11", "python3"):
        exe = shutil.which(name)
        if exe:
            out = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
            if out.stdout.strip() == "(3, 11)":
                return exe
    raise PeerUnavailable("no Python 3.11 found (the torch CPU wheel here is for 3.11); install it or pass --no-peer")


def ensure_venv(venv: Path = VENV, log=print) -> Path:
    """The peer's interpreter, making its venv first if needed (about a minute, once)."""
    python = venv / "bin" / "python"
    if python.exists():
        check = subprocess.run([python, "-c", "import torch, numpy"], capture_output=True, text=True)
        if check.returncode == 0:
            return python
    log(f"making the PyTorch peer's venv at {venv} ({TORCH}, Python 3.11; once) ...")
    steps = ([_python311(), "-m", "venv", str(venv)], [str(python), "-m", "pip", "install", "-q", TORCH, "numpy"])
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise PeerUnavailable(f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-500:]}")
    return python


def write_npz(path: Path, model: hw.Model, x, config: dict, check: dict | None = None) -> Path:
    """Weights of ``model``, the batch ``x``, the training settings and the check draws, for `peer_torch.Bench`."""
    net = model.network
    arrays = {
        "readout_weight": net.readout.weight,
        "readout_bias": net.readout.bias,
        "logits": model.logits,
        "beta1": np.float64(model.beta1),
        "num_time_features": np.int64(net.time_basis.num_basis if net.time_basis is not None else 0),
        "x": x,
        "config": json.dumps(config),
    }
    if net.time_basis is None or net.readout.basis.per_step is False:
        raise ValueError("the peer implements MLPNet with time features and a per-step readout only")
    for i, layer in enumerate(net.layers):
        arrays[f"layer{i}_weight"], arrays[f"layer{i}_bias"] = layer.weight, layer.bias
    arrays.update({f"check_{k}": v for k, v in (check or {}).items()})
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    return path


def sample_draws(key, num_samples: int, T: int, dim: int = 2) -> dict:
    """The normal draws `handwritten.sample` (and `dpm_ppl.sample`) makes from ``key``."""
    k_chain, k_last = jax.random.split(jax.random.fold_in(key, 0))
    k_T, k_steps = jax.random.split(k_chain)
    steps = jax.vmap(lambda k: jax.random.normal(k, (num_samples, dim)))(jax.random.split(k_steps, T - 1))
    return {
        "x_T": jax.random.normal(k_T, (num_samples, dim)),
        "steps": steps,
        "last": jax.random.normal(k_last, (num_samples, dim)),
    }


class PeerClient:
    """`peer_torch.py --serve` as a subprocess: ``client(cmd="train", name=..., steps=...)`` → its JSON answer."""

    def __init__(self, python: Path):
        self.proc = subprocess.Popen(
            [str(python), str(HERE / "peer_torch.py"), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
            bufsize=1,
        )

    def __call__(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise PeerUnavailable(f"the peer process ended (exit {self.proc.wait()})")
        out = json.loads(line)
        if "error" in out:
            raise PeerUnavailable(f"the peer failed on {cmd['cmd']!r}: {out['error']}")
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
