"""Datasets as in-memory tensors, from torchvision when the full data is there,
else from the copies embedded in the repository's ``data/`` folder.

Sources (``data.source``):

- ``torchvision``: ``torchvision.datasets.MNIST`` / ``FashionMNIST`` under
  ``data.root`` (default ``data/torchvision``), downloading when
  ``data.download`` is true and the internet is reachable;
- ``embedded``: the files shipped in ``data/`` -- ``data/mnist`` (MNIST test
  set and the first 10,000 training digits, IDX) and ``data/cifar10`` (a
  class-balanced subset of the JPEG copy of CIFAR-10: 1,000 training and 200
  test images per class, decoded once into ``data/cache``) -- checked against
  the SHA-256 sums below before use;
- ``auto`` (default): torchvision when its files are present (or
  downloadable, if allowed), else embedded.

Every bundle says which source it came from (:attr:`DatasetBundle.source`),
and the run records it.
"""
from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch


class DataError(Exception):
    """A data file is missing, unreadable or fails its checksum."""


# SHA-256 of the embedded files; data/checksums.sha256 lists the same sums
# for `sha256sum -c` (a test keeps the two in agreement).
EMBEDDED: Dict[str, Dict[str, str]] = {
    "mnist": {
        "train-10k-images-idx3-ubyte.gz": "78213bd144dfe4877a2cacdcc92aa9091627a3041a54247dc9c7978175d3fa8a",
        "train-10k-labels-idx1-ubyte.gz": "094027e5c85b2d25a05a8849d6314dea4c0c4817463f2960b118fb6771c44877",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "cifar10": {
        "cifar10-jpeg-subset.zip": "bdefa4650fcd26e4cc9469ee875743de0042eb4048bac669e7ef45c64e3216f9",
    },
}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# Per-dataset normalisation (mean, std) of the pixel values in [0, 1].
STATS = {
    "mnist": (0.1307, 0.3081),
    "fashion_mnist": (0.2860, 0.3530),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
DATASETS = ("mnist", "fashion_mnist", "cifar10")
SOURCES = ("auto", "embedded", "torchvision")


def data_dir() -> Path:
    """The repository's ``data/`` folder (``$PRUNEDYN_DATA`` overrides)."""
    env = os.environ.get("PRUNEDYN_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "data" / "checksums.sha256").exists():
            return parent / "data"
    return Path.cwd() / "data"


@dataclass
class DatasetBundle:
    """Normalised images ``(N, C, H, W)`` float32 and labels ``(N,)`` int64."""

    name: str
    source: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    description: str

    @property
    def in_shape(self) -> Tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, expected: str) -> None:
    if not path.exists():
        raise DataError(f"data file missing: {path}")
    got = sha256(path)
    if got != expected:
        raise DataError(f"checksum mismatch for {path}: sha256 {got[:12]}..., expected {expected[:12]}...")


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path}: {data.size} values for declared shape {shape}")
    return data.reshape(shape)


def _normalise(images: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """uint8 images ``(N, H, W)`` or ``(N, H, W, C)`` to normalised float ``(N, C, H, W)``."""
    x = torch.tensor(np.asarray(images), dtype=torch.float32).div_(255.0)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    else:
        x = x.permute(0, 3, 1, 2).contiguous()
    mean, std = (torch.tensor(v, dtype=torch.float32).view(-1, 1, 1) for v in STATS[name])
    return x.sub_(mean).div_(std)


def decode_jpeg_zip(path: Path, cache: Path) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{split: (uint8 images (N, H, W, 3), int64 labels)}`` from an ImageFolder-layout zip.

    Decoding 12k JPEGs takes seconds, so the arrays are cached in ``cache``
    (named by the zip's checksum, written atomically) and read from there next time.
    """
    if cache.exists():
        with np.load(cache) as z:
            return {s: (z[f"{s}_x"], z[f"{s}_y"]) for s in ("train", "test")}
    import io
    import zipfile

    from PIL import Image

    out: Dict[str, Tuple[list, list]] = {"train": ([], []), "test": ([], [])}
    with zipfile.ZipFile(path) as z:
        for name in sorted(n for n in z.namelist() if n.endswith((".jpg", ".png"))):
            split, cls, _ = name.split("/")
            img = Image.open(io.BytesIO(z.read(name))).convert("RGB")
            out[split][0].append(np.asarray(img, dtype=np.uint8))
            out[split][1].append(CIFAR10_CLASSES.index(cls))
    arrays = {s: (np.stack(x), np.asarray(y, dtype=np.int64)) for s, (x, y) in out.items()}
    from .records import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **{f"{s}_{k}": v for s, (x, y) in arrays.items() for k, v in (("x", x), ("y", y))})
    atomic_write_bytes(cache, buf.getvalue())
    return arrays


def _embedded(name: str, root: Path) -> DatasetBundle:
    if name not in EMBEDDED:
        raise DataError(f"no embedded copy of {name!r}; embedded: {', '.join(EMBEDDED)}")
    folder = root / name
    sums = EMBEDDED[name]
    for fname, digest in sums.items():
        verify(folder / fname, digest)
    if name == "cifar10":
        (fname, digest), = sums.items()
        arrays = decode_jpeg_zip(folder / fname, root / "cache" / f"cifar10-subset-{digest[:12]}.npz")
        return DatasetBundle(
            name=name,
            source="embedded",
            x_train=_normalise(arrays["train"][0], name),
            y_train=torch.as_tensor(arrays["train"][1]),
            x_test=_normalise(arrays["test"][0], name),
            y_test=torch.as_tensor(arrays["test"][1]),
            description="CIFAR-10 (JPEG copy), embedded class-balanced subset: 1,000 training and 200 test images per class",
        )
    arrays = {f: read_idx(folder / f) for f in sums}
    return DatasetBundle(
        name=name,
        source="embedded",
        x_train=_normalise(arrays["train-10k-images-idx3-ubyte.gz"], name),
        y_train=torch.as_tensor(arrays["train-10k-labels-idx1-ubyte.gz"].astype(np.int64)),
        x_test=_normalise(arrays["t10k-images-idx3-ubyte.gz"], name),
        y_test=torch.as_tensor(arrays["t10k-labels-idx1-ubyte.gz"].astype(np.int64)),
        description=f"{name.upper()} 10k training subset (embedded, first 10,000 official training digits) + official 10k test set",
    )


def _torchvision(name: str, root: Path, download: bool) -> Optional[DatasetBundle]:
    from torchvision import datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (RuntimeError, OSError) as e:  # not present, and no download possible
        return None
    return DatasetBundle(
        name=name,
        source="torchvision",
        x_train=_normalise(train.data, name),
        y_train=torch.as_tensor(train.targets).long(),
        x_test=_normalise(test.data, name),
        y_test=torch.as_tensor(test.targets).long(),
        description=f"{name} via torchvision ({len(train)} train / {len(test)} test) from {root}",
    )


def load_dataset(cfg) -> DatasetBundle:
    """The dataset named by ``cfg.name`` from the source ``cfg.source`` (see module doc).

    ``cfg.train_size`` / ``cfg.test_size`` keep the first that many examples.
    """
    root = Path(cfg.root) if cfg.root else data_dir()
    tv_root = root / "torchvision"
    bundle = None
    if cfg.source in ("auto", "torchvision"):
        bundle = _torchvision(cfg.name, tv_root, cfg.download)
        if bundle is None and cfg.source == "torchvision":
            raise DataError(
                f"{cfg.name} not found under {tv_root}"
                + ("" if cfg.download else " (set data.download=true to fetch it)")
            )
    if bundle is None:
        bundle = _embedded(cfg.name, root)
    if cfg.train_size:
        bundle.x_train, bundle.y_train = bundle.x_train[: cfg.train_size], bundle.y_train[: cfg.train_size]
    if cfg.test_size:
        bundle.x_test, bundle.y_test = bundle.x_test[: cfg.test_size], bundle.y_test[: cfg.test_size]
    bundle.description += f"; used {len(bundle.y_train)} train / {len(bundle.y_test)} test"
    return bundle


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Standard CIFAR augmentation on a normalised batch ``(B, C, H, W)``: random crop
    after zero-padding by ``pad`` pixels, and a horizontal flip with probability 1/2.

    Driven by ``generator``, so an epoch's augmentation repeats exactly on rerun.
    """
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    out = torch.empty_like(x)
    for i in range(b):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out
