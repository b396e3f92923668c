"""Spec-stamped, atomic, verified checkpoints (Equinox serialisation).

A checkpoint is one file: a JSON header line (format, library version, model spec and its hash, the
SHA-256 of the payload, small metadata) followed by the leaves serialised with
`equinox.tree_serialise_leaves`. Writes go to a temporary file that is fsynced and renamed over
the target, and the previous good checkpoint is kept beside it as ``<name>.prev``, so a crash at
any moment leaves at least one loadable checkpoint.

Compatibility: a checkpoint loads into any dpm_ppl of the same major version whose model spec hashes
the same (`spec_sha256`); the parameter layout of a model is fixed by its spec within a major version.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import equinox as eqx
import jax

from .._version import __version__


__all__ = ["CheckpointError", "is_prng_key", "load", "save", "spec_sha256"]

_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, truncated, corrupted, or of another model."""


def _major(version: str) -> str:
    return version.split(".")[0].split("+")[0]


def spec_sha256(spec: dict) -> str:
    """SHA-256 of the spec's canonical JSON (sorted keys): equal specs, equal hashes."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def is_prng_key(x: Any) -> bool:
    """A typed PRNG key array (``jax.random.key``), which must travel as its key data."""
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _raw_keys(tree: Any) -> Any:
    """Typed PRNG keys cannot be serialised: store their key data."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if is_prng_key(x) else x, tree)


def _typed_keys(tree: Any, like: Any) -> Any:
    return jax.tree.map(
        lambda x, l: jax.random.wrap_key_data(x, impl=jax.random.key_impl(l)) if is_prng_key(l) else x, tree, like
    )


def save(path: str | os.PathLike, tree: Any, spec: dict, meta: dict | None = None) -> None:
    """Write ``tree`` atomically with its ``spec`` and ``meta``; keep the previous file as ``.prev``."""
    path = Path(path)
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, _raw_keys(tree))
    payload = buffer.getvalue()
    header = {
        "format": _FORMAT,
        "library_version": __version__,
        "spec": spec,
        "spec_sha256": spec_sha256(spec),
        "meta": meta or {},
        "sha256": hashlib.sha256(payload).hexdigest(),
        "size": len(payload),
    }
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(json.dumps(header).encode() + b"\n")
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    if path.exists():
        _keep_previous(path)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _keep_previous(path: Path) -> None:
    """Make ``<path>.prev`` a copy of ``path`` without ever removing ``path``.

    Renaming ``path`` away first would leave a window in which no checkpoint carries the run's name,
    and a process killed inside it would resume from scratch. A hard link (a copy where the
    filesystem has none) under a temporary name, renamed over ``.prev``, keeps ``path`` in place.
    """
    prev, staging = path.with_name(path.name + ".prev"), path.with_name(path.name + ".prev.tmp")
    staging.unlink(missing_ok=True)
    try:
        os.link(path, staging)
    except OSError:
        shutil.copyfile(path, staging)
    os.replace(staging, prev)


def read_header(path: str | os.PathLike) -> tuple[dict, bytes]:
    """The header and the verified payload of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {str(path)!r}: train first (`dpm fit ... --out DIR`).")
    raw = path.read_bytes()
    line, sep, payload = raw.partition(b"\n")
    try:
        header = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        header = None
    if not sep or not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a dpm_ppl checkpoint (unreadable header).")
    if len(payload) != header.get("size") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CheckpointError(
            f"{str(path)!r} is truncated or corrupted (its content hash does not match); "
            f"use the previous checkpoint {str(path) + '.prev'!r} if it exists."
        )
    return header, payload


def load(path: str | os.PathLike, like: Any, spec: dict | None = None) -> tuple[Any, dict]:
    """Read a checkpoint into the structure of ``like``; check its library's major version and its spec.

    Raises `CheckpointError` naming both versions when the major versions differ, or the first field of the
    spec that differs when the spec hashes differ.
    """
    header, payload = read_header(path)
    if _major(header["library_version"]) != _major(__version__):
        raise CheckpointError(
            f"{str(path)!r} was written by dpm_ppl {header['library_version']}, this is {__version__} (another "
            "major version, whose parameter layout may differ); retrain, or install that version to use it."
        )
    if spec is not None and header.get("spec_sha256", spec_sha256(header["spec"])) != spec_sha256(spec):
        diff = sorted(k for k in set(spec) | set(header["spec"]) if spec.get(k) != header["spec"].get(k))
        k = diff[0]
        raise CheckpointError(
            f"{str(path)!r} holds a different model: spec field {k!r} is {header['spec'].get(k)!r} there "
            f"but {spec.get(k)!r} here. Use the model script and settings it was trained with."
        )
    try:
        tree = _typed_keys(eqx.tree_deserialise_leaves(io.BytesIO(payload), _raw_keys(like)), like)
    except Exception as err:  # equinox raises assorted errors on a structure mismatch
        raise CheckpointError(f"{str(path)!r} does not match this model's parameters: {err}") from err
    return tree, header
