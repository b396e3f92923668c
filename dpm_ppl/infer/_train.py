"""Training by SVI on the bound K: a jitted loop with minibatches, optax, progress, validation, checkpoints.

Shaped as blackjax and numpyro shape inference: `init` gives the SVI and its `TrainState`, `update`
is one pure, jittable step (``svi.update`` and a status saying whether it was finite), and `fit` is
the host loop around them. ``svi.run`` cannot take minibatches and ``svi.update`` is not jitted
(ecosystem notes §1), so `fit` fuses ``steps_per_call`` `update` steps into one jitted `lax.scan`
(compiled once per chunk length) and does everything else between chunks. Minibatch indices come from
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

Numerical guard: every step reports a status from inside the compiled loop (`update`: the loss
finite, and the parameters the optimiser made from its gradient finite, or which one is not).
With ``on_nonfinite="stop"`` (default) the loop keeps the state from before the first bad step,
and `fit` raises `NonFiniteError` naming the step and the term of the bound (or the parameter
whose gradient) that went non-finite; no checkpoint is written from a non-finite state. With
``on_nonfinite="skip"`` such a step leaves the parameters and the optimiser unchanged and is
counted in ``history["skipped_steps"]``.

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
from ._sharding import DataMesh, data_mesh


__all__ = [
    "FitResult", "NonFiniteError", "TrainConfig", "TrainState", "TrainingInterrupted", "evaluate_bound", "fit", "init",
    "make_svi", "update",
]  # fmt: skip

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


class TrainState(NamedTuple):
    """What the compiled training step carries from one step to the next.

    **Attributes:**

    - `svi_state`: the `SVIState` (the unconstrained parameters, the optimiser's moments and step
      count, the PRNG key). `fit` keeps it replicated on every device; ``checkpoint.eqx`` holds it.
    """

    svi_state: SVIState


def init(
    diffusion: AbstractDiffusion, config: TrainConfig, key: PRNGKeyArray, first_batch: Array
) -> tuple[SVI, TrainState]:
    """The SVI of `make_svi` and its initial state, ``svi.init(key, first_batch)``.

    ``first_batch`` (a minibatch, e.g. the first ``batch_size`` training rows) only gives the shapes
    the model and guide are traced with; the parameters come from the diffusion's initial values.
    """
    svi = make_svi(diffusion, config)
    return svi, TrainState(svi.init(key, first_batch))


def update(svi: SVI, state: TrainState, batch: Array) -> tuple[TrainState, Array, Array]:
    """One SVI step on the minibatch ``batch``, ``svi.update``: a gradient step on the loss −K (the
    bound of Eq 14 summed over the batch, nats), refused when it is not finite.

    Returns the new state, the loss and a status: 0 (`_OK`) for a finite step; 1 (`_BAD_LOSS`) when
    the loss is not finite; 2 (`_BAD_GRAD`) when the loss is finite but the parameters the optimiser
    made are not. With `make_svi`'s optimiser the latter is exactly a non-finite gradient:
    `optax.clip_by_global_norm` divides every leaf by the global norm, so a NaN gradient makes every
    update NaN and an infinite one makes its own leaf ∞/∞ = NaN, which Adam carries into the
    parameters (a finite gradient cannot: its clipped Adam step is of the order of the learning
    rate). SVI exposes no gradient, so `update` reads the parameters. A refused step keeps the
    parameters and the optimiser state and takes the new PRNG key, so the next step draws new noise
    (``on_nonfinite="skip"``). Pure and jittable: the status is traced, with no Python ``if``.
    """
    new, loss = svi.update(state.svi_state, batch)
    params = svi.optim.get_params(new.optim_state)  # unconstrained, as the optimiser made them
    params_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
    status = jnp.where(jnp.isfinite(loss), jnp.where(params_finite, _OK, _BAD_GRAD), _BAD_LOSS)
    refused = state.svi_state._replace(rng_key=new.rng_key)
    return TrainState(jax.lax.cond(status == _OK, lambda: new, lambda: refused)), loss, status


def _batch_indices(data_key: PRNGKeyArray, step: int | Array, batch: int, num_train: int) -> Array:
    """The training rows of step ``step``'s minibatch, drawn with replacement from ``fold_in(data_key, step)``."""
    return jax.random.randint(jax.random.fold_in(data_key, step), (batch,), 0, num_train)


def _compile_chunk(
    svi: SVI, train: Array, data_key: PRNGKeyArray, batch: int, on_nonfinite: str, mesh: DataMesh
) -> Callable[[TrainState, int, int], tuple[TrainState, tuple[Array, Array]]]:
    """``chunk(state, first_step, n)``: `update` on the minibatches of steps ``first_step`` … ``first_step
    + n − 1`` of the replicated ``train`` in one jitted `lax.scan`, returning the last state and every
    step's loss and status.

    ``n`` is static (compiled once per chunk length); each minibatch is sharded along its batch axis.
    With ``on_nonfinite="stop"`` the state freezes at the one before the first bad step (its PRNG key
    too, so `_non_finite_error` replays that step); with ``"skip"`` a bad step is `update`'s refused one.
    """
    num_train = train.shape[0]

    def chunk(state: TrainState, first_step: Array, n: int) -> tuple[TrainState, tuple[Array, Array]]:
        def body(carry: tuple[TrainState, Array], i: Array):
            state, stopped = carry
            xb = jax.lax.with_sharding_constraint(
                train[_batch_indices(data_key, first_step + i, batch, num_train)], mesh.split
            )
            updated, loss, status = update(svi, state, xb)
            if on_nonfinite == "stop":
                new = jax.lax.cond((status == _OK) & ~stopped, lambda: updated, lambda: state)
            else:
                new = updated
            return (new, stopped | (status != _OK)), (loss, status)

        (state, _), out = jax.lax.scan(body, (state, jnp.asarray(False)), jnp.arange(n))
        return state, out

    return jax.jit(chunk, static_argnums=2, out_shardings=mesh.replicated)


def _chunk_length(config: TrainConfig, step: int) -> int:
    """Steps of the chunk starting at ``step``: ``steps_per_call``, cut at the next evaluation, checkpoint
    or last step, so chunks never straddle them (a few chunk lengths, each compiled once)."""
    return min(
        config.steps_per_call,
        config.steps - step,
        config.eval_every - step % config.eval_every,
        config.checkpoint_every - step % config.checkpoint_every,
    )


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
    key), or find the parameters whose gradient is not finite.

    Only through SVI's public methods: ``svi.evaluate`` is the loss ``svi.update`` differentiated (the
    same split of the state's key), and SVI exposes no gradient, so the gradient is that of
    ``svi.evaluate`` with respect to the unconstrained parameters, put in a state by ``svi.optim.init``.
    """
    _, rng_key_step = jax.random.split(state.rng_key)  # the key of the step's loss (`svi.update`, `svi.evaluate`)
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
            rng_key_step, svi.get_params(state), svi.model, svi.guide, batch
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
        grads = jax.grad(lambda raw: svi.evaluate(state._replace(optim_state=svi.optim.init(raw)), batch))(
            svi.optim.get_params(state.optim_state)
        )
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


def _new_history() -> dict[str, Any]:
    """The history of a fresh run (its keys: `fit`'s docstring)."""
    return {
        "step": [], "loss_bits": [], "eval_step": [], "eval_K_bits": [], "skipped_steps": [], "seconds": 0.0,
        "best_step": None, "best_K_bits": None, "stopped_step": None,
    }  # fmt: skip


class _Checkpoints:
    """The run folder's ``checkpoint.eqx`` and ``best.eqx`` (neither without ``out_dir``); process 0 alone writes.

    `last_saved` is the step that ``checkpoint.eqx`` holds (``None`` until a fresh run writes it) and
    `last_save_time` the `time.monotonic` of that write (or of the start), for ``checkpoint_seconds``.
    """

    def __init__(self, out_dir: str | Path | None, spec: dict, on_checkpoint: Callable[[int], None] | None):
        self.path = Path(out_dir) / CHECKPOINT if out_dir is not None else None
        self.best_path = Path(out_dir) / BEST_CHECKPOINT if out_dir is not None else None
        self.spec, self.on_checkpoint = spec, on_checkpoint
        self.lead = jax.process_index() == 0
        self.last_saved: int | None = None
        self.last_save_time = time.monotonic()

    def resume(self, like: SVIState, keep_best: bool) -> tuple[SVIState, dict[str, Any], int, SVIState | None]:
        """The checkpoint's state, history and step, and (with ``keep_best``) the state of its best validation K."""
        if self.path is None:
            raise ValueError("`resume=True` needs `out_dir`, the run folder holding the checkpoint.")
        if not self.path.exists():
            raise FileNotFoundError(f"`--resume` was given but there is no checkpoint at {str(self.path)!r}.")
        state, header = checkpoint.load(self.path, like, self.spec)
        history = header["meta"]["history"]
        for name in ("best_step", "best_K_bits", "stopped_step"):  # checkpoints of earlier versions lack them
            history.setdefault(name, None)
        history.setdefault("skipped_steps", [])
        start = int(header["meta"]["step"])
        best, best_state = history["best_step"], None
        if best is not None and keep_best:
            assert self.best_path is not None  # `out_dir` is given (checked above)
            best_state = state if best == start else _load_best(self.best_path, state, self.spec, best, self.path)
        self.last_saved, self.last_save_time = start, time.monotonic()
        return state, history, start, best_state

    def overdue(self, seconds: float | None) -> bool:
        """Whether ``seconds`` of wall time (``None``: never) have passed since the last write."""
        return seconds is not None and time.monotonic() - self.last_save_time >= seconds

    def save(self, step: int, state: TrainState, history: dict[str, Any]) -> None:
        """Write ``checkpoint.eqx`` (once per step) with the history and best-so-far, then call ``on_checkpoint``."""
        if self.path is None or not self.lead or self.last_saved == step:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        best = {"step": history["best_step"], "K_bits": history["best_K_bits"]}
        meta = {"step": step, "history": history, "best": best}
        checkpoint.save(self.path, _local(state.svi_state), self.spec, meta)
        self.last_saved, self.last_save_time = step, time.monotonic()
        if self.on_checkpoint is not None:
            self.on_checkpoint(step)

    def save_best(self, step: int, state: SVIState, K_bits: float) -> None:
        """Write ``best.eqx``, the (local) state of the best validation K, at ``step``."""
        if self.best_path is None or not self.lead:
            return
        self.best_path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.save(self.best_path, state, self.spec, {"step": step, "K_bits": K_bits})


def _rank(K: float | None) -> float:
    """Validation K for comparison: a non-finite one never beats a finite one."""
    return K if K is not None and math.isfinite(K) else -math.inf


class _Validation:
    """The validation K every ``eval_every`` steps and at the last one, with the best state and the
    patience counter; what it finds goes into ``history`` (``eval_*``, ``best_*``, ``stopped_step``).

    The bound is evaluated on ``val[:eval_size]`` with one ``key`` (the same noise every time), and
    `best_state` is the local SVI state of the best K so far.
    """

    def __init__(
        self,
        diffusion: AbstractDiffusion,
        svi: SVI,
        val: np.ndarray,
        key: PRNGKeyArray,
        config: TrainConfig,
        history: dict[str, Any],
        best_state: SVIState | None,
    ):
        self.diffusion, self.svi, self.key, self.config, self.history = diffusion, svi, key, config, history
        self.rows = np.asarray(val[: config.eval_size])
        self.best_state = best_state
        # evaluations since the best one (the patience counter), from the history so that it survives a resume
        best = history["best_step"]
        self.stale = sum(1 for s in history["eval_step"] if best is not None and s > best)

    def due(self, step: int) -> bool:
        """Whether ``step`` is an evaluation step."""
        return step % self.config.eval_every == 0 or step == self.config.steps

    def __call__(self, step: int, state: TrainState) -> SVIState | None:
        """Evaluate K (bits) at ``step``: the (local) state if its K is the best so far (now
        `best_state`), else ``None``."""
        local = _local(state.svi_state)
        terms = evaluate_bound(self.diffusion, self.svi.get_params(local), self.rows, self.key)
        K = float(terms.bits()["K"].mean())
        history, patience = self.history, self.config.patience
        history["eval_step"].append(step)
        history["eval_K_bits"].append(K)
        improved = history["best_step"] is None or _rank(K) > _rank(history["best_K_bits"])
        if improved:
            history["best_step"], history["best_K_bits"], self.stale = step, K, 0
            self.best_state = local  # arrays are immutable and never donated: a reference is a copy
        else:
            self.stale += 1
            if patience is not None and self.stale >= patience and step < self.config.steps:
                history["stopped_step"] = step
        return local if improved else None


def _postfix(bar: tqdm, history: dict[str, Any]) -> None:
    """The progress bar's last training K, last validation K and best step."""
    shown = {"K_bits": f"{-history['loss_bits'][-1]:.3f}"} if history["loss_bits"] else {}
    if history["eval_K_bits"]:
        shown["val_K"] = f"{history['eval_K_bits'][-1]:.3f}"
        shown["best"] = history["best_step"]
    bar.set_postfix(shown)


def _interrupted(
    signal_name: str, step: int, config: TrainConfig, path: Path | None, state: SVIState
) -> TrainingInterrupted:
    """The error raised after the chunk in which ``signal_name`` was caught (the checkpoint already written)."""
    where = (
        f"the checkpoint at {path} holds it"
        if path is not None
        else "no checkpoint was written (`fit` was given no `out_dir`)"
    )
    return TrainingInterrupted(
        f"training interrupted by {signal_name} at step {step} of {config.steps}; {where}",
        step=step, signal_name=signal_name, checkpoint=path, state=state,
    )  # fmt: skip


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

    The loop is `init`, then chunks of `update` compiled as one `lax.scan` each; between chunks the
    host evaluates, checkpoints, updates the progress bar and looks for a caught signal.
    """
    # data at the door: shape, finiteness and the family's support (binary data must be 0 or 1)
    train = jnp.asarray(diffusion.family.check_data(train, diffusion.event_shape, "train data"))
    val = diffusion.family.check_data(val, diffusion.event_shape, "validation data")
    num_train = train.shape[0]
    batch = _global_batch(config.batch_size, num_train)
    mesh = data_mesh()
    init_key, data_key, eval_key = jax.random.split(key, 3)
    svi, state = init(diffusion, config, init_key, train[:batch])
    ckpts = _Checkpoints(out_dir, spec or {}, on_checkpoint)
    history, start, best_state = _new_history(), 0, None
    if resume:
        svi_state, history, start, best_state = ckpts.resume(state.svi_state, config.keep_best)
        state = TrainState(svi_state)
    validation = _Validation(diffusion, svi, val, eval_key, config, history, best_state)
    replicated_train, state = _replicate((train, state), mesh.replicated)
    chunk = _compile_chunk(svi, replicated_train, data_key, batch, config.on_nonfinite, mesh)
    bits_per_loss = 1.0 / (batch * math.log(2.0))
    t0 = time.perf_counter() - float(history["seconds"])
    step = start
    bar = tqdm(
        total=config.steps, initial=start, disable=not (progress and ckpts.lead), unit="step", dynamic_ncols=True
    )
    try:
        with _SignalFlag() as signals:
            while step < config.steps and history["stopped_step"] is None:
                n = _chunk_length(config, step)
                new_state, (losses, status) = chunk(state, step, n)
                losses, status = np.asarray(losses), np.asarray(status)
                bad = np.flatnonzero(status != _OK)
                if bad.size and config.on_nonfinite == "stop":
                    bad_step = step + int(bad[0])
                    raise _non_finite_error(
                        svi, config, _local(new_state.svi_state), bad_step, int(status[bad[0]]),
                        np.asarray(_batch_indices(data_key, bad_step, batch, num_train)), train,
                        saved=ckpts.last_saved,
                    )  # fmt: skip
                history["skipped_steps"].extend(step + int(j) for j in bad)
                state, step = new_state, step + n
                good = np.delete(losses, bad)
                history["step"].append(step)
                history["loss_bits"].append(float(good.mean() * bits_per_loss) if good.size else math.nan)
                new_best = validation(step, state) if validation.due(step) else None
                if new_best is not None:  # best.eqx before the checkpoint that refers to it
                    ckpts.save_best(step, new_best, history["best_K_bits"])
                bar.update(n)
                _postfix(bar, history)
                history["seconds"] = time.perf_counter() - t0
                caught = signals.agreed()
                if (
                    new_best is not None or history["stopped_step"] is not None or caught is not None
                    or step == config.steps or step % config.checkpoint_every == 0
                    or ckpts.overdue(config.checkpoint_seconds)
                ):  # fmt: skip
                    ckpts.save(step, state, history)
                if caught is not None:
                    raise _interrupted(caught, step, config, ckpts.path, _local(state.svi_state))
    finally:
        bar.close()
    if config.keep_best and validation.best_state is not None:
        final, returned_step = validation.best_state, int(history["best_step"])
    else:
        final, returned_step = _local(state.svi_state), step
    stopped_early = history["stopped_step"] is not None
    return FitResult(svi.get_params(final), final, history, float(history["seconds"]), returned_step, stopped_early)
