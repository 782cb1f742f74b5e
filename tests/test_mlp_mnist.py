"""The headline result of the mlp-mnist preset, run in full on the embedded data.

Issue: `prunedyn run mlp-mnist` kills at least 40% of hidden nodes with test
accuracy within 1.5 points of the same run without pruning and regularization.
"""
import pytest

from prunedyn.run.config import load_config
from prunedyn.run.experiments import run

pytestmark = pytest.mark.slow


def test_preset_kills_nodes_and_keeps_accuracy(tmp_path):
    swp = run(load_config("mlp-mnist", ["data.source=embedded"]), tmp_path / "swp", progress=False)
    dense = run(
        load_config("mlp-mnist", ["data.source=embedded", "pruner.kind=none", "regularizer.kind=none"]),
        tmp_path / "dense",
        progress=False,
    )
    assert swp["dead_node_fraction"] >= 0.40
    assert dense["dead_node_fraction"] == 0.0
    assert dense["test_accuracy"] - swp["test_accuracy"] <= 0.015
    assert swp["params_compact"] < 0.6 * swp["params_dense"]
    assert swp["compact_max_abs_diff"] <= 1e-5
    assert swp["epochs_completed"] == 40
