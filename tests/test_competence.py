"""prunedyn.book.competence: the gate a dense reference passes before any pruning verdict."""
import pytest
import torch

from prunedyn.book import competence as K


def test_a_converged_reference_far_above_the_trivial_model_is_competent():
    g = K.Competence("test_accuracy", [0.964, 0.964, 0.967], [0.965, 0.966, 0.966], trivial=0.906, budget=40)
    assert g.converged and g.above_trivial and g.competent and g.reasons() == ""
    assert g.change == pytest.approx(0.000667, abs=1e-5)
    assert g.error_ratio == pytest.approx((1 - 0.965) / (1 - 0.906), rel=1e-3)


@pytest.mark.parametrize("dense, doubled, trivial, reason", [
    ([0.24, 0.24, 0.22], [0.23, 0.32, 0.29], 0.28, "not converged"),      # still learning, and below a linear model
    ([0.80, 0.84, 0.75], [0.88, 0.89, 0.88], 0.65, "not converged"),      # a U-Net 4 -> 8 epochs
    ([0.993, 0.997, 0.994], [0.994, 0.995, 0.993], 0.995, "trivial"),    # converged, but a linear model does as well
    ([0.96, 0.96, 0.96], None, 0.90, "not measured"),                   # convergence never measured
])
def test_a_reference_that_fails_either_condition_is_not_competent(dense, doubled, trivial, reason):
    metric = "test_auc" if trivial > 0.99 else "test_accuracy"
    g = K.Competence(metric, dense, doubled, trivial)
    assert not g.competent and reason in g.reasons()


def test_no_trivial_model_means_not_competent():
    g = K.Competence("test_accuracy", [0.9] * 3, [0.9] * 3, trivial=None)
    assert g.converged and not g.competent and "no trivial model" in g.reasons()


def test_trivial_classifier_and_segmenter_on_data_a_linear_model_can_and_cannot_fit():
    gen = torch.Generator().manual_seed(0)
    # classes told apart by the mean brightness: linear; the labels shuffled: chance
    y = torch.arange(400) % 2
    x = torch.randn(400, 1, 4, 4, generator=gen) + 2.0 * y[:, None, None, None]
    easy = K.trivial_classifier(x[:300], y[:300], x[300:], y[300:])
    assert easy["test_accuracy"] > 0.95 and easy["test_auc"] > 0.99
    shuffled = y[torch.randperm(400, generator=gen)]
    hard = K.trivial_classifier(x[:300], shuffled[:300], x[300:], shuffled[300:])
    assert hard["test_auc"] < 0.7
    # foreground brighter than background: a per-pixel model finds it
    fg = torch.rand(20, 16, 16, generator=gen) > 0.7
    img = (fg.float() + 0.3 * torch.randn(20, 16, 16, generator=gen))[:, None]
    seg = K.trivial_segmenter(img[:15], fg[:15], img[15:], fg[15:])
    assert seg["test_dice"] > 0.9


def test_the_runs_auc_and_balanced_accuracy_are_the_rank_and_recall_definitions():
    import numpy as np
    from scipy.stats import rankdata

    from prunedyn.tasks.scoring import balanced_accuracy, roc_auc

    rng = np.random.default_rng(0)
    scores, pos = np.round(rng.random(300), 1), rng.random(300) > 0.6  # many ties
    ranks = rankdata(scores)
    mann_whitney = (ranks[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum())
    assert roc_auc(scores, pos) == pytest.approx(mann_whitney, rel=1e-12)
    assert np.isnan(roc_auc(scores, np.ones(300, bool)))
    pred, y = rng.integers(0, 4, 200), rng.integers(0, 3, 200)  # class 3 predicted, never true
    assert balanced_accuracy(pred, y, 4) == pytest.approx(np.mean([(pred[y == k] == k).mean() for k in range(3)]))
