"""The embedded medical data sets (dsb2018, covid_cxr): the shipped files, their
splits and counts as documented in data/README.md, and how load_dataset serves them."""
import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from prunedyn.data import datasets
from prunedyn.run.config import DataConfig
from prunedyn.data.datasets import EMBEDDED, STATS, DataError, load_dataset, sha256

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
DSB = DATA / "dsb2018" / "dsb2018-fluo-256.npz"
CXR = DATA / "covid-cxr" / "cxr-256.npz"


def cfg(name, **kw):
    c = DataConfig(name=name, source=kw.pop("source", "embedded"), **kw)
    return c


@pytest.fixture(scope="module")
def dsb():
    with np.load(DSB, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def cxr():
    with np.load(CXR, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def dsb128():
    return load_dataset(cfg("dsb2018", image_size=128))


# --- the shipped files ---------------------------------------------------------------


def test_files_match_their_checksums_and_list():
    listed = dict(
        reversed(line.split(None, 1)) for line in (DATA / "checksums.sha256").read_text().splitlines() if line.strip()
    )
    for path, folder, fname in ((DSB, "dsb2018", "dsb2018-fluo-256.npz"), (CXR, "covid-cxr", "cxr-256.npz")):
        assert sha256(path) == EMBEDDED[folder][fname] == listed[f"{folder}/{fname}"]
        assert path.stat().st_size < 20e6


def test_corrupted_file_fails_checksum(tmp_path):
    (tmp_path / "covid-cxr").mkdir()
    data = bytearray(CXR.read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / "covid-cxr" / "cxr-256.npz").write_bytes(bytes(data))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_dataset(cfg("covid_cxr", root=str(tmp_path)))
    with pytest.raises(DataError, match="missing"):
        load_dataset(cfg("dsb2018", root=str(tmp_path)))


def test_dsb_arrays(dsb):
    assert set(dsb) == {"images", "labels", "ids", "test"}
    assert dsb["images"].shape == (541, 256, 256) and dsb["images"].dtype == np.uint8
    assert dsb["labels"].shape == (541, 256, 256) and dsb["labels"].dtype == np.uint16
    assert dsb["ids"].shape == (541,) and dsb["ids"].dtype.kind == "U"
    assert dsb["test"].dtype == bool
    ids = list(dsb["ids"])
    assert ids == sorted(ids) and len(set(ids)) == 541
    # fluorescence: dark background (the rule keeps whole images with mean < 100)
    assert dsb["images"].reshape(541, -1).mean(1).max() < 100


def test_dsb_split_is_the_documented_seeded_one(dsb):
    test = dsb["test"]
    assert int(test.sum()) == 108 and int((~test).sum()) == 433
    expected = np.zeros(541, bool)
    expected[np.random.default_rng(0).permutation(541)[:108]] = True
    assert (test == expected).all()
    assert not set(dsb["ids"][test]) & set(dsb["ids"][~test])


def test_dsb_instance_labels(dsb):
    counts = []
    for lab in dsb["labels"]:
        k = int(lab.max())
        sizes = np.bincount(lab.ravel(), minlength=k + 1)
        assert (sizes[1:] >= 10).all()  # consecutive 1..K, fragments < 10 px dropped
        counts.append(k)
    counts = np.array(counts)
    assert (counts == 0).sum() == 5  # crops of sparse images that hold no nucleus (documented)
    assert counts.sum() == 13413
    assert counts[dsb["test"]].sum() == 2570


def test_cxr_arrays_and_counts(cxr):
    assert set(cxr) == {"images", "labels", "sources", "files", "test", "patients"}
    n = 423
    assert cxr["images"].shape == (n, 256, 256) and cxr["images"].dtype == np.uint8
    assert cxr["labels"].dtype == np.int64 and cxr["test"].dtype == bool
    assert len(set(cxr["files"])) == n
    table = {
        split: np.bincount(cxr["labels"][cxr["test"] == (split == "test")], minlength=3).tolist()
        for split in ("train", "test")
    }
    assert table == {"train": [194, 70, 70], "test": [49, 20, 20]}


def test_cxr_sources_and_no_kaggle_covid(cxr):
    mhh = cxr["sources"] == "mhh-covid"
    assert set(cxr["sources"]) == {"mhh-covid", "kaggle-3class"}
    assert ((cxr["labels"] == 0) == mhh).all()  # every COVID image is from Hannover
    assert mhh.sum() == 243
    for f, s in zip(cxr["files"], cxr["sources"]):
        assert f.startswith(s + "/")
        assert "/covid/" not in f  # the kaggle COVID images are never shipped
    names = ("covid", "normal", "viral_pneumonia")
    for f, y, t in zip(cxr["files"][~mhh], cxr["labels"][~mhh], cxr["test"][~mhh]):
        _, split, cls, _ = f.split("/")
        assert split == ("test" if t else "train")  # kaggle keeps its own split
        assert names[y] == cls


def test_cxr_mhh_split_by_patient(cxr):
    mhh = cxr["sources"] == "mhh-covid"
    pat, test = cxr["patients"][mhh], cxr["test"][mhh]
    assert (pat != "").all() and (cxr["patients"][~mhh] == "").all()
    assert len(set(pat)) == 71
    assert not set(pat[test]) & set(pat[~test])
    assert test.sum() == 49 and len(set(pat[test])) == 20


def test_no_test_image_repeats_a_training_image(cxr, dsb):
    for a in (cxr, dsb):
        train = {im.tobytes() for im in a["images"][~a["test"]]}
        assert not any(im.tobytes() in train for im in a["images"][a["test"]])


def test_stats_are_the_training_images(cxr, dsb):
    for name, a in (("covid_cxr", cxr), ("dsb2018", dsb)):
        x = a["images"][~a["test"]].astype(np.float64) / 255
        assert STATS[name] == (round(float(x.mean()), 4), round(float(x.std()), 4))


def test_build_script_writes_the_same_bytes(tmp_path):
    spec = importlib.util.spec_from_file_location("build_embedded", DATA / "build_embedded.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    arrays = {"images": np.arange(512, dtype=np.uint8).reshape(2, 16, 16), "ids": np.array(["a", "b"])}
    mod.save(tmp_path / "a.npz", arrays)
    time.sleep(2.1)  # zip dates have a 2 s resolution
    mod.save(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert (z["images"] == arrays["images"]).all() and list(z["ids"]) == ["a", "b"]
    assert mod.relabel(np.array([[0, 5, 5], [7, 5, 9]]), 2).tolist() == [[0, 1, 1], [0, 1, 0]]
    mask = mod.seeded_test_mask(10)
    assert mask.sum() == 2 and (mask == mod.seeded_test_mask(10)).all()


# --- load_dataset ---------------------------------------------------------------------


def test_dsb_tiles_are_the_crops_quarters(dsb, dsb128):
    b = dsb128
    assert b.task == "segmentation" and b.source == "embedded"
    assert b.num_classes == 3 and b.class_names == ("background", "interior", "boundary")
    assert b.x_train.shape == (4 * 433, 1, 128, 128) and b.x_test.shape == (4 * 108, 1, 128, 128)
    assert b.y_train.shape == (4 * 433, 128, 128) and b.y_train.dtype == torch.int64
    inst = b.extras["test_instances"]
    assert inst.shape == (4 * 108, 128, 128) and inst.dtype == torch.int64
    mean, std = STATS["dsb2018"]
    for split, x in (("train", b.x_train), ("test", b.x_test)):
        mask = dsb["test"] if split == "test" else ~dsb["test"]
        for i in (0, 7, int(mask.sum()) - 1):
            img, lab = dsb["images"][mask][i], dsb["labels"][mask][i]
            for q, (r, c) in enumerate(((0, 0), (0, 128), (128, 0), (128, 128))):
                quarter = torch.from_numpy(img[r : r + 128, c : c + 128].astype(np.float32) / 255)
                torch.testing.assert_close(x[4 * i + q, 0], (quarter - mean) / std)
                if split == "test":
                    assert (inst[4 * i + q].numpy() == lab[r : r + 128, c : c + 128]).all()


def neighbours_differ(lab: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood (inside the image) holds another label."""
    h, w = lab.shape
    p = np.pad(lab, 1, mode="edge")
    out = np.zeros((h, w), bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            out |= p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] != lab
    return out


def test_dsb_targets_mark_instance_edges(dsb128):
    y, inst = dsb128.y_test.numpy(), dsb128.extras["test_instances"].numpy()
    assert set(np.unique(y)) == {0, 1, 2}
    assert set(np.unique(dsb128.y_train.numpy())) == {0, 1, 2}
    for i in range(0, len(y), 17):
        edge = neighbours_differ(inst[i])
        fg = inst[i] > 0
        assert ((y[i] > 0) == fg).all()
        assert ((y[i] == 2) == (fg & edge)).all()  # boundary exactly on instance edges
        assert ((y[i] == 1) == (fg & ~edge)).all()
    frac = (y == 2).sum() / (y > 0).sum()
    assert 0.05 < frac < 0.6


def test_dsb_default_and_small_tiles(dsb):
    b = load_dataset(cfg("dsb2018", test_size=20))
    assert b.x_train.shape == (433, 1, 256, 256) and b.x_test.shape == (20, 1, 256, 256)
    assert "untiled" in b.description
    b = load_dataset(cfg("dsb2018", source="auto", image_size=64, train_size=5, test_size=16 * 3 + 2))
    assert b.x_test.shape == (50, 1, 64, 64) and b.y_test.shape == (50, 64, 64)
    assert b.extras["test_instances"].shape == (50, 64, 64)
    assert b.x_train.shape[0] == 5
    lab = dsb["labels"][dsb["test"]]
    assert (b.extras["test_instances"][16].numpy() == lab[1, :64, :64]).all()  # tile 0 of test image 1
    assert "64x64 tiles, 16 per crop" in b.description and "used 5 train / 50 test" in b.description


def test_truncation_keeps_extras_consistent(dsb128):
    b = load_dataset(cfg("dsb2018", image_size=128, test_size=10))
    assert len(b.x_test) == len(b.y_test) == len(b.extras["test_instances"]) == 10
    assert torch.equal(b.extras["test_instances"], dsb128.extras["test_instances"][:10])
    assert torch.equal(b.y_test, dsb128.y_test[:10])


def test_descriptions_say_what_ran(dsb128):
    d = dsb128.description
    assert d.startswith("DSB 2018 stage-1 nuclei (embedded: 541 greyscale fluorescence images, 256x256 centre crops; 128x128 tiles")
    assert "held-out 20% by image id" in d and "used 1732 train / 432 test" in d
    b = load_dataset(cfg("covid_cxr", image_size=64, train_size=30))
    assert "COVID-19 CXR (embedded: mhh-covid COVID-19 + Kermany normal/viral pneumonia; 64 px)" in b.description
    assert "source confound: see data/README.md" in b.description
    assert "used 30 train / 89 test" in b.description


def test_cxr_bundle(cxr):
    b = load_dataset(cfg("covid_cxr", source="auto"))
    assert b.task == "classification" and b.source == "embedded"
    assert b.class_names == ("covid", "normal", "viral_pneumonia") and b.num_classes == 3
    assert b.x_train.shape == (334, 1, 128, 128) and b.x_test.shape == (89, 1, 128, 128)
    assert b.y_train.dtype == torch.int64 and set(b.extras) == {"train_groups"}  # the patients
    assert torch.bincount(b.y_test).tolist() == [49, 20, 20]
    assert abs(float(b.x_train.mean())) < 0.05 and abs(float(b.x_train.std()) - 1) < 0.05
    # 256: the stored pixels, only normalised; 128: a smooth downscale of them
    full = load_dataset(cfg("covid_cxr", image_size=256, test_size=3))
    mean, std = STATS["covid_cxr"]
    first = torch.from_numpy(cxr["images"][cxr["test"]][:3].astype(np.float32) / 255)
    torch.testing.assert_close(full.x_test[:, 0], (first - mean) / std)
    pooled = torch.nn.functional.avg_pool2d(full.x_test, 2)
    assert float((pooled - b.x_test[:3]).abs().mean()) < 0.05


@pytest.mark.parametrize("name,size", [("dsb2018", 100), ("dsb2018", 512), ("covid_cxr", 300), ("covid_cxr", 4)])
def test_image_size_validation_names_the_field(name, size):
    with pytest.raises(DataError, match=r"data\.image_size") as e:
        load_dataset(cfg(name, image_size=size))
    assert str(size) in str(e.value)
    if name == "dsb2018":
        assert "8, 16, 32, 64, 128, 256" in str(e.value)


def test_image_size_is_refused_for_other_datasets():
    with pytest.raises(DataError, match=r"data\.image_size applies to dsb2018 and covid_cxr only"):
        load_dataset(cfg("mnist", image_size=64))


@pytest.mark.parametrize("name", ["dsb2018", "covid_cxr"])
def test_torchvision_source_refused(name):
    with pytest.raises(DataError, match="torchvision has no"):
        load_dataset(cfg(name, source="torchvision"))


def test_registries_and_class_names():
    assert {"dsb2018", "covid_cxr"} <= set(datasets.DATASETS)
    b = load_dataset(cfg("mnist", train_size=100, test_size=100))
    assert b.class_names == tuple("0123456789") and b.num_classes == 10 and b.task == "classification"
    assert datasets.CLASS_NAMES["cifar10"] == datasets.CIFAR10_CLASSES


def test_validation_split_carries_the_instance_labels(dsb128):
    b = load_dataset(cfg("dsb2018", image_size=128, val_size=40))
    assert len(b.x_val) == len(b.y_val) == len(b.extras["val_instances"]) == 40
    assert len(b.x_train) == len(b.extras["train_instances"]) == len(dsb128.x_train) - 40
    view = b.validation_view()
    assert torch.equal(view.extras["test_instances"], b.extras["val_instances"])
    # the per-pixel classes are the instance labels' (interior 1, edge 2), pixel for pixel
    assert torch.equal(view.y_test != 0, view.extras["test_instances"] != 0)
    assert torch.equal(b.y_test, dsb128.y_test)


def test_chest_xray_validation_split_holds_out_whole_patients_in_class_shares():
    full = load_dataset(cfg("covid_cxr"))
    b = load_dataset(cfg("covid_cxr", val_size=67))
    train, val = b.extras["train_groups"], b.extras["val_groups"]
    assert len(val) == len(b.y_val) == 67 and len(train) == len(b.y_train) == len(full.y_train) - 67
    assert not set(train.tolist()) & set(val.tolist())  # no patient on both sides
    # every patient with several images went whole to one side (there are such patients)
    sizes = torch.bincount(full.extras["train_groups"])
    assert sizes.max() > 1 and all(int((val == g).sum()) in (0, int(sizes[g])) for g in val.unique())
    # each class's share of the 67, by largest remainders: 194, 70, 70 of 334 -> 39, 14, 14
    assert torch.bincount(full.y_train).tolist() == [194, 70, 70]
    assert torch.bincount(b.y_val).tolist() == [39, 14, 14]
    # the same split on every load
    again = load_dataset(cfg("covid_cxr", val_size=67))
    assert torch.equal(again.x_val, b.x_val) and torch.equal(again.x_train, b.x_train)


def test_a_validation_split_that_whole_groups_cannot_fill_is_refused():
    # two patients of two images each: one example cannot be held out without splitting one
    b = datasets.DatasetBundle("t", "test", torch.zeros(4, 1), torch.zeros(4, dtype=torch.long), torch.zeros(1, 1),
                               torch.zeros(1, dtype=torch.long), "", extras={"train_groups": torch.tensor([0, 0, 1, 1])})
    with pytest.raises(DataError, match=r"data.val_size: 1 examples cannot be held out in whole groups"):
        datasets.carve_validation(b, 1)
    datasets.carve_validation(b, 2)
    assert b.extras["val_groups"].unique().numel() == 1 and len(b.y_train) == 2
