"""Nuclei segmentation: 3-class targets, instance post-processing, DSB 2018 metrics."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from prunedyn.tasks.segmentation import (
    average_precision,
    class_targets,
    dice,
    instances_from_classes,
    iou_matrix,
    mean_average_precision,
    segmentation_scores,
)


def same_partition(a, b):
    """True when two label images hold the same objects up to renumbering."""
    iou = iou_matrix(a, b)  # IoU 1 means the very same pixel set
    return iou.shape[0] == iou.shape[1] and (iou.max(axis=0) == 1).all() and (iou.max(axis=1) == 1).all()


def random_disks(rng, shape=(128, 128), n=12, rmin=4, rmax=10, gap=2):
    """Non-touching disks (at least ``gap`` background pixels apart), labels 1..K."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, dtype=np.int32)
    centres = []
    for _ in range(200):
        if len(centres) == n:
            break
        r = rng.integers(rmin, rmax + 1)
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        if all(np.hypot(cy - y, cx - x) > r + s + gap + 1 for y, x, s in centres):
            centres.append((cy, cx, r))
            out[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = len(centres)
    return out


# ---------------------------------------------------------------- class_targets

def test_class_targets_tiny_two_nuclei_by_hand():
    # Nucleus 1: 3x3 in the top-left corner; nucleus 2: 4x3 at the top-right
    # corner. The image border does not make a pixel boundary.
    inst = np.array([
        [1, 1, 1, 0, 0, 0, 2, 2, 2],
        [1, 1, 1, 0, 0, 0, 2, 2, 2],
        [1, 1, 1, 0, 0, 0, 2, 2, 2],
        [0, 0, 0, 0, 0, 0, 2, 2, 2],
        [0, 0, 0, 0, 0, 0, 0, 0, 0],
    ])
    expected = np.array([
        [1, 1, 2, 0, 0, 0, 2, 1, 1],
        [1, 1, 2, 0, 0, 0, 2, 1, 1],
        [2, 2, 2, 0, 0, 0, 2, 1, 1],
        [0, 0, 0, 0, 0, 0, 2, 2, 2],
        [0, 0, 0, 0, 0, 0, 0, 0, 0],
    ])
    out = class_targets(inst)
    assert out.dtype == np.int64 and out.shape == inst.shape
    np.testing.assert_array_equal(out, expected)
    # A batch gives the per-image results; a torch tensor is accepted.
    batch = class_targets(torch.from_numpy(np.stack([inst, np.zeros_like(inst)])))
    np.testing.assert_array_equal(batch, np.stack([expected, np.zeros_like(expected)]))


def test_class_targets_isolated_nucleus_and_width():
    inst = np.zeros((9, 9), dtype=int)
    inst[1:8, 1:8] = 5  # 7x7 square, any label value
    out = class_targets(inst)
    assert (out[2:7, 2:7] == 1).all() and (out[out > 0] == 1).sum() == 25  # 5x5 interior
    assert (out == 2).sum() == 49 - 25
    wide = class_targets(inst, boundary_width=2)
    assert (wide == 1).sum() == 9  # 3x3 interior
    assert (wide == 2).sum() == 40


def test_touching_nuclei_get_a_boundary_between_them():
    inst = np.zeros((9, 14), dtype=int)
    inst[1:8, 1:7] = 1
    inst[1:8, 7:13] = 2  # shares the column edge 6|7 with nucleus 1
    out = class_targets(inst)
    assert (out[1:8, 6] == 2).all() and (out[1:8, 7] == 2).all()
    # Interiors: rows 2..6, columns 2..5 and 8..11; nothing else.
    interior = np.zeros_like(out, dtype=bool)
    interior[2:7, 2:6] = interior[2:7, 8:12] = True
    np.testing.assert_array_equal(out == 1, interior)
    np.testing.assert_array_equal(out > 0, inst > 0)


# ---------------------------------------------------------- instances_from_classes

def test_instances_from_classes_splits_touching_nuclei_and_grows_them_back():
    inst = np.zeros((9, 14), dtype=int)
    inst[1:8, 1:7] = 1
    inst[1:8, 7:13] = 2
    classes = class_targets(inst)
    # The interior classes are 4x5 = 20 pixels each, split by a 2-pixel boundary band.
    out = instances_from_classes(classes)
    assert out.dtype == np.int32 and out.shape == inst.shape
    np.testing.assert_array_equal(out, inst)  # raster order: left nucleus first
    assert np.bincount(out.ravel()).tolist() == [126 - 84, 42, 42]


def test_instances_from_classes_accepts_scores_and_tensors():
    inst = np.zeros((9, 14), dtype=int)
    inst[1:8, 1:7] = 1
    inst[1:8, 7:13] = 2
    classes = class_targets(inst)
    logits = np.eye(3, dtype=np.float32)[classes].transpose(2, 0, 1) * 4.0 - 2.0  # (3, H, W)
    np.testing.assert_array_equal(instances_from_classes(logits), inst)
    np.testing.assert_array_equal(instances_from_classes(torch.from_numpy(logits)), inst)
    with pytest.raises(ValueError):
        instances_from_classes(np.zeros((4, 5, 5)))


def test_min_size_drops_specks():
    classes = np.zeros((12, 12), dtype=int)
    classes[1:6, 1:6] = 2
    classes[2:5, 2:5] = 1  # interior of 9 pixels: kept (>= 8)
    classes[8:11, 8:11] = 2
    classes[9, 9] = 1  # 1-pixel interior: a speck
    out = instances_from_classes(classes)
    assert out.max() == 1
    assert (out == 1).sum() == 25 and (out[8:, 8:] == 0).all()
    # With min_size=1 the speck is a nucleus; its ring grows back (3x3 = 9).
    out1 = instances_from_classes(classes, min_size=1)
    assert out1.max() == 2 and (out1 == 2).sum() == 9
    # With min_size=10 the 9-pixel interior goes too: nothing is left.
    assert instances_from_classes(classes, min_size=10).max() == 0


def test_grow_limits_how_far_boundary_is_assigned():
    classes = np.zeros((3, 14), dtype=int)
    classes[1, 1:9] = 1  # seed of 8 pixels
    classes[1, 9:13] = 2  # boundary run at distances 1, 2, 3, 4
    assert (instances_from_classes(classes)[1] > 0).sum() == 10
    assert (instances_from_classes(classes, grow=4)[1] > 0).sum() == 12
    assert (instances_from_classes(classes, grow=0)[1] > 0).sum() == 8


def test_seeds_are_four_connected():
    classes = np.zeros((10, 10), dtype=int)
    classes[1:5, 1:5] = 1
    classes[5:9, 5:9] = 1  # touches the first block only at a corner
    out = instances_from_classes(classes)
    assert out.max() == 2 and (out == 1).sum() == 16 and (out == 2).sum() == 16


def test_round_trip_on_random_disks_is_exact():
    rng = np.random.default_rng(0)
    trues = [random_disks(rng) for _ in range(6)]
    assert all(t.max() >= 6 for t in trues)
    preds = [instances_from_classes(class_targets(t)) for t in trues]
    for p, t in zip(preds, trues):
        assert p.max() == t.max()
        assert same_partition(p, t)
    assert mean_average_precision(preds, trues) == 1.0


# -------------------------------------------------------------------- dice / IoU

def test_dice_known_values():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :4] = True  # 4 pixels
    b[0, 2:4] = True
    b[1, 0:2] = True  # 4 pixels, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 8)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0
    assert dice(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0
    # Pooled over a batch: (2*2 + 2*4) / (8 + 8), not the mean of 0.5 and 1.
    assert dice(np.stack([a, a]), np.stack([b, a])) == pytest.approx(12 / 16)


def test_iou_matrix_known_overlaps():
    true = np.array([
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 2, 2],
    ])
    pred = np.array([
        [7, 7, 0, 0, 0, 0],
        [7, 7, 0, 0, 0, 3],
        [0, 0, 0, 0, 0, 3],
    ])
    iou = iou_matrix(pred, true)
    assert iou.shape == (2, 2)  # rows true 1, 2; columns pred 3, 7
    # true1 (8 px) vs pred7 (4 px): 4/8; true2 (2 px) vs pred3 (2 px): 1 shared, union 3.
    np.testing.assert_allclose(iou, [[0.0, 0.5], [1 / 3, 0.0]])
    assert iou_matrix(np.zeros((3, 3), int), true[:, :3]).shape == (1, 0)


@settings(max_examples=40, deadline=None)
@given(arrays(np.int64, (6, 7), elements=st.integers(0, 4)),
       arrays(np.int64, (6, 7), elements=st.integers(0, 3)))
def test_iou_matrix_matches_pairwise_definition(pred, true):
    iou = iou_matrix(pred, true)
    tl = [v for v in np.unique(true) if v]
    pl = [v for v in np.unique(pred) if v]
    assert iou.shape == (len(tl), len(pl))
    for i, a in enumerate(tl):
        for j, b in enumerate(pl):
            inter = np.sum((true == a) & (pred == b))
            union = np.sum((true == a) | (pred == b))
            assert iou[i, j] == pytest.approx(inter / union)
    assert average_precision(true, true) == 1.0


@settings(max_examples=40, deadline=None)
@given(arrays(np.int64, (7, 8), elements=st.integers(0, 3)))
def test_class_targets_keep_the_foreground(inst):
    out = class_targets(inst)
    np.testing.assert_array_equal(out > 0, inst > 0)
    # An interior pixel's 3x3 neighbourhood (inside the image) is all its own label.
    for y, x in zip(*np.nonzero(out == 1)):
        win = inst[max(y - 1, 0): y + 2, max(x - 1, 0): x + 2]
        assert (win == inst[y, x]).all()


# ------------------------------------------------------------ average precision

def test_average_precision_perfect_and_empty():
    true = np.zeros((6, 6), int)
    true[0:2, 0:2] = 1
    true[3:6, 3:6] = 2
    assert average_precision(true, true) == 1.0
    assert average_precision(true * 5, true) == 1.0  # labels need not agree
    empty = np.zeros_like(true)
    assert average_precision(empty, empty) == 1.0
    assert average_precision(empty, true) == 0.0
    assert average_precision(true, empty) == 0.0


def test_average_precision_one_of_two_missed():
    true = np.zeros((6, 6), int)
    true[0:2, 0:2] = 1
    true[3:6, 3:6] = 2
    pred = np.where(true == 2, 1, 0)
    # At every threshold TP=1, FP=0, FN=1: 1/2.
    assert average_precision(pred, true) == pytest.approx(0.5)


def test_average_precision_iou_point_seven_counts_below_point_seven_only():
    true = np.zeros((4, 10), int)
    true[0, 0:7] = 1  # 7 pixels
    pred = np.zeros_like(true)
    pred[0, 0:10] = 1  # 10 pixels, 7 shared: IoU 0.7
    assert iou_matrix(pred, true)[0, 0] == pytest.approx(0.7)
    # Matched at 0.5, 0.55, 0.6, 0.65 (precision 1); not at 0.7..0.95
    # (TP 0, FP 1, FN 1: precision 0): 4 / 10.
    assert average_precision(pred, true) == pytest.approx(0.4)
    # Add a perfectly predicted second object: 1 at 4 thresholds, and
    # TP 1, FP 1, FN 1 -> 1/3 at the other 6: (4 + 6/3) / 10 = 0.6.
    true[2:4, 0:3] = 2
    pred[2:4, 0:3] = 2
    assert average_precision(pred, true) == pytest.approx(0.6)
    assert mean_average_precision([pred, pred], [true, pred]) == pytest.approx(0.8)
    with pytest.raises(ValueError):
        average_precision(pred, true, thresholds=[0.3])


# --------------------------------------------------------- segmentation_scores

def test_segmentation_scores_perfect_prediction():
    rng = np.random.default_rng(1)
    true = np.stack([random_disks(rng, shape=(64, 64), n=5) for _ in range(4)])
    classes = class_targets(true)
    logits = torch.from_numpy(np.eye(3, dtype=np.float32)[classes]).permute(0, 3, 1, 2)
    for x in (logits, classes):
        scores = segmentation_scores(x, true)
        assert scores == {"dice": 1.0, "map": 1.0, "pixel_accuracy": 1.0}


def test_segmentation_scores_known_errors():
    true = np.zeros((2, 9, 14), int)
    true[0, 1:8, 1:7] = 1
    true[0, 1:8, 7:13] = 2
    true[1, 1:8, 1:7] = 1
    classes = class_targets(true)
    pred = classes.copy()
    pred[1] = 0  # second image: nothing predicted
    scores = segmentation_scores(pred, true)
    # Foreground: 84 px predicted, 84 + 42 true, 84 shared -> 168 / 210.
    assert scores["dice"] == pytest.approx(168 / 210)
    assert scores["map"] == pytest.approx(0.5)  # 1.0 and 0.0
    assert scores["pixel_accuracy"] == pytest.approx(1 - 42 / (2 * 9 * 14))


def test_segmentation_scores_record_how_much_of_the_boundary_is_drawn():
    """test_boundary_recall: the share of true boundary pixels predicted as boundary (scikit-learn's
    recall of class 2 over all test pixels); a network that never draws the thin class scores 0."""
    from sklearn.metrics import recall_score
    from torch import nn

    from prunedyn.data.datasets import DatasetBundle
    from prunedyn.tasks.scoring import Segmentation

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (6, 8, 8), generator=g)
    inst = (y > 0).long()
    data = DatasetBundle(name="toy", source="synthetic", x_train=torch.zeros(1, 3, 8, 8), y_train=y[:1],
                         x_test=nn.functional.one_hot(y, 3).permute(0, 3, 1, 2).float()
                         + 0.7 * torch.randn(6, 3, 8, 8, generator=g), y_test=y,
                         description="toy", task="segmentation", extras={"test_instances": inst})
    noisy = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        noisy.weight.copy_(torch.eye(3)[:, :, None, None])  # the noisy input's largest channel
    got = Segmentation().evaluate(noisy, data, torch.device("cpu"))["test_boundary_recall"]
    with torch.no_grad():
        pred = noisy(data.x_test).argmax(1)
    assert got == pytest.approx(recall_score(y.flatten().numpy() == 2, pred.flatten().numpy() == 2))
    assert 0 < got < 1
    blind = nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        blind.weight.copy_(torch.tensor([[1.0, 0, 1], [0, 1, 0], [0, 0, 0]])[:, :, None, None])  # boundary -> background
        blind.bias.copy_(torch.tensor([0.0, 0.0, -100.0]))
    assert Segmentation().evaluate(blind, data, torch.device("cpu"))["test_boundary_recall"] == 0.0
