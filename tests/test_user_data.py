"""Your own data: `FileData` reads .npy, .npz and .csv files, splits and standardises them, and the
scripts models/tabular.py and models/binary.py size their defaults from the data they are given.

(The whole pipeline on such a file, `dpm fit --data` then `dpm sample` and `dpm evaluate`, runs in
test_scripts.py; every refusal is in test_validation.py.)
"""

import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

from dpm_ppl import DataWarning
from dpm_ppl.cli._experiment import load_script
from dpm_ppl.datasets import FileData, Standardiser


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
    header = kind in ("csv_header", "csv_blank_lines")  # "a, b, c": names stripped of spaces
    assert data.column_names == (["a", "b", "c"] if header else ["x0", "x1", "x2"])


def _rows(a):
    return {tuple(r) for r in np.asarray(a, np.float32)}


def test_split_is_a_seeded_partition(tmp_path):
    """raw(seed): a held-out set of round(fraction·n) rows and the rest; split(seed) carves round(0.1·rest)
    validation rows out of the rest. The three sets are disjoint rows of the file covering it, the same for
    the same seed and different for another, and the standardiser is fitted on the training rows alone."""
    path = tmp_path / "d.npy"
    np.save(path, X)
    data = FileData(path, heldout_fraction=0.2)
    rest, test = data.raw(seed=1)
    assert rest.shape == (40, 3) and test.shape == (10, 3)
    assert _rows(np.concatenate([rest, test])) == _rows(X) and len(_rows(X)) == 50
    train, val, test3 = data.raw_split(seed=1)
    assert train.shape == (36, 3) and val.shape == (4, 3)
    np.testing.assert_array_equal(test3, test)
    assert not _rows(train) & _rows(val) and _rows(train) | _rows(val) == _rows(rest)  # val from the rest only
    again, _ = data.raw(seed=1)
    other, _ = data.raw(seed=2)
    np.testing.assert_array_equal(rest, again)
    assert not np.array_equal(rest, other)
    np.testing.assert_array_equal(data.raw_split(seed=1)[1], val)
    assert not np.array_equal(data.raw_split(seed=2)[1], val)
    with pytest.warns(DataWarning, match=r"Only 36 training rows"):
        split = data.split(seed=1)
    assert split.train.shape == (36, 3) and split.val.shape == (4, 3) and split.test.shape == (10, 3)
    fitted = Standardiser.fit(train)  # the training rows alone
    np.testing.assert_array_equal(split.standardiser.shift, fitted.shift)
    assert split.standardiser.scale == fitted.scale and not split.standardiser.per_column
    for name, raw in (("train", train), ("val", val), ("test", test)):
        np.testing.assert_array_equal(getattr(split, name), fitted(raw))
    # one global scale: mean ‖z‖² = d on the training rows (float32 rounding of 36 values of size O(1))
    assert abs(float((split.train.astype(np.float64) ** 2).sum(-1).mean()) - 3.0) < 1e-4
    np.testing.assert_allclose(split.standardiser.inverse(split.test), test, rtol=0, atol=1e-4 * 15)
    # at least one row is held out, and at least two are kept (one to train on, one to validate on)
    assert FileData(path, heldout_fraction=0.001).raw(0)[1].shape[0] == 1
    assert FileData(path, heldout_fraction=0.999).raw(0)[0].shape[0] == 2
    train, val, _ = FileData(path, heldout_fraction=0.999).raw_split(0)
    assert len(train) == len(val) == 1
    train, val, _ = FileData(path, validation_fraction=0.999).raw_split(0)
    assert len(train) == 1 and len(val) == 44


def test_three_rows_are_the_minimum(tmp_path):
    """Three rows split one each into train, validation and test (unscaled; standardising needs two
    training rows that differ, hence four rows); two are refused, saying why."""
    path = tmp_path / "d.npy"
    np.save(path, X[:3])
    with pytest.warns(DataWarning, match=r"Only 1 training row for 3 columns"):
        split = FileData(path).split(0, standardise=False)
    assert len(split.train) == len(split.val) == len(split.test) == 1
    assert _rows(np.concatenate([split.train, split.val, split.test])) == _rows(X[:3])
    with pytest.warns(DataWarning), pytest.raises(ValueError, match=r"The training data are constant"):
        FileData(path).split(0)
    np.save(path, X[:4])
    with pytest.warns(DataWarning, match=r"Only 2 training rows"):
        split = FileData(path).split(0)
    assert (len(split.train), len(split.val), len(split.test)) == (2, 1, 1)
    np.save(path, X[:2])
    with pytest.raises(
        ValueError, match=r"holds 2 examples; at least 3 are needed \(one each to train on, to validate"
    ):
        FileData(path).split(0)


@pytest.mark.parametrize("bad", [{"validation_fraction": 0.0}, {"validation_fraction": 1.0}, {"heldout_fraction": 1}])
def test_fractions_are_validated(tmp_path, bad):
    with pytest.raises(ValueError, match=r"must lie strictly inside \(0, 1\)"):
        FileData(tmp_path / "d.npy", **bad)


def test_per_column_standardisation(tmp_path):
    """per_column=True: each training column of z has mean 0 and sd 1 (X's columns differ 100-fold in scale)."""
    path = tmp_path / "d.npy"
    np.save(path, np.random.default_rng(3).normal(size=(400, 3)) * [1.0, 10.0, 0.1] + [0.0, 5.0, -1.0])
    split = FileData(path, per_column=True).split(0)
    assert split.standardiser.per_column and split.standardiser.scale.shape == (3,)
    z = split.train.astype(np.float64)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1.0, rtol=0, atol=1e-5)
    assert split.standardiser.log_jacobian(3) == pytest.approx(
        float(np.log(split.standardiser.scale.astype(np.float64)).sum()), rel=1e-12
    )


def _table(tmp_path, header="alcohol,ph,sugar,density"):
    x = np.random.default_rng(4).normal(size=(20, 4)) + np.arange(4)
    path = tmp_path / "wine.csv"
    np.savetxt(path, x, delimiter=",", header=header, comments="")
    return path, x


@pytest.mark.parametrize(
    ("columns", "kept"),
    [
        (["sugar", "alcohol"], [2, 0]),
        ([1, 3], [1, 3]),
        ([-1], [3]),
        ((np.int64(0), "density"), [0, 3]),
        ("alcohol, 2,-1", [0, 2, 3]),
        ("ph", [1]),
    ],
)
def test_columns_by_name_index_and_string(tmp_path, columns, kept):
    """`columns` keeps the named or indexed columns, in the order given; column_names follows."""
    path, x = _table(tmp_path)
    data = FileData(path, columns=columns)
    _same(data.array(), x[:, kept])
    assert data.event_shape == (len(kept),)
    assert data.column_names == [["alcohol", "ph", "sugar", "density"][j] for j in kept]


def test_columns_without_header_are_named_by_index(tmp_path):
    """Without a header (and in .npy files) the columns are x0, x1, …, by their index in the file."""
    path = tmp_path / "d.npy"
    np.save(path, X)
    data = FileData(path, columns=[2, "x0"])
    _same(data.array(), X[:, [2, 0]])
    assert data.column_names == ["x2", "x0"]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["alcohol", "colour"], r"has no column 'colour'\. Its columns are: 'alcohol', 'ph', 'sugar', 'density'"),
        ([4], r"Column index 4 is out of range .* which has 4 columns .*'alcohol', 'ph', 'sugar', 'density'"),
        ("-5", r"Column index -5 is out of range"),
        (["ph", 1], r"names the column 'ph' \(index 1\) .* twice"),
    ],
)
def test_bad_columns_list_the_names(tmp_path, columns, message):
    path, _ = _table(tmp_path)
    with pytest.raises(ValueError, match=message):
        FileData(path, columns=columns).array()


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ([], r"`columns` is empty"),
        ("a,,b", r"empty entry"),
        ([1.5], r"names \(str\) or indices \(int\)"),
        (3, "sequence"),
    ],
)
def test_malformed_columns_refused_at_construction(tmp_path, columns, message):
    with pytest.raises(ValueError, match=message):
        FileData(tmp_path / "d.csv", columns=columns)


def test_header_must_name_every_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2,3\n4,5,6\n")
    with pytest.raises(ValueError, match=r"header of 2 names \(line 1\) but rows of 3 values"):
        FileData(path).array()


def _columns_file(tmp_path, n=200, constant=None, tiny_sd=None):
    x = np.random.default_rng(5).normal(size=(n, 3))
    if constant is not None:
        x[:, constant] = 2.5
    if tiny_sd is not None:
        x[:, tiny_sd] = 4.0 + 1e-5 * x[:, tiny_sd]
    path = tmp_path / "c.csv"
    np.savetxt(path, x, delimiter=",", header="a,b,c", comments="")
    return path


def test_healthy_data_do_not_warn(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FileData(_columns_file(tmp_path)).split(0)
        FileData(_columns_file(tmp_path, tiny_sd=1), per_column=True).split(0)  # per column: a small sd is fine


def test_constant_column_warns_and_drop_constant_drops_it(tmp_path):
    """A constant column is named in a warning with the two fixes; drop_constant=True removes it."""
    path = _columns_file(tmp_path, constant=1)
    fixes = r"Column 'b' \(= 2\.5\) of the data file .* is constant in the training rows.*columns=.*drop_constant=True"
    with pytest.warns(DataWarning, match=fixes):
        split = FileData(path).split(0)
    assert np.ptp(split.train[:, 1]) == 0
    with pytest.warns(DataWarning, match=fixes):
        split = FileData(path, per_column=True).split(0)
    assert split.standardiser.scale[1] == 1.0 and np.all(split.train[:, 1] == 0)  # no division by zero
    data = FileData(path, drop_constant=True)
    assert data.column_names == ["a", "c"] and data.event_shape == (2,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split = data.split(0)
    assert split.train.shape[1] == 2
    assert FileData(path, columns="c,b", drop_constant=True).column_names == ["c"]
    with pytest.raises(ValueError, match=r"Every kept column .* is constant"):
        FileData(path, columns="b", drop_constant=True).array()


def test_near_constant_column_warns(tmp_path):
    """A column whose sd is 10⁻⁵ of the others' is named, suggesting per_column=True or columns=."""
    path = _columns_file(tmp_path, tiny_sd=2)
    with pytest.warns(
        DataWarning, match=r"Column 'c' \(sd [0-9.e-]+\) .* varies far less than the others.*per_column=True"
    ):
        FileData(path).split(0)


def test_tiny_data_warn(tmp_path):
    """Fewer than 50 training rows, or fewer than 10 per column: the bits will be noisy, the model may overfit."""
    message = r"Only {} training rows for {} columns .*noisy.*overfit"
    with pytest.warns(DataWarning, match=message.format(32, 3)):
        FileData(_columns_file(tmp_path, n=40)).split(0)
    path = tmp_path / "wide.npy"
    np.save(path, np.random.default_rng(6).normal(size=(100, 12)))
    with pytest.warns(DataWarning, match=message.format(81, 12).replace(" .*", r" .*fewer than 120.*")):
        FileData(path).split(0)


def test_rewritten_file_is_read_again(tmp_path):
    """The read is cached, but not across a change of the file."""
    path = tmp_path / "d.npy"
    np.save(path, X)
    assert FileData(path).num_examples == 50
    np.save(path, X[:20])
    assert FileData(path).num_examples == 20


def test_tabular_defaults_scale_with_rows_and_columns(tmp_path):
    """models/tabular.py: width min(1024, max(128, 16·d), max(64, n/4)), up to min(200,000, max(20,000 + 2,000·d,
    4·n)) steps with validation every 250 and patience 20, T = 40, one scale per column; the run folder is named
    after the file (n = training rows of the three-way split)."""
    for rows, dim, width, steps in ((30, 3, 64, 26_000), (2_000, 20, 320, 60_000), (50_000, 2, 128, 162_000)):
        path = tmp_path / f"table{dim}.npy"
        np.save(path, np.random.default_rng(dim).normal(size=(rows, dim)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tiny data
            experiment = load_script(ROOT / "models" / "tabular.py", data=path)
            n = len(experiment.data.split(0).train)
        assert experiment.name == f"tabular_table{dim}" and experiment.num_steps == 40
        assert experiment.data.per_column and experiment.train.patience == 20 and experiment.train.eval_every == 250
        assert experiment.train.steps == steps, (n, experiment.train.steps)
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
    with pytest.warns(DataWarning, match=r"Only 32 training rows"):  # binary: no column warnings, not rescaled
        split = experiment.data.split(0, check=diffusion.family.check_data, standardise=diffusion.family.standardise)
    assert set(np.unique(split.train)) <= {0.0, 1.0} and split.standardiser.scale == 1.0
