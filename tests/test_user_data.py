"""Your own data: `FileData` reads .npy, .npz and .csv files, splits and standardises them, and the
scripts models/tabular.py and models/binary.py size their defaults from the data they are given.

(The whole pipeline on such a file, `dpm fit --data` then `dpm sample` and `dpm evaluate`, runs in
test_scripts.py; every refusal is in test_validation.py.)
"""

from pathlib import Path

import jax
import numpy as np
import pytest

from dpm_ppl.data import FileData
from dpm_ppl.experiment import load_script


ROOT = Path(__file__).resolve().parents[1]
X = np.random.default_rng(0).normal(size=(50, 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -1.0]


def _same(a, b):
    # values are stored as float32 (check_data); CSV text round-trips float64 exactly
    np.testing.assert_array_equal(a, np.asarray(b, np.float32))


@pytest.mark.parametrize("kind", ["npy", "npz", "npz_named", "npz_key", "csv_header", "csv_plain", "csv_blank_lines"])
def test_reads_every_format(tmp_path, kind):
    """Each documented layout gives the same (50, 3) float32 array, read-only."""
    path = tmp_path / f"d.{kind.split('_')[0]}"
    key = None
    if kind == "npy":
        np.save(path, X)
    elif kind == "npz":
        np.savez(path, X)  # a single unnamed array
    elif kind == "npz_named":
        np.savez(path, labels=np.arange(50), x=X)  # several arrays: the one named `x`
    elif kind == "npz_key":
        np.savez(path, labels=np.arange(50), features=X)
        key = "features"
    elif kind == "csv_header":
        np.savetxt(path, X, delimiter=",", header="a,b,c", comments="")
    elif kind == "csv_plain":
        np.savetxt(path, X, delimiter=",")
    else:
        rows = [",".join(repr(float(v)) for v in row) for row in X]
        path.write_text("a, b, c\n\n" + "\n".join(rows[:10]) + "\n\n" + "\n".join(rows[10:]) + "\n\n")
    data = FileData(path, key=key)
    x = data.array()
    _same(x, X)
    assert x.dtype == np.float32 and not x.flags.writeable
    assert data.event_shape == (3,) and data.num_examples == 50 and data.name == "d"


def test_split_is_a_seeded_partition(tmp_path):
    """raw(seed): a held-out set of round(fraction·n) rows and the rest for training, disjoint and covering the
    file, the same for the same seed and different for another; split() standardises with the training rows."""
    path = tmp_path / "d.npy"
    np.save(path, X)
    data = FileData(path, heldout_fraction=0.2)
    train, test = data.raw(seed=1)
    assert train.shape == (40, 3) and test.shape == (10, 3)
    rows = {tuple(r) for r in np.concatenate([train, test])}
    assert rows == {tuple(r) for r in X.astype(np.float32)} and len(rows) == 50
    again, _ = data.raw(seed=1)
    other, _ = data.raw(seed=2)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)
    split = data.split(seed=1)
    # one global scale: mean ‖z‖² = d on the training rows (float32 rounding of 40 values of size O(1))
    assert abs(float((split.train.astype(np.float64) ** 2).sum(-1).mean()) - 3.0) < 1e-4
    np.testing.assert_allclose(split.standardiser.inverse(split.test), test, rtol=0, atol=1e-4 * 15)
    # at least one row is held out, and at least one is kept for training
    assert FileData(path, heldout_fraction=0.001).raw(0)[1].shape[0] == 1
    assert FileData(path, heldout_fraction=0.999).raw(0)[0].shape[0] == 1


def test_rewritten_file_is_read_again(tmp_path):
    """The read is cached, but not across a change of the file."""
    path = tmp_path / "d.npy"
    np.save(path, X)
    assert FileData(path).num_examples == 50
    np.save(path, X[:20])
    assert FileData(path).num_examples == 20


def test_tabular_defaults_scale_with_dimension(tmp_path):
    """models/tabular.py: width max(128, 16·d), 20,000 + 2,000·d steps, T = 40, a unit-variance split; the run
    folder is named after the file."""
    for dim, width, steps in ((3, 128, 26_000), (20, 320, 60_000)):
        path = tmp_path / f"table{dim}.csv"
        np.savetxt(path, np.random.default_rng(dim).normal(size=(30, dim)), delimiter=",")
        experiment = load_script(ROOT / "models" / "tabular.py", data=path)
        assert experiment.name == f"tabular_table{dim}" and experiment.num_steps == 40
        assert experiment.train.steps == steps and experiment.train.eval_every == steps // 4
        diffusion = experiment.model(jax.random.key(0), 5)
        assert diffusion.event_shape == (dim,) and diffusion.network.layers[0].out_features == width


def test_binary_base_rate_is_the_smoothed_data_rate(tmp_path):
    """models/binary.py: p = (ones + 1)/(entries + 2) of the file, T = 1000, not rescaled."""
    bits = np.zeros((40, 10), np.int8)
    bits[:, :3] = 1  # 120 ones in 400 entries
    path = tmp_path / "bits.npy"
    np.save(path, bits)
    experiment = load_script(ROOT / "models" / "binary.py", data=path)
    diffusion = experiment.model(jax.random.key(0), 5)
    assert diffusion.base_rate == pytest.approx(121 / 402, rel=1e-12)
    assert experiment.num_steps == 1000 and diffusion.event_shape == (10,)
    split = experiment.data.split(0, check=diffusion.family.check_data, standardise=diffusion.family.standardise)
    assert set(np.unique(split.train)) <= {0.0, 1.0} and split.standardiser.scale == 1.0
