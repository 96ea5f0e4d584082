"""Fashion-MNIST files: where they live, how they are fetched and checked, and
how they are read.

The data set is four gzipped IDX files (https://github.com/zalandoresearch/
fashion-mnist). `prepare` downloads them once into a cache directory; `train`
and `evaluate` read them from there, or from a directory the user names with
the `data-dir` flag or the FASHION_MNIST_DIR environment variable.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import tempfile
import urllib.error
import urllib.request

FILES = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
"""File name -> MD5 published by Zalando Research."""

SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)

HOME_PAGE = "https://github.com/zalandoresearch/fashion-mnist"
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class DataError(Exception):
    """A one-line message for the user: what is wrong and what to do."""


def data_dir(flag: str = "") -> str:
    """The `data-dir` flag, else FASHION_MNIST_DIR, else the user's cache."""
    if flag:
        return os.path.abspath(os.path.expanduser(flag))
    if os.getenv("FASHION_MNIST_DIR"):
        return os.path.abspath(os.path.expanduser(os.environ["FASHION_MNIST_DIR"]))
    cache = os.getenv("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache, "fashion-mnist")


def missing_files(directory: str) -> list[str]:
    return [name for name in FILES if not os.path.isfile(os.path.join(directory, name))]


def where_to_put_them(directory: str) -> str:
    return (
        f"put the four files ({', '.join(FILES)}) from {HOME_PAGE} in {directory}, "
        "or point the data-dir flag (or FASHION_MNIST_DIR) at a directory that "
        "has them"
    )


def md5(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(name: str, directory: str, mirrors=MIRRORS, timeout: float = 30) -> str:
    """Downloads one file from the first mirror that has it, checks its MD5,
    and moves it into `directory` (a partial or wrong file never lands there)."""
    reasons = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        try:
            path = _fetch(url, directory, timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reasons.append(f"{url}: {getattr(e, 'reason', e)}")
            continue
        actual = md5(path)
        if actual != FILES[name]:
            os.remove(path)
            raise DataError(
                f"{url} sent a file whose MD5 is {actual}, not the published "
                f"{FILES[name]}: try again later, or {where_to_put_them(directory)}"
            )
        target = os.path.join(directory, name)
        os.replace(path, target)
        return target
    raise DataError(
        f"cannot download {name} ({'; '.join(reasons)}): {where_to_put_them(directory)}"
    )


def _fetch(url: str, directory: str, timeout: float) -> str:
    os.makedirs(directory, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=".download-", dir=directory)
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout) as response,
            open(fd, "wb") as f,
        ):
            shutil.copyfileobj(response, f)
    except BaseException:
        os.remove(path)
        raise
    return path


def read_idx(path: str) -> tuple[tuple[int, ...], bytes]:
    """Dimensions and raw bytes of a gzipped IDX file of unsigned bytes."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path} is not a gzipped IDX file ({e})") from e
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    rank = data[3]
    dims = struct.unpack(f">{rank}I", data[4 : 4 + 4 * rank])
    body = data[4 + 4 * rank :]
    size = 1
    for dim in dims:
        size *= dim
    if len(body) != size:
        raise DataError(f"{path}: header says {dims}, but it holds {len(body)} bytes")
    return dims, body


def check_split(directory: str, split: str) -> int:
    """Number of examples of a split; raises DataError if its files disagree."""
    images, labels = (os.path.join(directory, name) for name in SPLITS[split])
    image_dims, _ = read_idx(images)
    label_dims, _ = read_idx(labels)
    if len(image_dims) != 3 or image_dims[1:] != (28, 28):
        raise DataError(f"{images}: images are {image_dims[1:]}, not 28x28")
    if label_dims != image_dims[:1]:
        raise DataError(
            f"{split} split: {image_dims[0]} images but {label_dims[0]} labels"
        )
    return image_dims[0]


def load(directory: str, split: str):
    """(images, labels) of a split as torch tensors: images float [N, 1, 28, 28]
    scaled to 0..1, labels int64 [N]."""
    import torch

    missing = missing_files(directory)
    if missing:
        raise DataError(
            f"Fashion-MNIST not found in {directory} (missing {', '.join(missing)}): "
            f"run `guild run prepare` to download it, or {where_to_put_them(directory)}"
        )
    check_split(directory, split)
    images_file, labels_file = (os.path.join(directory, n) for n in SPLITS[split])
    dims, image_bytes = read_idx(images_file)
    _, label_bytes = read_idx(labels_file)
    images = torch.frombuffer(bytearray(image_bytes), dtype=torch.uint8)
    labels = torch.frombuffer(bytearray(label_bytes), dtype=torch.uint8)
    images = images.reshape(dims[0], 1, 28, 28).float() / 255.0
    return images, labels.long()
