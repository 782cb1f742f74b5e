"""Datasets: the embedded MNIST copy, checksums, errors, torchvision layout, subsetting."""
import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from prunedyn.data import datasets
from prunedyn.run.config import DataConfig
from prunedyn.data.datasets import EMBEDDED, DataError, load_dataset, read_idx, sha256

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
MNIST_FILES = sorted(EMBEDDED["mnist"])
TV_NAMES = {
    "train-10k-images-idx3-ubyte.gz": "train-images-idx3-ubyte",
    "train-10k-labels-idx1-ubyte.gz": "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte.gz": "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte.gz": "t10k-labels-idx1-ubyte",
}


def copy_mnist(dst_root: Path) -> Path:
    """Copy the embedded data/mnist folder to ``dst_root/mnist``; return ``dst_root``."""
    dst_root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(DATA / "mnist", dst_root / "mnist")
    return dst_root


@pytest.fixture(scope="module")
def embedded():
    return load_dataset(DataConfig(source="embedded"))


def test_embedded_mnist_shapes_and_source(embedded):
    b = embedded
    assert b.name == "mnist"
    assert b.source == "embedded"
    assert b.x_train.shape == (10000, 1, 28, 28)
    assert b.y_train.shape == (10000,)
    assert b.x_test.shape == (10000, 1, 28, 28)
    assert b.y_test.shape == (10000,)
    assert b.x_train.dtype == torch.float32 and b.y_train.dtype == torch.int64
    assert b.in_shape == (1, 28, 28)
    assert b.num_classes == 10
    assert "embedded" in b.description


def test_embedded_mnist_normalised(embedded):
    for x in (embedded.x_train, embedded.x_test):
        assert abs(float(x.mean())) < 0.05
        assert abs(float(x.std()) - 1.0) < 0.05
    # pixel 0 maps to -mean/std, pixel 255 to (1-mean)/std
    mean, std = datasets.STATS["mnist"]
    assert float(embedded.x_train.min()) == pytest.approx(-mean / std, rel=1e-5)
    assert float(embedded.x_train.max()) == pytest.approx((1 - mean) / std, rel=1e-5)


def test_embedded_mnist_labels(embedded):
    for y in (embedded.y_train, embedded.y_test):
        assert set(y.unique().tolist()) == set(range(10))
        counts = torch.bincount(y, minlength=10)
        assert counts.min() > 800  # roughly balanced
    # the first official training labels and test labels
    assert embedded.y_train[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    assert embedded.y_test[:8].tolist() == [7, 2, 1, 0, 4, 1, 4, 9]


def test_checksums_file_agrees_with_module():
    listed = {}
    for line in (DATA / "checksums.sha256").read_text().splitlines():
        if not line.strip():
            continue
        digest, path = line.split(None, 1)
        listed[path.strip().lstrip("*")] = digest
    expected = {f"{name}/{fname}": digest for name, files in EMBEDDED.items() for fname, digest in files.items()}
    assert listed == expected
    for path, digest in listed.items():
        assert sha256(DATA / path) == digest, path


def test_data_dir_finds_repo_and_env_override(monkeypatch, tmp_path):
    monkeypatch.delenv("PRUNEDYN_DATA", raising=False)
    assert datasets.data_dir().resolve() == DATA.resolve()
    monkeypatch.setenv("PRUNEDYN_DATA", str(tmp_path))
    assert datasets.data_dir() == tmp_path


@pytest.mark.parametrize("fname", MNIST_FILES)
def test_corrupted_file_raises_naming_it(tmp_path, fname):
    root = copy_mnist(tmp_path / "data")
    path = root / "mnist" / fname
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(source="embedded", root=str(root)))
    msg = str(info.value)
    assert fname in msg
    assert "checksum" in msg


def test_corrupted_copy_via_env(tmp_path, monkeypatch):
    root = copy_mnist(tmp_path / "data")
    path = root / "mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    monkeypatch.setenv("PRUNEDYN_DATA", str(root))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset(DataConfig(source="embedded"))
    # 'auto' also ends at the corrupted embedded copy (no torchvision files there)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset(DataConfig(source="auto"))


def test_missing_file_raises(tmp_path):
    root = copy_mnist(tmp_path / "data")
    (root / "mnist" / "train-10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(source="embedded", root=str(root)))
    assert "missing" in str(info.value)
    assert "train-10k-labels-idx1-ubyte.gz" in str(info.value)


def test_missing_folder_raises(tmp_path):
    with pytest.raises(DataError, match="missing"):
        load_dataset(DataConfig(source="embedded", root=str(tmp_path)))


def test_no_embedded_fashion_mnist(tmp_path):
    with pytest.raises(DataError, match="fashion_mnist"):
        load_dataset(DataConfig(name="fashion_mnist", source="embedded", root=str(tmp_path)))


def test_read_idx_rejects_non_idx(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not an IDX file\n")
    with pytest.raises(DataError, match="IDX"):
        read_idx(text)
    fake_gz = tmp_path / "fake.gz"
    fake_gz.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="fake.gz"):
        read_idx(fake_gz)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(DataError):
        read_idx(empty)
    # a float IDX (type code 0x0D) is not an unsigned-byte file
    f = tmp_path / "float.idx"
    f.write_bytes(bytes([0, 0, 0x0D, 1]) + (4).to_bytes(4, "big") + b"\0" * 16)
    with pytest.raises(DataError, match="unsigned-byte"):
        read_idx(f)


def test_read_idx_valid_and_truncated(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    blob = bytes([0, 0, 0x08, 3]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape) + arr.tobytes()
    plain = tmp_path / "a-idx3-ubyte"
    plain.write_bytes(blob)
    np.testing.assert_array_equal(read_idx(plain), arr)
    gz = tmp_path / "a-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(blob))
    np.testing.assert_array_equal(read_idx(gz), arr)
    short = tmp_path / "short-idx3-ubyte"
    short.write_bytes(blob[:-5])
    with pytest.raises(DataError, match="declared shape"):
        read_idx(short)


def test_read_idx_of_embedded_file():
    labels = read_idx(DATA / "mnist" / "t10k-labels-idx1-ubyte.gz")
    images = read_idx(DATA / "mnist" / "t10k-images-idx3-ubyte.gz")
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert images.shape == (10000, 28, 28)


def test_torchvision_source_without_files_raises(tmp_path):
    root = copy_mnist(tmp_path / "data")
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(source="torchvision", root=str(root)))
    msg = str(info.value)
    assert "mnist" in msg and "torchvision" in msg
    assert "download" in msg


def test_auto_falls_back_to_embedded(tmp_path, embedded):
    root = copy_mnist(tmp_path / "data")
    b = load_dataset(DataConfig(source="auto", root=str(root)))
    assert b.source == "embedded"
    assert torch.equal(b.x_test, embedded.x_test)
    assert torch.equal(b.y_train, embedded.y_train)


def make_torchvision_layout(root: Path) -> Path:
    raw = root / "torchvision" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz_name, tv_name in TV_NAMES.items():
        with gzip.open(DATA / "mnist" / gz_name, "rb") as f:
            (raw / tv_name).write_bytes(f.read())
    return raw


def test_auto_picks_up_torchvision_layout(tmp_path, embedded):
    root = copy_mnist(tmp_path / "data")
    make_torchvision_layout(root)
    b = load_dataset(DataConfig(source="auto", root=str(root)))
    assert b.source == "torchvision"
    assert "torchvision" in b.description
    assert b.x_train.shape == (10000, 1, 28, 28) and b.x_test.shape == (10000, 1, 28, 28)
    assert b.x_train.dtype == torch.float32 and b.y_train.dtype == torch.int64
    # same pixels, same normalisation, same labels as the embedded copy
    assert torch.equal(b.x_train, embedded.x_train)
    assert torch.equal(b.y_train, embedded.y_train)
    assert torch.equal(b.x_test, embedded.x_test)
    assert torch.equal(b.y_test, embedded.y_test)
    b2 = load_dataset(DataConfig(source="torchvision", root=str(root), train_size=50))
    assert b2.source == "torchvision" and len(b2.y_train) == 50
    # 'embedded' still means embedded
    assert load_dataset(DataConfig(source="embedded", root=str(root))).source == "embedded"


def test_subsetting(embedded):
    b = load_dataset(DataConfig(source="embedded", train_size=123, test_size=45))
    assert b.x_train.shape == (123, 1, 28, 28) and b.y_train.shape == (123,)
    assert b.x_test.shape == (45, 1, 28, 28) and b.y_test.shape == (45,)
    # the first examples, in order
    assert torch.equal(b.x_train, embedded.x_train[:123])
    assert torch.equal(b.y_test, embedded.y_test[:45])
    assert "123 train / 45 test" in b.description
    only_train = load_dataset(DataConfig(source="embedded", train_size=10))
    assert len(only_train.y_train) == 10 and len(only_train.y_test) == 10000
    # larger than available: everything
    big = load_dataset(DataConfig(source="embedded", train_size=10**6))
    assert len(big.y_train) == 10000


def test_a_decoded_jpeg_cache_changed_after_it_was_written_is_decoded_again(tmp_path):
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    from prunedyn.data.datasets import decode_jpeg_zip

    zpath = tmp_path / "tiny.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for split, cls, value in (("train", "cat", 10), ("train", "dog", 200), ("test", "cat", 30)):
            buf = io.BytesIO()
            Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(buf, format="PNG")
            z.writestr(f"{split}/{cls}/0.png", buf.getvalue())
    cache = tmp_path / "cache" / "tiny.npz"
    cache.parent.mkdir()
    first = decode_jpeg_zip(zpath, cache)
    assert cache.exists() and cache.with_name("tiny.npz.sha256").exists()
    # planted: other pixels under the cache's name
    buf = io.BytesIO()
    np.savez(buf, train_x=np.zeros_like(first["train"][0]), train_y=first["train"][1],
             test_x=first["test"][0], test_y=first["test"][1])
    cache.write_bytes(buf.getvalue())
    again = decode_jpeg_zip(zpath, cache)
    assert np.array_equal(again["train"][0], first["train"][0]) and again["train"][0].max() == 200
    assert decode_jpeg_zip(zpath, cache)["train"][0].max() == 200  # and the rewritten cache is used


def test_validation_split_is_one_seeded_draw_disjoint_from_training(embedded):
    # examples tagged by their index: which went where
    n = 1000
    tagged = datasets.DatasetBundle("t", "test", torch.arange(n).float()[:, None], torch.arange(n) % 10,
                                    torch.zeros(3, 1), torch.zeros(3, dtype=torch.long), "",
                                    extras={"train_id": torch.arange(n)})
    datasets.carve_validation(tagged, 100)
    val, kept = tagged.x_val[:, 0].long(), tagged.x_train[:, 0].long()
    assert len(val) == 100 and len(kept) == 900
    assert not set(val.tolist()) & set(kept.tolist()) and len(set(val.tolist()) | set(kept.tolist())) == n
    assert kept.tolist() == sorted(kept.tolist())  # the rest keep their order
    assert torch.equal(tagged.extras["val_id"], val) and torch.equal(tagged.extras["train_id"], kept)
    assert torch.equal(tagged.y_val, val % 10)
    b = load_dataset(DataConfig(source="embedded", val_size=500))
    assert len(b.y_val) == 500 and len(b.y_train) == 9500 and len(b.y_test) == 10000
    counts = torch.bincount(b.y_val, minlength=10)  # every class, none far from its share
    assert counts.min() >= 25 and counts.max() <= 80
    # the same split whatever the training-set size; train_size then keeps a prefix of the rest
    small = load_dataset(DataConfig(source="embedded", val_size=500, train_size=100))
    assert torch.equal(small.x_val, b.x_val) and torch.equal(small.x_train, b.x_train[:100])
    assert "100 train / 500 validation (seeded draw 20200) / 10000 test" in small.description
    view = b.validation_view()
    assert view.x_test is b.x_val and view.y_test is b.y_val and view.x_val is None


@pytest.mark.parametrize("size", [10000, 10**6])
def test_validation_split_larger_than_the_training_set_is_refused(size):
    with pytest.raises(DataError, match=r"data.val_size must be from 1 to 9999 .*got " + str(size)):
        load_dataset(DataConfig(source="embedded", val_size=size))


@pytest.mark.parametrize("source", ["auto", "torchvision"])
def test_a_torchvision_mnist_copy_that_is_not_the_official_one_is_refused(tmp_path, source):
    root = copy_mnist(tmp_path / "data")
    raw = make_torchvision_layout(root)
    labels = bytearray((raw / "t10k-labels-idx1-ubyte").read_bytes())
    labels[8 + 17] = (labels[8 + 17] + 1) % 10  # one test label changed
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(labels))
    with pytest.raises(DataError, match=r"MNIST/raw: not the official MNIST .* set data.source=embedded"):
        load_dataset(DataConfig(source=source, root=str(root)))
    # the embedded copy is still there for whoever asks for it
    assert load_dataset(DataConfig(source="embedded", root=str(root))).source == "embedded"


def test_a_torchvision_fashion_mnist_copy_without_its_verified_archives_is_refused(tmp_path):
    raw = tmp_path / "data" / "torchvision" / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for gz_name, tv_name in TV_NAMES.items():  # MNIST's bytes under Fashion-MNIST's names, no archives
        with gzip.open(DATA / "mnist" / gz_name, "rb") as f:
            (raw / tv_name).write_bytes(f.read())
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: missing or not the official file"):
        load_dataset(DataConfig(name="fashion_mnist", source="torchvision", root=str(tmp_path / "data")))
