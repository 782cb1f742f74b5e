"""Datasets as in-memory tensors, from torchvision when the full data is there,
else from the copies embedded in the repository's ``data/`` folder.

Sources (``data.source``):

- ``torchvision``: ``torchvision.datasets.MNIST`` / ``FashionMNIST`` under
  ``data.root`` (default ``data/torchvision``), downloading when
  ``data.download`` is true and the internet is reachable;
- ``embedded``: the IDX files shipped in ``data/mnist`` (MNIST test set and
  the first 10,000 training digits), checked against the SHA-256 sums below
  before use;
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
}

# Per-dataset normalisation (mean, std) of the pixel values in [0, 1].
STATS = {"mnist": (0.1307, 0.3081), "fashion_mnist": (0.2860, 0.3530)}
DATASETS = ("mnist", "fashion_mnist")
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
    x = torch.tensor(np.asarray(images), dtype=torch.float32).div_(255.0)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    mean, std = STATS[name]
    return x.sub_(mean).div_(std)


def _embedded(name: str, root: Path) -> DatasetBundle:
    if name not in EMBEDDED:
        raise DataError(f"no embedded copy of {name!r}; embedded: {', '.join(EMBEDDED)}")
    folder = root / name
    sums = EMBEDDED[name]
    for fname, digest in sums.items():
        verify(folder / fname, digest)
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

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST}[name]
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (RuntimeError, OSError) as e:  # not present, and no download possible
        return None
    return DatasetBundle(
        name=name,
        source="torchvision",
        x_train=_normalise(train.data, name),
        y_train=train.targets.long(),
        x_test=_normalise(test.data, name),
        y_test=test.targets.long(),
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
