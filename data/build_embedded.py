"""Build the embedded medical data sets in ``data/`` from their source zips.

Maintainer-only: users never need to run this (the outputs are shipped and
checked against ``data/checksums.sha256``). Usage::

    python data/build_embedded.py --dsb DSB2018_STAGE1_TRAIN_ZIP --cxr COVID_CXR_ZIP --out data/

Inputs (see data/README.md for provenance and licences):

- ``--dsb``: the Kaggle Data Science Bowl 2018 stage-1 training set with the
  community mask fixes, laid out as ``images/<id>.png`` (RGB) and
  ``labels/<id>.png`` (16-bit instance labels);
- ``--cxr``: chest X-rays laid out as ``mhh-covid/<file>.png`` (+ ``data.csv``)
  and ``kaggle-3class/{train,test}/{covid,normal,viral_pneumonia}/<file>.png``.

Outputs (deterministic: the same inputs give the same bytes):

Both are ``.npz`` files (zip-deflated ``.npy`` arrays, no pickles).

- ``dsb2018/dsb2018-fluo-256.npz``: the greyscale fluorescence images
  (R == G == B everywhere and mean intensity < 100), centre-cropped to
  256x256 at native resolution, with their instance labels;
- ``covid-cxr/cxr-256.npz``: mhh-covid COVID-19 images and the kaggle-3class
  normal / viral pneumonia images (never its COVID images), centre square
  crop resized to 256x256 (Pillow LANCZOS), greyscale.

Prints each output's SHA-256, to be copied into ``data/checksums.sha256`` and
``EMBEDDED`` in ``src/prunedyn/datasets.py``.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
import zipfile
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

CROP = 256
FLUO_MAX_MEAN = 100.0  # fluorescence: dark background; brightfield/tissue images have mean > 130
MIN_PIXELS = 10  # instances with fewer pixels inside the crop are set to background
TEST_FRACTION = 0.2
SEED = 0
CXR_SIZE = 256
CXR_CLASSES = ("covid", "normal", "viral_pneumonia")


def n_test(n: int) -> int:
    return int(round(TEST_FRACTION * n))


def seeded_test_mask(n: int) -> np.ndarray:
    """Boolean mask over ``n`` sorted items: the first 20% of a seed-0 permutation."""
    perm = np.random.default_rng(SEED).permutation(n)
    mask = np.zeros(n, dtype=bool)
    mask[perm[: n_test(n)]] = True
    return mask


def centre_crop(a: np.ndarray, size: int) -> np.ndarray:
    h, w = a.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return a[top : top + size, left : left + size]


def relabel(labels: np.ndarray, min_pixels: int) -> np.ndarray:
    """Instance labels renumbered 1..K in order of their old label, dropping instances
    with fewer than ``min_pixels`` pixels (set to background)."""
    ids, counts = np.unique(labels, return_counts=True)
    keep = ids[(ids != 0) & (counts >= min_pixels)]
    lut = np.zeros(int(labels.max()) + 1, dtype=np.uint16)
    lut[keep] = np.arange(1, len(keep) + 1, dtype=np.uint16)
    return lut[labels]


def build_dsb(src: Path, out: Path) -> Dict[str, object]:
    images: List[np.ndarray] = []
    labels: List[np.ndarray] = []
    ids: List[str] = []
    skipped = {"colour": 0, "bright": 0}
    dropped = 0
    with zipfile.ZipFile(src) as z:
        names = sorted(n for n in z.namelist() if n.startswith("images/") and n.endswith(".png"))
        for name in names:
            iid = name[len("images/") : -len(".png")]
            rgb = np.asarray(Image.open(io.BytesIO(z.read(name))).convert("RGB"))
            if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
                skipped["colour"] += 1
                continue
            if rgb.mean() >= FLUO_MAX_MEAN:
                skipped["bright"] += 1
                continue
            if min(rgb.shape[:2]) < CROP:
                raise SystemExit(f"{iid}: {rgb.shape[:2]} smaller than the {CROP}x{CROP} crop")
            lab = np.asarray(Image.open(io.BytesIO(z.read(f"labels/{iid}.png"))), dtype=np.int64)
            if lab.shape != rgb.shape[:2]:
                raise SystemExit(f"{iid}: label shape {lab.shape} != image shape {rgb.shape[:2]}")
            crop = centre_crop(lab, CROP)
            new = relabel(crop, MIN_PIXELS)
            dropped += len(np.unique(crop[crop > 0])) - int(new.max())
            images.append(centre_crop(rgb[..., 0], CROP).copy())
            labels.append(new)
            ids.append(iid)
    arrays = {
        "images": np.stack(images).astype(np.uint8),
        "labels": np.stack(labels).astype(np.uint16),
        "ids": np.asarray(ids, dtype=str),
        "test": seeded_test_mask(len(ids)),
    }
    path = out / "dsb2018" / "dsb2018-fluo-256.npz"
    save(path, arrays)
    instances = [int(l.max()) for l in labels]
    return {
        "path": path,
        "n": len(ids),
        "test": int(arrays["test"].sum()),
        "skipped": skipped,
        "dropped_small": dropped,
        "instances": sum(instances),
        "instances_test": sum(k for k, t in zip(instances, arrays["test"]) if t),
    }


def cxr_image(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data)).convert("L")
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    im = im.crop((left, top, left + s, top + s)).resize((CXR_SIZE, CXR_SIZE), Image.LANCZOS)
    return np.asarray(im, dtype=np.uint8)


def mhh_test_mask(files: List[str], patient_of: Dict[str, str]) -> np.ndarray:
    """mhh-covid held-out images, split by *patient* (71 patients, up to 22 images
    each): walk a seed-0 permutation of the sorted patient ids and hold out each
    patient whose images still fit into 20% of the images."""
    patients = sorted(set(patient_of[f] for f in files))
    count = {p: sum(patient_of[f] == p for f in files) for p in patients}
    target = n_test(len(files))
    held, total = set(), 0
    for i in np.random.default_rng(SEED).permutation(len(patients)):
        p = patients[i]
        if total + count[p] <= target:
            held.add(p)
            total += count[p]
        if total == target:
            break
    return np.array([patient_of[f] in held for f in files], dtype=bool)


def build_cxr(src: Path, out: Path) -> Dict[str, object]:
    rows = []  # (image, label, source, file, test, patient)
    with zipfile.ZipFile(src) as z:
        names = z.namelist()
        with z.open("mhh-covid/data.csv") as f:
            patient_of = {r["image_id"]: r["patient_id"] for r in csv.DictReader(io.TextIOWrapper(f, "utf-8"))}
        mhh = sorted(n for n in names if n.startswith("mhh-covid/") and n.endswith(".png"))
        stems = [Path(n).stem for n in mhh]
        missing = [s for s in stems if s not in patient_of]
        if missing:
            raise SystemExit(f"mhh-covid images without a data.csv row: {missing[:5]}")
        test = mhh_test_mask(stems, patient_of)
        for n, t in zip(mhh, test):
            rows.append((cxr_image(z.read(n)), 0, "mhh-covid", n, bool(t), patient_of[Path(n).stem]))
        for split in ("train", "test"):
            for label, cls in enumerate(CXR_CLASSES):
                if cls == "covid":  # licence of the kaggle COVID images unverified: never shipped
                    continue
                prefix = f"kaggle-3class/{split}/{cls}/"
                for n in sorted(n for n in names if n.startswith(prefix) and n.endswith(".png")):
                    rows.append((cxr_image(z.read(n)), label, "kaggle-3class", n, split == "test", ""))
    arrays = {
        "images": np.stack([r[0] for r in rows]),
        "labels": np.array([r[1] for r in rows], dtype=np.int64),
        "sources": np.array([r[2] for r in rows], dtype=str),
        "files": np.array([r[3] for r in rows], dtype=str),
        "test": np.array([r[4] for r in rows], dtype=bool),
        "patients": np.array([r[5] for r in rows], dtype=str),
    }
    path = out / "covid-cxr" / "cxr-256.npz"
    save(path, arrays)
    counts = {
        split: [int(((arrays["labels"] == c) & (arrays["test"] == (split == "test"))).sum()) for c in range(3)]
        for split in ("train", "test")
    }
    return {"path": path, "n": len(rows), "counts": counts, "mhh_patients_test": len(set(patient_of[s] for s, t in zip(stems, test) if t))}


def save(path: Path, arrays: Dict[str, np.ndarray]) -> None:
    """Arrays as an ``.npz`` (what ``np.savez_compressed`` writes, readable by
    ``np.load``), but with a fixed date on every zip entry so that reruns give the
    same bytes (``np.savez_compressed`` stamps the current time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for key, val in arrays.items():
            npy = io.BytesIO()
            np.lib.format.write_array(npy, np.ascontiguousarray(val), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, npy.getvalue(), compresslevel=9)
    path.write_bytes(buf.getvalue())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsb", type=Path, required=True, help="dsb2018-stage1-train.zip")
    ap.add_argument("--cxr", type=Path, required=True, help="covid-cxr.zip")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="the data/ folder")
    args = ap.parse_args(argv)
    for src in (args.dsb, args.cxr):
        if not src.is_file():
            ap.error(f"not a file: {src}")
    dsb = build_dsb(args.dsb, args.out)
    print(f"dsb2018: {dsb['n']} images ({dsb['n'] - dsb['test']} train / {dsb['test']} test), "
          f"{dsb['instances']} instances ({dsb['instances_test']} in test); skipped {dsb['skipped']}; "
          f"dropped {dsb['dropped_small']} crop fragments < {MIN_PIXELS} px")
    cxr = build_cxr(args.cxr, args.out)
    print(f"covid_cxr: {cxr['n']} images; per class {CXR_CLASSES}: {cxr['counts']}; "
          f"mhh test patients {cxr['mhh_patients_test']}")
    for info in (dsb, cxr):
        p = info["path"]
        print(f"{sha256(p)}  {p.relative_to(args.out).as_posix()}  ({p.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
