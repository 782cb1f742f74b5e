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
- ``jpeg`` (CIFAR-10 only): the complete JPEG copy of CIFAR-10 (50,000
  training / 10,000 test images, ``cifar10-jpeg.zip``, 62 MB, not shipped)
  placed by hand in ``data/cifar10/``; checked against :data:`FULL_JPEG` and
  decoded once into ``data/cache``. For machines without the internet that
  have that file: it is how the recorded full-scale VGG-16 runs were made;
- ``auto`` (default): torchvision when its files are present (or
  downloadable, if allowed), else embedded.

Two medical data sets exist only embedded (``auto`` means ``embedded`` for
them; torchvision has neither), built by ``data/build_embedded.py`` and
described in ``data/README.md``:

- ``dsb2018`` (``task="segmentation"``): 541 greyscale fluorescence images
  of the Data Science Bowl 2018 stage-1 nuclei set, 256x256 centre crops with
  instance labels, 20% of the images held out by image id. ``data.image_size``
  is the tile side (default 256: whole crops; 128: 4 tiles per crop; ...);
  ``y`` is the per-pixel class map (background / interior / boundary) of
  :func:`prunedyn.tasks.segmentation.class_targets`, and
  ``extras["test_instances"]`` the test tiles' instance labels;
- ``covid_cxr`` (classification, 3 classes): chest X-rays, COVID-19 from
  Hannover Medical School (adults) vs. normal / viral pneumonia from Kermany
  et al. (children) -- a source confound, so its accuracy compares pruning
  levels with each other, never a clinical claim. ``data.image_size`` is the
  side the 256x256 images are resized to (default 128).

Every bundle says which source it came from (:attr:`DatasetBundle.source`),
and the run records it.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
from dataclasses import dataclass, field
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
    "dsb2018": {
        "dsb2018-fluo-256.npz": "7231d2b9d682411c3fddf3091aa2fbe2f446b4884cabad52867f4a730cd13826",
    },
    # folder data/covid-cxr (dataset name covid_cxr, see FOLDERS)
    "covid-cxr": {
        "cxr-256.npz": "ec364a72623b305999e9c262aa42c1fc048f6d9414986a6b8ecd82ced58a93cd",
    },
}
# The complete JPEG copy of CIFAR-10 (data.source=jpeg): too large to ship, so
# not in data/checksums.sha256; its SHA-256 is checked before it is decoded.
FULL_JPEG = {"cifar10-jpeg.zip": "ead45e06542622104d3e17a0e554f18656c4cf310408a9ee502d835a28cf897d"}
# dataset name -> its folder under data/ where the two differ
FOLDERS = {"covid_cxr": "covid-cxr"}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_MNIST_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
CXR_CLASSES = ("covid", "normal", "viral_pneumonia")
SEGMENTATION_CLASSES = ("background", "interior", "boundary")
CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "fashion_mnist": FASHION_MNIST_CLASSES,
    "cifar10": CIFAR10_CLASSES,
    "covid_cxr": CXR_CLASSES,
    "dsb2018": SEGMENTATION_CLASSES,
}
# Data sets that exist only embedded (no torchvision counterpart), and the
# default of data.image_size for each (see the module doc).
MEDICAL = ("dsb2018", "covid_cxr")
DSB_CROP = 256
CXR_SIZE = 256
DEFAULT_IMAGE_SIZE = {"dsb2018": 256, "covid_cxr": 128}

# Per-dataset normalisation (mean, std) of the pixel values in [0, 1].
STATS = {
    "mnist": (0.1307, 0.3081),
    "fashion_mnist": (0.2860, 0.3530),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    # training images of the embedded copies (data/build_embedded.py), at 256x256
    "dsb2018": (0.0532, 0.0722),
    "covid_cxr": (0.5515, 0.2050),
}
DATASETS = ("mnist", "fashion_mnist", "cifar10", "dsb2018", "covid_cxr")
SOURCES = ("auto", "embedded", "torchvision", "jpeg")


def data_dir() -> Path:
    """The repository's ``data/`` folder (``$PRUNEDYN_DATA`` overrides)."""
    env = os.environ.get("PRUNEDYN_DATA")
    if env:
        return Path(env)
    # the checkout worked in first (a chapter's kernel runs in chapters/), then the one the package is
    # installed from (an editable install used from elsewhere)
    for start in (Path.cwd().resolve(), Path(__file__).resolve().parent):
        for parent in (start, *start.parents):
            if (parent / "data" / "checksums.sha256").exists():
                return parent / "data"
    return Path.cwd() / "data"


@dataclass
class DatasetBundle:
    """Normalised images ``(N, C, H, W)`` float32 and labels ``(N,)`` int64.

    ``task="segmentation"``: labels are per-pixel class maps ``(N, H, W)``
    int64 (``class_names`` says what each class is). ``extras`` holds further
    per-example tensors: a key starting ``test_`` follows the test set, one
    starting ``train_`` the training set (``load_dataset`` truncates them with
    it); for segmentation ``extras["test_instances"]`` are the test images'
    instance labels ``(N_test, H, W)`` int64 (0 background).
    """

    name: str
    source: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    description: str
    task: str = "classification"
    class_names: Optional[Tuple[str, ...]] = None
    extras: Dict[str, torch.Tensor] = field(default_factory=dict)
    #: the validation split carved from the training set (``data.val_size``; see :func:`carve_validation`)
    x_val: Optional[torch.Tensor] = None
    y_val: Optional[torch.Tensor] = None

    def validation_view(self) -> "DatasetBundle":
        """This bundle with the validation split in the test set's place (a task's ``evaluate``
        scores its ``x_test``): how a run scores the split it chooses settings on."""
        if self.x_val is None:
            raise ValueError("no validation split: set data.val_size")
        extras = {f"test_{k[4:]}": v for k, v in self.extras.items() if k.startswith("val_")}
        return dataclasses.replace(self, x_test=self.x_val, y_test=self.y_val, extras=extras, x_val=None, y_val=None)

    @property
    def in_shape(self) -> Tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """``len(class_names)`` where known (3 for segmentation), else the largest label + 1."""
        if self.class_names is not None:
            return len(self.class_names)
        if self.task == "segmentation":
            return len(SEGMENTATION_CLASSES)
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, expected: str) -> None:
    if not path.exists():
        hint = "" if os.environ.get("PRUNEDYN_DATA") else " (set PRUNEDYN_DATA to the data/ folder of a checkout)"
        raise DataError(f"data file missing: {path}{hint}")
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
    (named by the zip's checksum, written atomically) and read from there next
    time, if the cache's own SHA-256 matches the one recorded beside it when it
    was written (``<cache>.sha256``): a cache changed since is decoded again.
    """
    stamp = cache.with_name(cache.name + ".sha256")
    if cache.exists() and stamp.exists() and stamp.read_text().strip() == sha256(cache):
        with np.load(cache, allow_pickle=False) as z:
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
    from prunedyn.atomic import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **{f"{s}_{k}": v for s, (x, y) in arrays.items() for k, v in (("x", x), ("y", y))})
    data = buf.getvalue()
    atomic_write_bytes(cache, data)
    atomic_write_bytes(stamp, hashlib.sha256(data).hexdigest().encode() + b"\n")
    return arrays


def interleave_classes(y: np.ndarray) -> np.ndarray:
    """An order of the examples that cycles through the classes (first example of
    each class, then the second of each, ...), so any prefix of it -- ``data.train_size``
    keeps the first examples -- is class-balanced. The ImageFolder layout stores them
    class by class."""
    y = np.asarray(y)
    rank = np.empty(len(y), dtype=np.int64)
    for k in np.unique(y):
        idx = np.flatnonzero(y == k)
        rank[idx] = np.arange(len(idx))
    return np.lexsort((y, rank))


def _jpeg_bundle(arrays, name: str, source: str, description: str) -> DatasetBundle:
    split = {}
    for s in ("train", "test"):
        x, y = arrays[s]
        order = interleave_classes(y)
        split[s] = (_normalise(x[order], name), torch.as_tensor(y[order]))
    return DatasetBundle(
        name=name,
        source=source,
        x_train=split["train"][0],
        y_train=split["train"][1],
        x_test=split["test"][0],
        y_test=split["test"][1],
        description=description,
    )


def _embedded(name: str, root: Path) -> DatasetBundle:
    if name in MEDICAL:  # their own loaders, at the default data.image_size
        return _dsb2018(root, None) if name == "dsb2018" else _covid_cxr(root, None)
    if name not in EMBEDDED:
        have = [n for n in DATASETS if FOLDERS.get(n, n) in EMBEDDED]
        raise DataError(f"no embedded copy of {name!r}; embedded: {', '.join(have)}")
    folder = root / name
    sums = EMBEDDED[name]
    for fname, digest in sums.items():
        verify(folder / fname, digest)
    if name == "cifar10":
        (fname, digest), = sums.items()
        arrays = decode_jpeg_zip(folder / fname, root / "cache" / f"cifar10-subset-{digest[:12]}.npz")
        return _jpeg_bundle(
            arrays, name, "embedded",
            "CIFAR-10 (JPEG copy), embedded class-balanced subset: 1,000 training and 200 test images per class",
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


def _full_jpeg(name: str, root: Path) -> DatasetBundle:
    if name != "cifar10":
        raise DataError(f"data.source 'jpeg' exists for cifar10 only, not {name!r}")
    (fname, digest), = FULL_JPEG.items()
    path = root / "cifar10" / fname
    if not path.exists():
        raise DataError(
            f"data.source jpeg: {path} is missing; place the complete JPEG copy of CIFAR-10 "
            "(ImageFolder layout train/<class>/, test/<class>/) there, or use source auto/embedded/torchvision"
        )
    verify(path, digest)
    arrays = decode_jpeg_zip(path, root / "cache" / f"cifar10-full-{digest[:12]}.npz")
    return _jpeg_bundle(
        arrays, name, "jpeg",
        f"CIFAR-10 (JPEG copy), complete: {len(arrays['train'][1]):,} training / {len(arrays['test'][1]):,} test images",
    )


def _torchvision(name: str, root: Path, download: bool) -> Optional[DatasetBundle]:
    from torchvision import datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (RuntimeError, OSError):  # not present, and no download possible
        return None
    if name in ("mnist", "fashion_mnist"):  # torchvision reads its MNIST files unchecked: check them here
        _verify_torchvision_mnist(name, train, test, root)
    return DatasetBundle(
        name=name,
        source="torchvision",
        x_train=_normalise(train.data, name),
        y_train=torch.as_tensor(train.targets).long(),
        x_test=_normalise(test.data, name),
        y_test=torch.as_tensor(test.targets).long(),
        description=f"{name} via torchvision ({len(train)} train / {len(test)} test) from {root} (verified)",
    )


def _verify_torchvision_mnist(name: str, train, test, root: Path) -> None:
    """Raise :class:`DataError` unless a torchvision copy of MNIST / Fashion-MNIST is the official one.

    torchvision checks CIFAR-10's files against their MD5 sums but reads the MNIST files as they
    are. MNIST is checked against the embedded, checksummed copy (its official test set and the first
    10,000 official training digits, pixel for pixel and label for label); Fashion-MNIST, which is
    not embedded, by the MD5 sums torchvision lists for its downloads (the ``.gz`` files it keeps in
    ``raw/``), whose contents must be the files it reads.
    """
    where = Path(train.raw_folder)
    fix = f"remove {where.parent} (or set data.download=true to fetch it again), or set data.source=embedded"
    if name == "mnist":
        ref = _embedded("mnist", data_dir() if not (root.parent / "mnist").exists() else root.parent)
        n = len(ref.y_train)
        same = (len(train.targets) >= n and torch.equal(_normalise(train.data[:n], name), ref.x_train)
                and torch.equal(torch.as_tensor(train.targets[:n]).long(), ref.y_train)
                and torch.equal(_normalise(test.data, name), ref.x_test) and torch.equal(torch.as_tensor(test.targets).long(), ref.y_test))
        if not same:
            raise DataError(f"{where}: not the official MNIST (its test set or first {n:,} training digits differ from the "
                            f"embedded, checksummed copy); {fix}")
        return
    from torchvision.datasets.utils import check_integrity

    for fname, md5 in type(train).resources:
        gz = where / fname
        if not check_integrity(str(gz), md5):
            raise DataError(f"{gz}: missing or not the official file (MD5), so the Fashion-MNIST copy cannot be verified; {fix}")
        with gzip.open(gz, "rb") as f:
            if f.read() != (where / fname[:-3]).read_bytes():
                raise DataError(f"{where / fname[:-3]}: differs from its verified archive {fname}; {fix}")


def _load_npz(name: str, root: Path) -> Dict[str, np.ndarray]:
    """The verified embedded ``.npz`` of ``name`` as a dict of arrays."""
    folder = FOLDERS.get(name, name)
    (fname, digest), = EMBEDDED[folder].items()
    path = root / folder / fname
    verify(path, digest)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def _scale(images: np.ndarray, name: str, size: Optional[int] = None) -> torch.Tensor:
    """uint8 ``(N, H, W)`` to normalised float ``(N, 1, size, size)``: pixel values to
    [0, 1], resized (bilinear, antialiased) when ``size`` differs, then normalised."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0).unsqueeze(1)
    if size is not None and size != x.shape[-1]:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean, std = STATS[name]
    return x.sub_(mean).div_(std)


def tiles(images: np.ndarray, size: int) -> np.ndarray:
    """``(N, S, S)`` cut into non-overlapping ``size x size`` tiles: ``(N * (S/size)**2, size, size)``,
    image by image, each image's tiles row by row."""
    n, s, _ = images.shape
    k = s // size
    return images.reshape(n, k, size, k, size).transpose(0, 1, 3, 2, 4).reshape(n * k * k, size, size)


def _dsb2018(root: Path, image_size: Optional[int]) -> DatasetBundle:
    size = DEFAULT_IMAGE_SIZE["dsb2018"] if image_size is None else int(image_size)
    allowed = [DSB_CROP >> i for i in range(6)][::-1]  # 8 .. 256
    if size not in allowed:
        raise DataError(
            f"data.image_size for dsb2018 is the tile side and must divide the {DSB_CROP}x{DSB_CROP} crops: "
            f"one of {', '.join(map(str, allowed))} (got {image_size})"
        )
    from prunedyn.data.targets import class_targets

    a = _load_npz("dsb2018", root)
    test = a["test"].astype(bool)
    parts = {}
    for split, mask in (("train", ~test), ("test", test)):
        inst = tiles(a["labels"][mask], size).astype(np.int64)
        parts[split] = (_scale(tiles(a["images"][mask], size), "dsb2018"), torch.from_numpy(class_targets(inst)), inst)
    per = (DSB_CROP // size) ** 2
    tiling = "untiled" if per == 1 else f"{size}x{size} tiles, {per} per crop"
    return DatasetBundle(
        name="dsb2018",
        source="embedded",
        x_train=parts["train"][0],
        y_train=parts["train"][1],
        x_test=parts["test"][0],
        y_test=parts["test"][1],
        description=(
            f"DSB 2018 stage-1 nuclei (embedded: {len(test)} greyscale fluorescence images, "
            f"{DSB_CROP}x{DSB_CROP} centre crops; {tiling}), held-out 20% by image id "
            f"({int((~test).sum())} train / {int(test.sum())} test images)"
        ),
        task="segmentation",
        class_names=SEGMENTATION_CLASSES,
        extras={"test_instances": torch.from_numpy(parts["test"][2]), "train_instances": torch.from_numpy(parts["train"][2])},
    )


def _covid_cxr(root: Path, image_size: Optional[int]) -> DatasetBundle:
    size = DEFAULT_IMAGE_SIZE["covid_cxr"] if image_size is None else int(image_size)
    if not 8 <= size <= CXR_SIZE:
        raise DataError(
            f"data.image_size for covid_cxr is the side the {CXR_SIZE}x{CXR_SIZE} images are resized to: "
            f"an integer from 8 to {CXR_SIZE} (got {image_size})"
        )
    a = _load_npz("covid_cxr", root)
    test = a["test"].astype(bool)
    patients = a["patients"][~test]
    return DatasetBundle(
        name="covid_cxr",
        source="embedded",
        x_train=_scale(a["images"][~test], "covid_cxr", size),
        y_train=torch.from_numpy(a["labels"][~test].astype(np.int64)),
        x_test=_scale(a["images"][test], "covid_cxr", size),
        y_test=torch.from_numpy(a["labels"][test].astype(np.int64)),
        description=(
            f"COVID-19 CXR (embedded: mhh-covid COVID-19 + Kermany normal/viral pneumonia; {size} px); "
            "source confound: see data/README.md"
        ),
        class_names=CXR_CLASSES,
        # per patient (carve_validation holds them out whole); each Kermany image is its own
        extras={"train_groups": torch.from_numpy(np.unique(np.where(
            patients == "", np.char.add("image ", np.arange(len(patients)).astype(str)), patients), return_inverse=True)[1].astype(np.int64))},
    )


def load_dataset(cfg) -> DatasetBundle:
    """The dataset named by ``cfg.name`` from the source ``cfg.source`` (see module doc).

    ``cfg.train_size`` / ``cfg.test_size`` keep the first that many examples.
    """
    root = Path(cfg.root) if cfg.root else data_dir()
    tv_root = root / "torchvision"
    image_size = getattr(cfg, "image_size", None)
    if cfg.name in MEDICAL:
        if cfg.source not in ("auto", "embedded"):
            raise DataError(
                f"{cfg.name} exists only embedded (data/{FOLDERS.get(cfg.name, cfg.name)}/; torchvision has no "
                f"{cfg.name}): set data.source to auto or embedded, not {cfg.source!r}"
            )
        bundle = _dsb2018(root, image_size) if cfg.name == "dsb2018" else _covid_cxr(root, image_size)
    else:
        if image_size is not None:
            raise DataError(
                f"data.image_size applies to {' and '.join(MEDICAL)} only; leave it unset (null) for {cfg.name}"
            )
        bundle = _full_jpeg(cfg.name, root) if cfg.source == "jpeg" else None
        if cfg.source in ("auto", "torchvision"):
            bundle = _torchvision(cfg.name, tv_root, cfg.download)
            if bundle is None and cfg.source == "torchvision":
                raise DataError(
                    f"{cfg.name} not found under {tv_root}"
                    + ("" if cfg.download else " (set data.download=true to fetch it)")
                )
        if bundle is None:
            bundle = _embedded(cfg.name, root)
    if bundle.class_names is None:
        bundle.class_names = CLASS_NAMES.get(bundle.name)
    val_size = getattr(cfg, "val_size", None)
    if val_size:
        carve_validation(bundle, val_size)
    if cfg.train_size:
        bundle.x_train, bundle.y_train = bundle.x_train[: cfg.train_size], bundle.y_train[: cfg.train_size]
        for k in [k for k in bundle.extras if k.startswith("train_")]:
            bundle.extras[k] = bundle.extras[k][: cfg.train_size]
    if cfg.test_size:
        bundle.x_test, bundle.y_test = bundle.x_test[: cfg.test_size], bundle.y_test[: cfg.test_size]
        for k in [k for k in bundle.extras if k.startswith("test_")]:
            bundle.extras[k] = bundle.extras[k][: cfg.test_size]
    val = f" / {len(bundle.y_val)} validation (seeded draw {VAL_SEED})" if bundle.y_val is not None else ""
    bundle.description += f"; used {len(bundle.y_train)} train{val} / {len(bundle.y_test)} test"
    return bundle


#: The seed of the validation draw: one validation split per dataset, whatever the run's seed.
VAL_SEED = 20200


def carve_validation(bundle: DatasetBundle, val_size: int) -> None:
    """Move ``val_size`` training examples, drawn without replacement by a generator seeded
    with :data:`VAL_SEED`, to ``bundle.x_val / y_val`` (and ``train_*`` extras to ``val_*``).

    The draw is over the whole training set before ``data.train_size`` is applied, so the
    validation split is the same for every seed and every training-set size and never
    overlaps the examples trained on; the rest keep their order (a prefix stays
    class-balanced). Settings are chosen on this split; the test set is never trained on
    or chosen on. Where the bundle groups its examples (``extras["train_groups"]``: the X-rays'
    patients) a group moves whole, so no patient is on both sides: visited in the seeded order,
    each example's group is taken if it fits in its class's share of ``val_size``.
    """
    n = len(bundle.y_train)
    if not 0 < val_size < n:
        raise DataError(f"data.val_size must be from 1 to {n - 1} (the {bundle.name} training set has {n}); got {val_size}")
    pick = torch.zeros(n, dtype=torch.bool)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SEED))
    groups = bundle.extras.get("train_groups")
    if groups is None:
        pick[order[:val_size]] = True
    else:  # whole groups in the seeded order, each class its share (largest remainders)
        share = torch.bincount(bundle.y_train) * val_size / n
        quota = share.floor().long()
        quota[(quota - share).argsort(stable=True)[: val_size - int(quota.sum())]] += 1
        for i in order.tolist():
            members, c = groups == groups[i], int(bundle.y_train[i])
            if not pick[i] and int(members.sum()) <= quota[c]:
                pick, quota[c] = pick | members, quota[c] - int(members.sum())
        if quota.any():
            raise DataError(f"data.val_size: {val_size} examples cannot be held out in whole groups of {bundle.name}, per class")
    bundle.x_val, bundle.y_val = bundle.x_train[pick], bundle.y_train[pick]
    bundle.x_train, bundle.y_train = bundle.x_train[~pick], bundle.y_train[~pick]
    for k in [k for k in bundle.extras if k.startswith("train_")]:
        bundle.extras[f"val_{k[6:]}"] = bundle.extras[k][pick]
        bundle.extras[k] = bundle.extras[k][~pick]
