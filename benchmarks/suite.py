"""The benchmarks: dpm_ppl beside the hand-written JAX version and the PyTorch peer, and the cost curves in T.

Every benchmark builds the Swiss-roll model of ``models/swiss_roll.py`` (T = 40: learned schedule,
`MLPNet` width 128 depth 3 with a per-step readout, the script's optimiser) and, from the same
parameters, the hand-written JAX model (`benchmarks.handwritten`) and the PyTorch peer. Each
first checks that the implementations compute the same numbers from the same parameters and key
(an `AssertionError` otherwise), then times them in interleaved repeats. Per-call times exclude
compilation, which is reported on its own.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import dpm_ppl as dpm
from dpm_ppl import log_likelihood
from dpm_ppl.cli._experiment import load_script
from dpm_ppl.datasets import SwissRoll
from dpm_ppl.infer import make_svi

from . import handwritten as hw
from . import peer as peer_mod
from .timing import compile_time, interleaved, memory, paired_ratio, seconds, stats


ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "models" / "swiss_roll.py"
LOSS_RTOL = 1e-4  # float32 sums over a batch of 256 reordered by XLA


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one run measures; `PRESETS` holds the full run, ``--quick`` and the test's ``tiny``."""

    repeats: int = 11
    train_repeats: int = 31  # a training call is short (~0.3 s): more pairs to outvote load spikes
    train_T: int = 40
    batch: int = 256
    steps_per_call: int = 100  # SVI steps fused in one jitted `lax.scan`, as `dpm fit` runs them
    sample_T: int = 1_000
    num_samples: int = 256
    lik_M: int = 256
    lik_data: int = 16
    lik_chunk: int = 64
    growth_Ts: tuple[int, ...] = (40, 1_000, 4_000)
    growth_repeats: int = 5
    compile_repeats: int = 2
    memory_batches: tuple[int, ...] = (256, 1_024, 4_096, 8_192)
    lik_Ms: tuple[int, ...] = (64, 256, 1_024, 2_048)
    image_scripts: tuple[str, ...] = ("digits", "mnist")  # models/*.py: 8×8 (T = 100) and 28×28 (T = 1000)
    image_batches: tuple[int, ...] = (32, 128, 512)
    sections: tuple[str, ...] = ("train", "sample", "likelihood", "growth", "memory", "images")


PRESETS = {
    "full": Settings(),
    "quick": Settings(
        repeats=7,
        train_repeats=15,
        growth_Ts=(40, 4_000),
        growth_repeats=3,
        compile_repeats=1,
        memory_batches=(256, 8_192),
        lik_Ms=(64, 512),
        image_scripts=("digits",),
        image_batches=(128,),
    ),
    "tiny": Settings(
        repeats=2,
        train_repeats=2,
        train_T=8,
        batch=32,
        steps_per_call=2,
        sample_T=8,
        num_samples=16,
        lik_M=8,
        lik_data=4,
        lik_chunk=4,
        growth_Ts=(8, 16),
        growth_repeats=1,
        compile_repeats=1,
        memory_batches=(16, 32),
        lik_Ms=(),
        sections=("sample",),  # the cheapest compile: the tests check the machinery, not the numbers
    ),
}


class Setup:
    """The dpm_ppl model, its SVI state and the hand-written model holding the same parameters."""

    def __init__(self, T: int, batch: int):
        experiment = load_script(SCRIPT)
        self.config = experiment.train
        self.diffusion = experiment.model(jax.random.key(0), T)
        self.svi = make_svi(self.diffusion, self.config)
        self.x = jnp.asarray(SwissRoll(num_train=2 * max(batch, 2), num_test=16).split(0).train[:batch])
        self.state = self.svi.init(jax.random.key(1), self.x)
        self.params = self.svi.get_params(self.state)
        self.hand = hw.from_dpm(self.params, self.diffusion.network)
        self.optimizer = self.config.optimizer()
        self.hand_arrays, self.hand_static = eqx.partition(self.hand, eqx.is_inexact_array)
        self.hand_carry = (self.hand_arrays, self.optimizer.init(self.hand_arrays), self.state.rng_key)

    def dpm_train(self, steps: int):
        """``steps`` SVI updates in one jitted scan on the fixed batch (what `dpm fit` compiles)."""
        svi = self.svi

        def chunk(state, x):
            return jax.lax.scan(lambda s, _: svi.update(s, x), state, None, length=steps)

        return jax.jit(chunk)

    def hand_train(self, steps: int):
        """The same updates by hand."""
        optimizer, static = self.optimizer, self.hand_static

        def chunk(carry, x):
            def body(carry, _):
                arrays, opt_state, key = carry
                model, opt_state, key, loss = hw.train_step(optimizer, eqx.combine(arrays, static), opt_state, key, x)
                return (eqx.filter(model, eqx.is_inexact_array), opt_state, key), loss

            return jax.lax.scan(body, carry, None, length=steps)

        return jax.jit(chunk)

    def peer_config(self) -> dict:
        c = self.config
        keys = ("steps", "learning_rate", "final_learning_rate", "warmup", "grad_clip")
        return {k: getattr(c, k) for k in keys}


def _close(a, b, what: str, rtol: float = LOSS_RTOL, atol: float = 0.0) -> str:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.allclose(a, b, rtol=rtol, atol=atol), f"{what}: max |a − b| = {np.max(np.abs(a - b)):.3g}"
    return f"{what} max|Δ| {np.max(np.abs(a - b)):.1e}"


def _row(kind: str, name: str, unit: float, times: dict[str, list[float]], checks: list[str], compiles: dict) -> dict:
    scaled = {k: [v / unit for v in vs] for k, vs in times.items()}
    row = {"kind": kind, "name": name, "checks": checks, "compile_s": compiles}
    for k, vs in scaled.items():
        row[k] = stats(vs)
    row["ratio_hand"] = paired_ratio(scaled["dpm"], scaled["hand"])
    if "torch" in scaled:
        row["ratio_torch"] = paired_ratio(scaled["dpm"], scaled["torch"])
    return row


def _first_calls(dpm_first: Callable[[], float], hand_first: Callable[[], float]) -> dict[str, float]:
    """The first call of each (trace, compile, run) with JAX's caches cleared before it."""
    out = {}
    for name, first in (("dpm", dpm_first), ("hand", hand_first)):
        jax.clear_caches()
        out[name] = first()
    return out


def bench_train(s: Settings, peer: peer_mod.PeerClient | None, tmp: Path, log: Callable) -> dict:
    """One SVI step of `DiffusionELBO` (T = train_T, batch) vs the hand-written step vs PyTorch."""
    log(f"train step: T = {s.train_T}, batch {s.batch}, {s.steps_per_call} steps per call")
    st = Setup(s.train_T, s.batch)
    n = s.steps_per_call
    d, key = st.diffusion, jax.random.key(5)
    one_loss = jax.jit(lambda p, k, x: dpm.DiffusionELBO().loss(k, p, d.model, d.guide, x))(st.params, key, st.x)
    checks = [_close(one_loss, jax.jit(hw.loss)(st.hand, key, st.x), "loss")]
    fd, fh = st.dpm_train(n), st.hand_train(n)
    first_d = seconds(fd, st.state, st.x)
    first_h = seconds(fh, st.hand_carry, st.x)
    compiles = _first_calls(first_d, first_h)
    _, losses_d = fd(st.state, st.x)
    _, losses_h = fh(st.hand_carry, st.x)
    checks.append(_close(losses_d, losses_h, f"{n}-step losses", rtol=1e-3))
    runs = {"dpm": seconds(fd, st.state, st.x), "hand": seconds(fh, st.hand_carry, st.x)}
    if peer is not None:
        t, noise = jax.jit(hw._draws, static_argnums=(1, 2, 3))(key, s.batch, s.train_T, st.x.shape)
        npz = peer_mod.write_npz(tmp / "train.npz", st.hand, st.x, st.peer_config(), {"t": t, "noise": noise})
        peer(cmd="setup", name="train", npz=str(npz))
        torch_loss = peer(cmd="check", name="train")["loss"]
        # rtol 1e-3: near t = 2 the KL divides by β̃_t ~ 1e-6, amplifying float32 rounding of the means
        # (different GEMMs: MKL vs XLA) to ~1e-4 of the loss
        reference = jax.jit(hw.loss_from_draws)(st.hand, st.x, t, noise)
        checks.append(_close(torch_loss, reference, "torch loss", rtol=1e-3))
        threads = peer(cmd="threads", name="train", op="train", arg=min(n, 10))["threads"]
        checks.append(f"torch threads {threads}")
        runs["torch"] = lambda: peer(cmd="train", name="train", steps=n)["seconds"]
    times = interleaved(runs, s.train_repeats)
    compiles = {k: max(v - stats(times[k])["median"], 0.0) for k, v in compiles.items()}
    return _row("train", f"train step (T={s.train_T}, batch {s.batch})", n, times, checks, compiles)


def bench_sample(s: Settings, peer: peer_mod.PeerClient | None, tmp: Path, log: Callable) -> dict:
    """Ancestral sampling (`dpm_ppl.sample`) at T = sample_T vs a hand-written `lax.scan` vs PyTorch."""
    log(f"sampling: T = {s.sample_T}, {s.num_samples} samples per call")
    st = Setup(s.sample_T, 2)
    bound = st.diffusion.bind(st.params)
    n, key = s.num_samples, jax.random.key(3)
    hand_sample = jax.jit(hw.sample, static_argnums=(2, 3))
    first_d = seconds(lambda: dpm.sample(bound, key, n).x0)
    first_h = seconds(hand_sample, st.hand, key, n)
    compiles = _first_calls(first_d, first_h)
    reference = hand_sample(st.hand, key, n)
    checks = [_close(dpm.sample(bound, key, n).x0, reference, "samples", rtol=1e-4, atol=1e-5)]
    runs = {"dpm": seconds(lambda: dpm.sample(bound, key, n).x0), "hand": seconds(hand_sample, st.hand, key, n)}
    if peer is not None:
        draws = peer_mod.sample_draws(key, n, s.sample_T)
        npz = peer_mod.write_npz(tmp / "sample.npz", st.hand, st.x, st.peer_config(), draws)
        peer(cmd="setup", name="sample", npz=str(npz))
        torch_samples = peer(cmd="check", name="sample")["samples"]
        checks.append(_close(torch_samples, reference, "torch samples", rtol=1e-3, atol=1e-4))
        threads = peer(cmd="threads", name="sample", op="sample", arg=n)["threads"]
        checks.append(f"torch threads {threads}")
        runs["torch"] = lambda: peer(cmd="sample", name="sample", n=n)["seconds"]
    times = interleaved(runs, s.repeats)
    compiles = {k: max(v - stats(times[k])["median"], 0.0) for k, v in compiles.items()}
    return _row("sample", f"sampling (T={s.sample_T}, {n} samples)", 1, times, checks, compiles)


def bench_likelihood(s: Settings, log: Callable) -> dict:
    """Importance-sampled log p(x⁰) (`dpm_ppl.log_likelihood`, with its ESS and PSIS k̂) vs by hand."""
    log(f"likelihood: T = {s.train_T}, M = {s.lik_M}, {s.lik_data} data, chunks of {s.lik_chunk}")
    st = Setup(s.train_T, 2)
    bound = st.diffusion.bind(st.params)
    x0 = np.asarray(SwissRoll(num_train=16, num_test=s.lik_data).split(0).test)
    key = jax.random.key(7)
    settings = dict(num_trajectories=s.lik_M, chunk_size=s.lik_chunk, batch_size=s.lik_data)
    data_keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(s.lik_data))
    hand = jax.jit(hw.log_likelihood, static_argnums=(3, 4))
    args = (st.hand, data_keys, jnp.asarray(x0), s.lik_M, s.lik_chunk)
    first_d = seconds(lambda: log_likelihood(bound, x0, key, **settings).log_p_hat)
    first_h = seconds(hand, *args)
    compiles = _first_calls(first_d, first_h)
    est = log_likelihood(bound, x0, key, **settings)
    checks = [_close(est.log_p_hat, hand(*args), "log p̂", rtol=1e-3, atol=1e-3)]
    runs = {"dpm": seconds(lambda: log_likelihood(bound, x0, key, **settings).log_p_hat), "hand": seconds(hand, *args)}
    times = interleaved(runs, s.repeats)
    compiles = {k: max(v - stats(times[k])["median"], 0.0) for k, v in compiles.items()}
    return _row(
        "likelihood", f"log-likelihood (T={s.train_T}, M={s.lik_M}, {s.lik_data} data)", 1, times, checks, compiles
    )


def growth(s: Settings, log: Callable) -> list[dict]:
    """Compile time and per-step / per-call time of training and sampling against T.

    At each T: JAX's caches are cleared, each function's first call gives its first compile time,
    then the four run interleaved. Further compile measurements (``compile_repeats``) go round
    every T in turn, so that a drift of the machine does not masquerade as growth in T.
    """
    steps, n, key = max(1, s.steps_per_call // 10), s.num_samples, jax.random.key(3)
    makers, times, compiles = {}, {}, {}
    for T in s.growth_Ts:
        log(f"growth: T = {T}")
        st = Setup(T, s.batch)
        bound = st.diffusion.bind(st.params)
        fresh = {
            "train_dpm": lambda st=st: seconds(st.dpm_train(steps), st.state, st.x),
            "train_hand": lambda st=st: seconds(st.hand_train(steps), st.hand_carry, st.x),
            "sample_dpm": lambda b=bound: seconds(lambda: dpm.sample(b, key, n).x0),
            "sample_hand": lambda st=st: seconds(jax.jit(lambda m, k: hw.sample(m, k, n)), st.hand, key),
        }
        jax.clear_caches()  # nothing compiled by an earlier T or benchmark is reused
        runs, firsts = {}, {}
        for k, make in fresh.items():
            runs[k] = make()
            firsts[k] = runs[k]()
            makers[(T, k)] = make
        for k, ts in interleaved(runs, s.growth_repeats).items():
            times[(T, k)] = ts
            compiles[(T, k)] = [max(firsts[k] - stats(ts)["median"], 0.0)]
    for r in range(s.compile_repeats - 1):
        log(f"growth: compile times, round {r + 2} of {s.compile_repeats}")
        for tk, make in makers.items():
            compiles[tk].append(compile_time(make, stats(times[tk])["median"]))
    rows = []
    for T in s.growth_Ts:
        row = {"T": T, "steps_per_call": steps, "num_samples": n}
        for k in ("train_dpm", "train_hand", "sample_dpm", "sample_hand"):
            unit = steps if k.startswith("train") else 1
            row[k] = stats([v / unit for v in times[(T, k)]])
            row[f"{k}_compile"] = stats(compiles[(T, k)])
        for what in ("train", "sample"):
            row[f"{what}_ratio"] = paired_ratio(times[(T, f"{what}_dpm")], times[(T, f"{what}_hand")])
        rows.append(row)
    return rows


def memory_rows(s: Settings, log: Callable) -> list[dict]:
    """XLA's compiled memory of one training step (T = train_T) and of sampling (T = sample_T) by batch size."""
    rows = []
    st = Setup(s.train_T, max(s.memory_batches))
    ss = Setup(s.sample_T, 2)
    bound = ss.diffusion.bind(ss.params)
    key = jax.random.key(3)
    for b in s.memory_batches:
        log(f"memory: batch {b}")
        x = st.x[:b]
        hand_step = jax.jit(lambda c, x: hw.train_step(st.optimizer, eqx.combine(c[0], st.hand_static), *c[1:], x))
        row = {
            "batch": b,
            "train_dpm": memory(jax.jit(st.svi.update), st.state, x),
            "train_hand": memory(hand_step, st.hand_carry, x),
            "sample_dpm": memory(jax.jit(lambda bd, k: dpm.sample(bd, k, b, batch_size=b).x0), bound, key),
            "sample_hand": memory(jax.jit(hw.sample, static_argnums=(2, 3)), ss.hand, key, b),
        }
        rows.append(row)
    return rows


IMAGE_STEPS = 2  # fused steps per timed call: an image step takes tens to hundreds of milliseconds here


def images(s: Settings, log: Callable) -> list[dict]:
    """dpm_ppl's training step on the image scripts (`dpm_ppl.nn.ImageNet`) at their own T and batch:
    compile time, per-step time, compiled memory by batch size. Random inputs of the images' shape (the
    cost does not depend on the pixels). There is no hand-written or PyTorch image network to compare with."""
    rows = []
    for name in s.image_scripts:
        experiment = load_script(ROOT / "models" / f"{name}.py")
        T, batch = experiment.num_steps, experiment.train.batch_size
        diffusion = experiment.model(jax.random.key(0), T)
        log(f"images: {name} {diffusion.event_shape}, T = {T}, batch {batch}")
        svi = make_svi(diffusion, experiment.train)
        x = jax.random.normal(jax.random.key(1), (batch, *diffusion.event_shape))
        state = svi.init(jax.random.key(2), x)

        def chunk(state, x, svi=svi):
            return jax.lax.scan(lambda st, _: svi.update(st, x), state, None, length=IMAGE_STEPS)

        jax.clear_caches()
        run = seconds(jax.jit(chunk), state, x)
        first = run()
        steady = stats([run() / IMAGE_STEPS for _ in range(max(2, s.growth_repeats))])
        mem = {}
        for b in s.image_batches:
            xb = jax.random.normal(jax.random.key(1), (b, *diffusion.event_shape))
            mem[b] = memory(jax.jit(svi.update), state, xb)
        rows.append(
            {
                "script": f"models/{name}.py",
                "event_shape": diffusion.event_shape,
                "T": T,
                "batch": batch,
                "steps_per_call": IMAGE_STEPS,
                "compile_s": max(first - steady["median"] * IMAGE_STEPS, 0.0),
                "step": steady,
                "memory": mem,
            }
        )
    return rows


def run_all(s: Settings, peer: peer_mod.PeerClient | None, log: Callable = print) -> dict:
    """Every benchmark; returns the results as one dict (see `benchmarks.report`)."""
    jax.config.update("jax_enable_compilation_cache", False)  # compile times must be real compiles
    abstraction = []
    with tempfile.TemporaryDirectory() as tmp:
        if "train" in s.sections:
            abstraction.append(bench_train(s, peer, Path(tmp), log))
        if "sample" in s.sections:
            abstraction.append(bench_sample(s, peer, Path(tmp), log))
    if "likelihood" in s.sections:
        abstraction.append(bench_likelihood(s, log))
    return {
        "abstraction": abstraction,
        "growth": growth(s, log) if "growth" in s.sections else [],
        "memory": memory_rows(s, log) if "memory" in s.sections else [],
        "images": images(s, log) if "images" in s.sections else [],
    }
