"""Image classification data that installed packages ship: Fashion-MNIST and sklearn's digits.

Images come back as uint8 ``(n, height, width, 1)``, labels as int32 class ids.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np

from bigkeras.data.base import Data, Split, package_file, random_splits, reading

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_FASHION_MNIST_HOW = (
    "Install it with: sudo apt-get install dataset-fashion-mnist (or `make data`), or pass data_dir= "
    "a folder holding the four idx files (train-images-idx3-ubyte.gz, ...), or use --data tfds:fashion_mnist."
)
_IDX_UINT8 = 0x08  # idx type code of unsigned bytes


def fashion_mnist(*, data_dir: str | Path | None = None) -> Data:
    """Fashion-MNIST: 70,000 28x28 grey images of 10 clothing classes, 7,000 per class.

    Xiao, Rasul and Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking
    Machine Learning Algorithms", 2017. Read from Debian's ``dataset-fashion-mnist`` idx
    files (``/usr/share/datasets/fashion-mnist``) with the standard split.

    Args:
        data_dir: a folder with the four ``*-idx?-ubyte.gz`` files instead of Debian's.

    Returns:
        ``train`` 60,000 and ``test`` 10,000 images, uint8 ``(n, 28, 28, 1)``, int32 labels.

    Example:
        >>> x, y = fashion_mnist().test
        >>> x.shape, y[:3]
        ((10000, 28, 28, 1), array([9, 2, 1], dtype=int32))
    """
    folder = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    splits = {}
    for split, prefix, n in (("train", "train", 60_000), ("test", "t10k", 10_000)):
        images = _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", (n, 28, 28))
        labels = _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", (n,))
        splits[split] = Split(images[..., np.newaxis], labels.astype(np.int32))
    return Data("fashion_mnist", splits, FASHION_MNIST_CLASSES, source=str(folder))


def _read_idx(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Read a gzipped idx file of uint8 (LeCun's MNIST format) and check its shape."""
    with reading(path, _FASHION_MNIST_HOW):
        with gzip.open(path, "rb") as f:
            raw = f.read()
        # Header: two zero bytes, the type code, the rank, then one big-endian uint32 per axis.
        if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != _IDX_UINT8 or raw[3] != len(shape):
            raise ValueError(f"not an idx file of uint8 with rank {len(shape)} (header {raw[:4].hex()})")
        dims = struct.unpack(f">{len(shape)}I", raw[4 : 4 + 4 * len(shape)])
        if dims != shape:
            raise ValueError(f"expected shape {shape}, the header says {dims}")
        values = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * len(shape))
        if values.size != math.prod(shape):
            raise ValueError(f"expected {math.prod(shape)} values after the header, found {values.size}")
    return values.reshape(shape)


def digits(*, data_dir: str | Path | None = None) -> Data:
    """scikit-learn's handwritten digits: 1,797 8x8 images of 0-9, the smallest fallback.

    Alpaydin and Kaynak, UCI "Optical Recognition of Handwritten Digits", 1998. Read from
    ``sklearn/datasets/data/digits.csv.gz`` without importing scikit-learn. Pixel counts
    0-16 are rescaled to 0-255.

    Args:
        data_dir: a folder holding ``digits.csv.gz`` instead of scikit-learn's.

    Returns:
        ``train`` 1,438 and ``test`` 359 images (a seeded 80/20 split), uint8
        ``(n, 8, 8, 1)``, int32 labels named ``"0"`` to ``"9"``.
    """
    path, how = package_file("sklearn", "datasets/data/digits.csv.gz", pip="scikit-learn", data_dir=data_dir)
    with reading(path, how):
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        if table.ndim != 2 or table.shape[1] != 65 or not (table.min() >= 0 and table.max() <= 16):
            raise ValueError(
                f"expected rows of 64 pixels in 0..16 and a label, got a table of shape {table.shape}"
            )
    images = np.rint(table[:, :64] * (255 / 16)).astype(np.uint8).reshape(-1, 8, 8, 1)
    labels = table[:, 64].astype(np.int32)
    splits = random_splits(Split(images, labels), test=0.2)
    return Data("digits", splits, tuple(str(d) for d in range(10)), source=str(path))
