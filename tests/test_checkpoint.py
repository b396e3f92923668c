"""Spec-stamped, atomic, verified checkpoints: round trip, `.prev` rotation, and every refusal."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dpm_ppl
from dpm_ppl import CheckpointError
from dpm_ppl.infer import _checkpoint as checkpoint


SPEC = {"model": "toy", "T": 5, "width": 32}


def tree(scale=1.0):
    return {
        "w": scale * jnp.arange(6.0).reshape(2, 3),
        "b": jnp.array([scale, -scale], jnp.float32),
        "n": jnp.array(7, jnp.int32),
        "nested": (scale * jnp.ones(4), {"k": jnp.array([1, 2, 3], jnp.uint32)}),
        "key": jax.random.key(int(scale * 10)),  # a typed PRNG key, as in an SVI state
    }


def assert_trees_equal(a, b):
    """Same structure, dtypes, shapes and values (typed PRNG keys compared through their key data)."""
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(x, y)


def test_round_trip(tmp_path):
    """save then load returns the same leaves (values, dtypes, shapes, typed PRNG keys), the spec and the
    metadata."""
    path = tmp_path / "ck.eqx"
    checkpoint.save(path, tree(2.5), SPEC, {"step": 100, "history": {"loss": [1.0, 0.5]}})
    loaded, header = checkpoint.load(path, tree(0.0), SPEC)
    assert_trees_equal(loaded, tree(2.5))
    assert header["spec"] == SPEC and header["meta"] == {"step": 100, "history": {"loss": [1.0, 0.5]}}
    assert header["library_version"] == dpm_ppl.__version__
    assert not (tmp_path / "ck.eqx.tmp").exists()  # the temporary file was renamed away
    loaded, _ = checkpoint.load(path, tree(0.0))  # spec=None skips the spec check
    assert_trees_equal(loaded, tree(2.5))


def test_previous_checkpoint_kept(tmp_path):
    """A second save keeps the first file as `<name>.prev`; both load, with their own contents."""
    path = tmp_path / "ck.eqx"
    checkpoint.save(path, tree(1.0), SPEC, {"step": 1})
    assert not (tmp_path / "ck.eqx.prev").exists()
    checkpoint.save(path, tree(2.0), SPEC, {"step": 2})
    new, h_new = checkpoint.load(path, tree(0.0), SPEC)
    old, h_old = checkpoint.load(tmp_path / "ck.eqx.prev", tree(0.0), SPEC)
    assert_trees_equal(new, tree(2.0))
    assert_trees_equal(old, tree(1.0))
    assert (h_new["meta"]["step"], h_old["meta"]["step"]) == (2, 1)


def _saved(tmp_path):
    path = tmp_path / "ck.eqx"
    checkpoint.save(path, tree(1.0), SPEC)
    return path


def test_truncated_file(tmp_path):
    """A file cut short (a crash mid-write of a copy) is refused as 'truncated or corrupted', naming it."""
    path = _saved(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    with pytest.raises(CheckpointError, match=r"ck\.eqx' is truncated or corrupted .*ck\.eqx\.prev"):
        checkpoint.load(path, tree(0.0), SPEC)


def test_flipped_byte(tmp_path):
    """One flipped payload byte (same length) fails the SHA-256 check: 'truncated or corrupted'."""
    path = _saved(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"truncated or corrupted"):
        checkpoint.load(path, tree(0.0), SPEC)


def test_different_spec_names_field(tmp_path):
    """A checkpoint of another model is refused, naming the differing spec field and both values."""
    path = _saved(tmp_path)
    with pytest.raises(CheckpointError, match=r"spec field 'width' is 32 there but 64 here"):
        checkpoint.load(path, tree(0.0), dict(SPEC, width=64))
    with pytest.raises(CheckpointError, match=r"spec field 'extra' is None there but 1 here"):
        checkpoint.load(path, tree(0.0), dict(SPEC, extra=1))


def _with_version(path, version):
    line, _, payload = path.read_bytes().partition(b"\n")
    header = json.loads(line)
    header["library_version"] = version
    path.write_bytes(json.dumps(header).encode() + b"\n" + payload)


def test_other_major_version_refused(tmp_path):
    """A checkpoint written by another major version of dpm_ppl (header edited) is refused, naming both versions."""
    path = _saved(tmp_path)
    major = int(dpm_ppl.__version__.split(".")[0])
    _with_version(path, f"{major + 1}.0.0")
    with pytest.raises(
        CheckpointError,
        match=rf"written by dpm_ppl {major + 1}\.0\.0, this is " + dpm_ppl.__version__.replace(".", r"\."),
    ):
        checkpoint.load(path, tree(0.0), SPEC)


def test_same_major_version_accepted(tmp_path):
    """A checkpoint of an equal spec written by another minor or patch version of the same major loads."""
    path = _saved(tmp_path)
    major = dpm_ppl.__version__.split(".")[0]
    _with_version(path, f"{major}.999.7")
    loaded, header = checkpoint.load(path, tree(0.0), SPEC)
    assert header["library_version"] == f"{major}.999.7"
    assert header["spec_sha256"] == checkpoint.spec_sha256(dict(reversed(list(SPEC.items()))))
    assert_trees_equal(loaded, tree(1.0))


def test_missing_and_foreign_files(tmp_path):
    """No file → 'No checkpoint at <path>'; a file that is not a checkpoint → unreadable header."""
    with pytest.raises(CheckpointError, match=r"No checkpoint at .*nothing\.eqx"):
        checkpoint.load(tmp_path / "nothing.eqx", tree(0.0))
    other = tmp_path / "notes.txt"
    other.write_text("hello\nworld")
    with pytest.raises(CheckpointError, match=r"notes\.txt' is not a dpm_ppl checkpoint"):
        checkpoint.load(other, tree(0.0))


def test_structure_mismatch(tmp_path):
    """Loading into a pytree of other shapes is a CheckpointError, not a silent reinterpretation."""
    path = _saved(tmp_path)
    like = tree(0.0)
    like["w"] = jnp.zeros((3, 3))
    with pytest.raises(CheckpointError, match=r"does not match this model's parameters"):
        checkpoint.load(path, like, SPEC)


def test_checkpoint_error_is_value_error():
    """CheckpointError subclasses ValueError, so generic handlers catch it."""
    assert issubclass(CheckpointError, ValueError)
