"""Training by SVI on the bound K: a jitted loop with minibatches, optax, progress, validation, checkpoints.

``svi.run`` cannot take minibatches and ``svi.update`` is not jitted (ecosystem notes §1), so the
loop fuses ``steps_per_call`` SVI updates into one jitted `lax.scan`. Minibatch indices come from
``fold_in(data_key, step)``, so an interrupted run resumed from its checkpoint draws exactly the
batches and noise an uninterrupted run would have. Chunks end on multiples of ``eval_every`` and
``checkpoint_every`` (and at the last step), so where a run is resumed never changes its chunks.

Validation and early stopping: every ``eval_every`` steps and at the last one, the bound K (bits)
is evaluated on up to ``eval_size`` validation rows with one fixed evaluation key (the same noise
every time: successive evaluations are paired comparisons, so noise does not pick the best step).
The state with the best validation K is kept in memory and, with ``out_dir``, written to
``best.eqx`` whenever it improves; ``patience`` evaluations without improvement stop the run, and
with ``keep_best`` (default) `fit` returns the best parameters rather than the last.

Checkpoints: with ``out_dir``, ``checkpoint.eqx`` holds the last SVI state with the history and the
best-so-far tracking (so a resumed run returns exactly what an uninterrupted one would). It is
written atomically every ``checkpoint_every`` steps, after ``checkpoint_seconds`` of wall time, at
every evaluation that improves the best (just after ``best.eqx``), when the run stops early, at the
end, and on SIGINT/SIGTERM: while `fit` runs (from the main thread) those signals only set a flag;
after the current compiled chunk the loop writes the checkpoint and raises `TrainingInterrupted`
(a `KeyboardInterrupt`), so a second Ctrl-C during the write cannot corrupt it.

Numerical guard: every step reports a status (the loss and every gradient finite, or which one
is not) from inside the compiled loop. With ``on_nonfinite="stop"`` (default) the loop keeps the
state from before the first bad step, and `fit` raises `NonFiniteError` naming the step and the
term of the bound (or the parameter whose gradient) that went non-finite; no checkpoint is written
from a non-finite state. With ``on_nonfinite="skip"`` such a step leaves the parameters and the
optimiser unchanged and is counted in ``history["skipped_steps"]``.

Data parallelism: the loop runs on every device JAX sees (all local devices, and every process's
devices after `jax.distributed.initialize`). Parameters, optimiser state and the training data
are replicated; each minibatch is sharded along its batch axis (``jax.sharding``), so XLA splits
the per-example work of the bound and sums the gradients across devices. Every process draws the
same global minibatch indices, so 1 and N devices train on identical batches and noise (random
bits are partitionable) and agree to float tolerance. Process 0 alone writes checkpoints; the
processes agree on a caught signal (one all-gather per chunk) so that all of them stop together.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jaxtyping import Array, PRNGKeyArray
from numpyro.infer import SVI
from numpyro.infer.svi import SVIState
from tqdm.auto import tqdm

from .._bound import BoundTerms, DiffusionELBO, Estimator
from .._checks import positive_int
from .._model import AbstractDiffusion
from . import _checkpoint as checkpoint
from ._sharding import data_mesh


__all__ = ["FitResult", "NonFiniteError", "TrainConfig", "TrainingInterrupted", "evaluate_bound", "fit", "make_svi"]

CHECKPOINT = "checkpoint.eqx"
BEST_CHECKPOINT = "best.eqx"
_EVAL_FLOATS = 2_000_000
_ON_NONFINITE = ("stop", "skip")
# per-step status from inside the compiled loop
_OK, _BAD_LOSS, _BAD_GRAD = 0, 1, 2
_TERMS = ("kl", "entropy_T", "entropy_1", "prior")
_SIGNALS = ("SIGINT", "SIGTERM")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Training settings; every field is validated at construction.

    The learning rate follows a cosine decay from ``learning_rate`` to ``final_learning_rate``
    after ``warmup`` linear steps; gradients are clipped to global norm ``grad_clip``.
    ``on_nonfinite`` says what a step whose loss or gradient is not finite does: ``"stop"``
    (raise `NonFiniteError`, keeping the last finite state) or ``"skip"`` (leave the parameters
    unchanged and count the step in ``history["skipped_steps"]``).

    Every ``eval_every`` steps (and at the last step) the bound K is evaluated on up to
    ``eval_size`` validation rows with one fixed key. ``patience`` stops the run after that many
    consecutive evaluations without a better validation K (``None``: never stop early); with
    ``keep_best`` `fit` returns the parameters of the best evaluation rather than the last ones.
    With an ``out_dir``, the checkpoint is also written when ``checkpoint_seconds`` of wall time
    have passed since the last one (checked after each chunk of ``steps_per_call`` steps; ``None``:
    only every ``checkpoint_every`` steps), so a crash loses about that much training.
    """

    steps: int = 20_000
    batch_size: int = 256
    learning_rate: float = 1e-3
    final_learning_rate: float = 1e-5
    warmup: int = 200
    grad_clip: float = 1.0
    estimator: Estimator = "stratified"
    steps_per_call: int = 100
    eval_every: int = 5_000
    checkpoint_every: int = 5_000
    eval_size: int = 2_000
    on_nonfinite: Literal["stop", "skip"] = "stop"
    patience: int | None = None
    keep_best: bool = True
    checkpoint_seconds: float | None = 60.0

    def __post_init__(self):
        for name in ("steps", "batch_size", "steps_per_call", "eval_every", "checkpoint_every", "eval_size"):
            positive_int(name, getattr(self, name))
        for name in ("learning_rate", "final_learning_rate", "grad_clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"`{name}` must be a positive finite number, got {value!r}.")
        if self.warmup < 0:
            raise ValueError(f"`warmup` must be ≥ 0, got {self.warmup!r}.")
        DiffusionELBO(self.estimator)  # validates the estimator name
        if self.on_nonfinite not in _ON_NONFINITE:
            raise ValueError(f"`on_nonfinite` must be one of {_ON_NONFINITE}, got {self.on_nonfinite!r}.")
        patience = self.patience
        if patience is not None and (
            isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 1
        ):
            raise ValueError(
                f"`patience` must be a positive integer (the evaluations without a better validation K "
                f"before training stops) or None (never stop early), got {patience!r}."
            )
        if not isinstance(self.keep_best, (bool, np.bool_)):
            raise ValueError(f"`keep_best` must be True or False, got {self.keep_best!r}.")
        seconds = self.checkpoint_seconds
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float, np.integer, np.floating))
            or not (math.isfinite(seconds) and seconds > 0)
        ):
            raise ValueError(
                f"`checkpoint_seconds` must be a positive finite number of seconds or None (checkpoint only "
                f"every `checkpoint_every` steps), got {seconds!r}."
            )

    def optimizer(self) -> optax.GradientTransformation:
        warmup = min(self.warmup, max(self.steps - 1, 0))
        schedule = optax.warmup_cosine_decay_schedule(
            init_value=self.learning_rate * 1e-2 if warmup else self.learning_rate,
            peak_value=self.learning_rate,
            warmup_steps=warmup,
            decay_steps=max(self.steps, warmup + 1),
            end_value=self.final_learning_rate,
        )
        return optax.chain(optax.clip_by_global_norm(self.grad_clip), optax.adam(schedule))


class NonFiniteError(FloatingPointError):
    """Training met a non-finite loss or gradient (``on_nonfinite="stop"``).

    **Attributes:**

    - `step`: the step (0-based) whose loss or gradient was not finite.
    - `cause`: ``"loss"`` or ``"gradient"``.
    - `terms`: the bound's terms that were not finite (of ``kl``, ``entropy_T``, ``entropy_1``,
      ``prior``, ``other``), or the parameters whose gradient was not.
    - `state`: the last finite SVI state, from before ``step``; `params` its parameters.
    """

    def __init__(self, message: str, *, step: int, cause: str, terms: list[str], state: SVIState, params: dict):
        super().__init__(message)
        self.step, self.cause, self.terms, self.state, self.params = step, cause, terms, state, params


class TrainingInterrupted(KeyboardInterrupt):
    """Training was stopped by SIGINT (Ctrl-C) or SIGTERM, after the compiled chunk that was running.

    A `KeyboardInterrupt`, so an uncaught one ends a program as Ctrl-C does. With an ``out_dir`` the
    checkpoint at `step` was written first: ``fit(..., resume=True)`` continues exactly where this
    run stopped.

    **Attributes:**

    - `step`: the number of steps done (the checkpoint's step).
    - `signal_name`: ``"SIGINT"`` or ``"SIGTERM"`` (the first one caught).
    - `checkpoint`: the path of the checkpoint holding `step`, or ``None`` (no ``out_dir``).
    - `state`: the SVI state at `step`.
    """

    resume_command: str  # set by `dpm fit` (the command that resumes the run); absent otherwise

    def __init__(self, message: str, *, step: int, signal_name: str, checkpoint: Path | None, state: SVIState):
        super().__init__(message)
        self.step, self.signal_name, self.checkpoint, self.state = step, signal_name, checkpoint, state


class FitResult(NamedTuple):
    """The trained params, their SVI state, the training history, the seconds of training, the step
    whose params are returned (the best validation K's with ``keep_best``, else the last step), and
    whether ``patience`` stopped the run early."""

    params: dict
    state: SVIState
    history: dict
    seconds: float
    best_step: int
    stopped_early: bool


def _replicate(tree: Any, sharding: NamedSharding) -> Any:
    """Host-identical values as arrays replicated over every device of every process."""

    def put(x):
        if checkpoint.is_prng_key(x):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))

    return jax.tree.map(put, tree)


def _local(tree: Any) -> Any:
    """A replicated tree as arrays on this process's first device (to save, evaluate and return)."""
    return jax.tree.map(lambda x: x.addressable_data(0) if isinstance(x, jax.Array) else x, tree)


def _global_batch(batch_size: int, num_train: int) -> int:
    """The minibatch size: ``batch_size`` (at most the data), a multiple of the device count."""
    devices = jax.device_count()
    batch = min(batch_size, num_train)
    if batch_size % devices:
        raise ValueError(
            f"`batch_size` = {batch_size} cannot be split over the {devices} devices training in parallel; "
            f"use a multiple of {devices} (e.g. {devices * max(1, round(batch_size / devices))})."
        )
    if batch < devices:
        raise ValueError(f"{num_train} training examples cannot be split over {devices} devices; give more data.")
    return batch - batch % devices


def make_svi(diffusion: AbstractDiffusion, config: TrainConfig) -> SVI:
    """``SVI(model, guide, optimizer, DiffusionELBO)`` for a diffusion and its training settings."""
    return SVI(diffusion.model, diffusion.guide, config.optimizer(), DiffusionELBO(config.estimator))


@eqx.filter_jit
def _batch_terms(diffusion: AbstractDiffusion, params: dict, estimator: Estimator, key: PRNGKeyArray, xb: Array):
    """One batch of `evaluate_bound`, compiled once per model structure and batch shape (not per call)."""
    terms, _, _ = DiffusionELBO(estimator).terms(key, params, diffusion.model, diffusion.guide, xb)
    return tuple(terms)[:-1]  # the arrays; `dim` is static


def evaluate_bound(
    diffusion: AbstractDiffusion,
    params: dict,
    x0: np.ndarray,
    key: PRNGKeyArray,
    *,
    estimator: Estimator = "all",
    batch_size: int | None = None,
) -> BoundTerms:
    """The bound's terms per example on data ``x0`` (e.g. held out), evaluated in batches.

    The default ``batch_size`` keeps ``"all"``'s (T − 1) × batch × d arrays near 2·10⁶ floats
    (1 000 examples for the Swiss roll, 50 for the heartbeat's T = 2000, d = 20).
    """
    if batch_size is None:
        batch_size = max(1, min(1_000, _EVAL_FLOATS // (diffusion.num_steps * diffusion.dim)))
    parts = []
    for i, start in enumerate(range(0, len(x0), batch_size)):
        xb = jnp.asarray(x0[start : start + batch_size])
        parts.append(_batch_terms(diffusion, params, estimator, jax.random.fold_in(key, i), xb))
    return BoundTerms(*(jnp.concatenate(xs) for xs in zip(*parts)), dim=diffusion.dim)


def _guarded_update(svi: SVI, state: SVIState, batch: Array) -> tuple[SVIState, Array, Array]:
    """``svi.update`` that also returns a status: `_OK`, `_BAD_LOSS` or `_BAD_GRAD` (traced, no Python ``if``)."""
    rng_key, rng_key_step = jax.random.split(state.rng_key)
    constrain_fn = svi.constrain_fn
    assert constrain_fn is not None  # set by `svi.init`

    def loss_fn(params):
        return svi.loss.loss(rng_key_step, constrain_fn(params), svi.model, svi.guide, batch, **svi.static_kwargs)

    params = svi.optim.get_params(state.optim_state)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    grads_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
    status = jnp.where(jnp.isfinite(loss), jnp.where(grads_finite, _OK, _BAD_GRAD), _BAD_LOSS)
    optim_state = svi.optim.update(grads, state.optim_state, value=loss)
    return SVIState(optim_state, state.mutable_state, rng_key), loss, status


def _non_finite_error(
    svi: SVI,
    config: TrainConfig,
    state: SVIState,
    step: int,
    status: int,
    idx: np.ndarray,
    train: Array,
    *,
    saved: int | None,
) -> NonFiniteError:
    """Diagnose the bad step from the state before it: replay its loss term by term (same batch and
    key), or find the parameters whose gradient is not finite."""
    _, rng_key_step = jax.random.split(state.rng_key)
    raw_params = svi.optim.get_params(state.optim_state)
    constrain_fn = svi.constrain_fn
    assert constrain_fn is not None  # set by `svi.init`
    batch = train[idx]
    kept = f"training stopped at step {step} with the last finite parameters (`err.state`); " + (
        f"the last checkpoint (step {saved}) is intact." if saved is not None else "no checkpoint was written."
    )
    fix = (
        "Lower `learning_rate` or `grad_clip`, check the data for extreme values, or set "
        'TrainConfig(on_nonfinite="skip") to skip such steps.'
    )
    if status == _BAD_LOSS:
        terms, _, other = DiffusionELBO(config.estimator).terms(
            rng_key_step, constrain_fn(raw_params), svi.model, svi.guide, batch
        )
        bad = [name for name in _TERMS if not np.all(np.isfinite(np.asarray(getattr(terms, name))))]
        parts = []
        for name in bad:
            j = int(np.flatnonzero(~np.isfinite(np.asarray(getattr(terms, name))))[0])
            parts.append(f"`{name}` (first at training example {int(idx[j])})")
        if not np.isfinite(np.asarray(other)):
            bad.append("other")
            parts.append("`other` (the model's and guide's other sites)")
        where = ", ".join(parts) if parts else "its sum"
        message = f"The bound became non-finite at step {step}: term {where} of K; {kept} {fix}"
        cause = "loss"
    else:
        grads = jax.grad(
            lambda p: svi.loss.loss(rng_key_step, constrain_fn(p), svi.model, svi.guide, batch, **svi.static_kwargs)
        )(raw_params)
        bad = [
            jax.tree_util.keystr(path)
            for path, g in jax.tree_util.tree_leaves_with_path(grads)
            if not np.all(np.isfinite(np.asarray(g)))
        ]
        message = (
            f"The gradient became non-finite at step {step} (the bound itself was finite), in the parameters "
            f"{', '.join(bad)}; {kept} {fix}"
        )
        cause = "gradient"
    return NonFiniteError(message, step=step, cause=cause, terms=bad, state=state, params=svi.get_params(state))


class _SignalFlag:
    """SIGINT and SIGTERM handlers that only record the signal (`caught`), installed for a ``with`` block.

    Only from the main thread (Python delivers signals there alone); a signal the process ignores
    (``SIG_IGN``, e.g. SIGINT in a background job) stays ignored. The previous handlers come back on exit.
    """

    def __init__(self):
        self.caught: list[str] = []
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        del frame
        self.caught.append(signal.Signals(signum).name)

    def __enter__(self) -> _SignalFlag:
        if threading.current_thread() is threading.main_thread():
            for name in _SIGNALS:
                sig = getattr(signal, name)
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def agreed(self) -> str | None:
        """The first signal caught, by this process or (in multi-process training) by any process."""
        code = _SIGNALS.index(self.caught[0]) + 1 if self.caught else 0
        if jax.process_count() > 1:  # every process must leave the loop at the same chunk
            from jax.experimental import multihost_utils

            codes = np.asarray(multihost_utils.process_allgather(np.asarray(code, np.int32))).ravel()
            code = int(codes[codes > 0][0]) if np.any(codes > 0) else 0
        return _SIGNALS[code - 1] if code else None


def _load_best(path: Path, like: SVIState, spec: dict, step: int, ckpt_path: Path) -> SVIState:
    """The best state of a resumed run: ``best.eqx`` if it holds ``step``, else ``best.eqx.prev`` (a run
    killed between writing a new ``best.eqx`` and the checkpoint that refers to it)."""
    for candidate in (path, path.with_name(path.name + ".prev")):
        try:
            state, header = checkpoint.load(candidate, like, spec)
        except checkpoint.CheckpointError:
            continue
        if int(header["meta"].get("step", -1)) == step:
            return state
    raise checkpoint.CheckpointError(
        f"{str(ckpt_path)!r} says the best validation K was at step {step}, but neither {str(path)!r} nor its "
        f"`.prev` holds that step's parameters. Restore best.eqx, or resume with TrainConfig(keep_best=False) "
        "to return the last parameters."
    )


def fit(
    diffusion: AbstractDiffusion,
    train: np.ndarray | Array,
    val: np.ndarray | Array,
    config: TrainConfig,
    key: PRNGKeyArray,
    *,
    out_dir: str | Path | None = None,
    spec: dict | None = None,
    resume: bool = False,
    progress: bool = True,
    on_checkpoint: Callable[[int], None] | None = None,
) -> FitResult:
    """Train ``diffusion`` on ``train`` data (standardised, or binary for binomial diffusion) by SVI on K,
    monitoring the bound on the validation rows ``val``.

    ``key`` is split into three: initialisation, minibatches (``fold_in(data_key, step)``), and the
    one evaluation key of every validation K (``jax.random.split(key, 3)[2]``, passed to
    `evaluate_bound` with the default batch size on ``val[:config.eval_size]``). The history records
    ``step``/``loss_bits`` per chunk, ``eval_step``/``eval_K_bits`` per evaluation, ``best_step`` and
    ``best_K_bits`` (the best validation K so far), ``stopped_step`` (``None`` unless ``patience``
    stopped the run), ``skipped_steps`` and ``seconds``.

    With ``out_dir`` the last SVI state (+ history and best-so-far tracking) is written atomically to
    ``checkpoint.eqx`` (every ``checkpoint_every`` steps, every ``checkpoint_seconds``, at each new
    best, on stopping early or being interrupted, and at the end) and the best state to ``best.eqx``;
    ``resume=True`` continues from them and returns what the uninterrupted run would. ``on_checkpoint``
    is called with the step after each write of ``checkpoint.eqx``.

    SIGINT or SIGTERM (caught from the main thread) end the current chunk, write the checkpoint and
    raise `TrainingInterrupted`. A step whose loss or gradient is not finite either stops training
    with `NonFiniteError` (a `FloatingPointError` naming the step and the bound's term or the
    parameter, holding the last finite state; the last checkpoint is left untouched) or is skipped
    (``config.on_nonfinite``).
    """
    # data at the door: shape, finiteness and the family's support (binary data must be 0 or 1)
    train = jnp.asarray(diffusion.family.check_data(train, diffusion.event_shape, "train data"))
    val = diffusion.family.check_data(val, diffusion.event_shape, "validation data")
    num_train = train.shape[0]
    batch = _global_batch(config.batch_size, num_train)
    mesh = data_mesh()
    replicated, batch_sharding = mesh.replicated, mesh.split
    lead = jax.process_index() == 0
    svi = make_svi(diffusion, config)
    init_key, data_key, eval_key = jax.random.split(key, 3)
    state = svi.init(init_key, train[:batch])
    history: dict[str, Any] = {
        "step": [], "loss_bits": [], "eval_step": [], "eval_K_bits": [], "skipped_steps": [], "seconds": 0.0,
        "best_step": None, "best_K_bits": None, "stopped_step": None,
    }  # fmt: skip
    start = 0
    ckpt_path = Path(out_dir) / CHECKPOINT if out_dir is not None else None
    best_path = Path(out_dir) / BEST_CHECKPOINT if out_dir is not None else None
    spec = spec or {}
    best_state = None  # the (local) SVI state of the best validation K
    if resume:
        if ckpt_path is None:
            raise ValueError("`resume=True` needs `out_dir`, the run folder holding the checkpoint.")
        if not ckpt_path.exists():
            raise FileNotFoundError(f"`--resume` was given but there is no checkpoint at {str(ckpt_path)!r}.")
        state, header = checkpoint.load(ckpt_path, state, spec)
        history = header["meta"]["history"]
        for name in ("best_step", "best_K_bits", "stopped_step"):  # checkpoints of earlier versions lack them
            history.setdefault(name, None)
        history.setdefault("skipped_steps", [])
        start = int(header["meta"]["step"])
        best = history["best_step"]
        if best is not None and config.keep_best:
            assert best_path is not None  # `out_dir` is given (checked above)
            best_state = state if best == start else _load_best(best_path, state, spec, best, ckpt_path)
    train_host = train
    train, state = _replicate((train, state), replicated)

    def batch_indices(step):
        return jax.random.randint(jax.random.fold_in(data_key, step), (batch,), 0, num_train)

    skip = config.on_nonfinite == "skip"

    def chunk(state, first_step, n):
        def body(carry, i):
            state, stopped = carry
            xb = jax.lax.with_sharding_constraint(train[batch_indices(first_step + i)], batch_sharding)
            new_state, loss, status = _guarded_update(svi, state, xb)
            if skip:  # a bad step changes nothing but the PRNG key
                accept = status == _OK
                kept = state._replace(rng_key=new_state.rng_key)
            else:  # freeze at the state before the first bad step
                accept = (status == _OK) & ~stopped
                kept = state
            state = jax.lax.cond(accept, lambda: new_state, lambda: kept)
            return (state, stopped | (status != _OK)), (loss, status)

        (state, _), out = jax.lax.scan(body, (state, jnp.asarray(False)), jnp.arange(n))
        return state, out

    chunk = jax.jit(chunk, static_argnums=2, out_shardings=replicated)
    val_eval = np.asarray(val[: config.eval_size])
    bits_per_loss = 1.0 / (batch * math.log(2.0))

    def rank(K: float | None) -> float:
        """Validation K for comparison: a non-finite one never beats a finite one."""
        return K if K is not None and math.isfinite(K) else -math.inf

    last_saved = start if resume else None
    last_save_time = time.monotonic()

    def save(step: int) -> None:
        nonlocal last_saved, last_save_time
        if ckpt_path is None or not lead or last_saved == step:
            return
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        best = {"step": history["best_step"], "K_bits": history["best_K_bits"]}
        checkpoint.save(ckpt_path, _local(state), spec, {"step": step, "history": history, "best": best})
        last_saved, last_save_time = step, time.monotonic()
        if on_checkpoint is not None:
            on_checkpoint(step)

    def save_best(step: int) -> None:
        if best_path is None or not lead:
            return
        best_path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.save(best_path, best_state, spec, {"step": step, "K_bits": history["best_K_bits"]})

    def postfix() -> None:
        shown = {"K_bits": f"{-history['loss_bits'][-1]:.3f}"} if history["loss_bits"] else {}
        if history["eval_K_bits"]:
            shown["val_K"] = f"{history['eval_K_bits'][-1]:.3f}"
            shown["best"] = history["best_step"]
        bar.set_postfix(shown)

    t0 = time.perf_counter() - float(history["seconds"])
    step = start
    # evaluations since the best one (the patience counter), from the history so that it survives a resume
    stale = sum(1 for s in history["eval_step"] if history["best_step"] is not None and s > history["best_step"])
    stopped = history["stopped_step"] is not None
    bar = tqdm(total=config.steps, initial=start, disable=not (progress and lead), unit="step", dynamic_ncols=True)
    try:
        with _SignalFlag() as signals:
            while step < config.steps and not stopped:
                # end chunks on evaluation and checkpoint boundaries (a few chunk lengths, each compiled once)
                n = min(
                    config.steps_per_call,
                    config.steps - step,
                    config.eval_every - step % config.eval_every,
                    config.checkpoint_every - step % config.checkpoint_every,
                )
                new_state, (losses, status) = chunk(state, step, n)
                losses, status = np.asarray(losses), np.asarray(status)
                bad = np.flatnonzero(status != _OK)
                if bad.size and not skip:
                    bad_step = step + int(bad[0])
                    raise _non_finite_error(
                        svi, config, _local(new_state), bad_step, int(status[bad[0]]),
                        np.asarray(batch_indices(bad_step)), train_host, saved=last_saved,
                    )  # fmt: skip
                history["skipped_steps"].extend(step + int(j) for j in bad)
                state, step = new_state, step + n
                good = np.delete(losses, bad)
                history["step"].append(step)
                history["loss_bits"].append(float(good.mean() * bits_per_loss) if good.size else math.nan)
                improved = False
                if step % config.eval_every == 0 or step == config.steps:
                    local = _local(state)
                    terms = evaluate_bound(diffusion, svi.get_params(local), val_eval, eval_key)
                    K = float(terms.bits()["K"].mean())
                    history["eval_step"].append(step)
                    history["eval_K_bits"].append(K)
                    improved = history["best_step"] is None or rank(K) > rank(history["best_K_bits"])
                    if improved:
                        history["best_step"], history["best_K_bits"], stale = step, K, 0
                        best_state = local  # arrays are immutable and never donated: a reference is a copy
                        save_best(step)  # before the checkpoint that refers to it
                    else:
                        stale += 1
                        if config.patience is not None and stale >= config.patience and step < config.steps:
                            history["stopped_step"], stopped = step, True
                bar.update(n)
                postfix()
                history["seconds"] = time.perf_counter() - t0
                caught = signals.agreed()
                wall = config.checkpoint_seconds
                if (
                    improved or stopped or caught is not None or step == config.steps
                    or step % config.checkpoint_every == 0
                    or (wall is not None and time.monotonic() - last_save_time >= wall)
                ):  # fmt: skip
                    save(step)
                if caught is not None:
                    where = (
                        f"the checkpoint at {ckpt_path} holds it"
                        if ckpt_path is not None
                        else "no checkpoint was written (`fit` was given no `out_dir`)"
                    )
                    raise TrainingInterrupted(
                        f"training interrupted by {caught} at step {step} of {config.steps}; {where}",
                        step=step, signal_name=caught, checkpoint=ckpt_path, state=_local(state),
                    )  # fmt: skip
    finally:
        bar.close()
    state = _local(state)
    if config.keep_best and best_state is not None:
        state, returned_step = best_state, int(history["best_step"])
    else:
        returned_step = step
    stopped_early = history["stopped_step"] is not None
    return FitResult(svi.get_params(state), state, history, float(history["seconds"]), returned_step, stopped_early)
