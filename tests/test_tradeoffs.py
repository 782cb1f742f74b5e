"""Trade-off analysis (prunedyn.book.tradeoffs) and its figures: synthetic tables with known answers,
and the loader on a tiny real sweep, complete and partial."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from prunedyn.book import tradeoffs as T
from prunedyn.book import fronts as FR
from prunedyn.book import tradeoff_plots as P
from prunedyn.run.sweeps import load_spec, run_sweep


def synthetic_runs():
    """Two SWP settings, one baseline and dense, 3 seeds each, with known numbers."""
    rows = []
    acc = {"dense": [0.97, 0.96, 0.98], "a": [0.95, 0.94, 0.96], "b": [0.90, 0.92, 0.91], "r": [0.93, 0.93, 0.93]}
    alive = {"dense": [400, 400, 400], "a": [200, 180, 220], "b": [100, 100, 100], "r": [400, 400, 399]}
    keys = {
        "dense": {"pruner.kind": "none", "regularizer.kind": "none", "regularizer.lam": 0.0, "pruner.sigma": np.nan},
        "a": {"pruner.kind": np.nan, "regularizer.kind": "l2", "regularizer.lam": 0.005, "pruner.sigma": 0.003},
        "b": {"pruner.kind": np.nan, "regularizer.kind": "l2", "regularizer.lam": 0.01, "pruner.sigma": 0.003},
        "r": {"pruner.kind": "random", "regularizer.kind": "none", "regularizer.lam": 0.0, "pruner.sigma": np.nan},
    }
    label = {"dense": np.nan, "a": np.nan, "b": np.nan, "r": "random"}
    for name in ("dense", "a", "b", "r"):
        for seed in range(3):
            rows.append({
                "label": label[name], **keys[name], "seed": seed, "run": f"{name}{seed}",
                "test_accuracy": acc[name][seed], "weight_sparsity": 0.0 if name == "dense" else 0.9,
                "nodes_total": 400, "nodes_alive": alive[name][seed], "dead_node_fraction": 1 - alive[name][seed] / 400,
                "params_dense": 1000, "params_compact": 1000 * alive[name][seed] // 400,
                "flops_dense": 2000, "flops_compact": 2000 * alive[name][seed] // 400,
            })
    return T.tidy(pd.DataFrame(rows))


def test_tidy_methods_settings_and_derived_columns():
    t = synthetic_runs()
    assert list(dict.fromkeys(t["method"])) == ["dense", "swp+l2", "random"]
    assert set(t["setting"]) == {"dense", "swp+l2, lam=0.005", "swp+l2, lam=0.01", "random"}
    a = t[t["run"] == "a1"].iloc[0]
    assert a["nodes_removed"] == pytest.approx(0.55) and a["nodes_removed_count"] == 220
    assert a["param_ratio"] == pytest.approx(1000 / 450) and a["flop_ratio"] == pytest.approx(2000 / 900)


def test_aggregate_mean_std_n():
    agg = T.aggregate(synthetic_runs()).set_index("setting")
    r = agg.loc["swp+l2, lam=0.005"]
    assert r["test_accuracy_mean"] == pytest.approx(0.95)
    assert r["test_accuracy_std"] == pytest.approx(0.01)  # sample std (ddof=1) of .95, .94, .96
    assert r["nodes_removed_mean"] == pytest.approx(0.5)
    assert r["nodes_removed_count_std"] == pytest.approx(20.0)
    assert r["n"] == 3 and r["seeds"] == "0,1,2" and r["method"] == "swp+l2"
    assert agg.loc["random", "nodes_removed_count_mean"] == pytest.approx(1 / 3)
    assert list(agg.index) == ["dense", "swp+l2, lam=0.005", "swp+l2, lam=0.01", "random"]


def test_pareto_front_on_known_points():
    df = pd.DataFrame({"x": [0.0, 0.5, 0.5, 0.75, 0.2, 0.75, np.nan], "y": [0.97, 0.95, 0.90, 0.91, 0.93, 0.91, 0.99]})
    on = T.pareto_front(df, "x", "y")
    # (0.5, .90) is dominated by (0.5, .95); (0.2, .93) by (0.5, .95); both (0.75, .91) duplicates stay; NaN never
    assert on.tolist() == [True, True, False, True, False, True, False]
    # minimising x instead: only the most accurate point with the smallest x survives
    assert T.pareto_front(df, "x", "y", maximize_x=False).tolist() == [True, False, False, False, False, False, False]


def test_best_setting_and_paired_gap():
    t = synthetic_runs()
    agg = T.aggregate(t)
    best = T.best_setting(agg, 0.5)
    assert best["setting"] == "swp+l2, lam=0.005"  # removes exactly 50% on average, more accurate than lam=0.01
    assert T.best_setting(agg, 0.7)["setting"] == "swp+l2, lam=0.01"
    assert T.best_setting(agg, 0.8) is None
    gap = T.gap_to_dense(t, best["setting"])
    assert gap["n"] == 3
    assert gap["per_seed"].tolist() == pytest.approx([0.02, 0.02, 0.02])
    assert gap["mean"] == pytest.approx(0.02) and gap["std"] == pytest.approx(0.0, abs=1e-12)
    gap_b = T.gap_to_dense(t, "swp+l2, lam=0.01")
    assert gap_b["per_seed"].tolist() == pytest.approx([0.07, 0.04, 0.07])
    assert gap_b["std"] == pytest.approx(np.std([0.07, 0.04, 0.07], ddof=1))


def test_curves_and_node_table():
    t = synthetic_runs()
    c = T.curves(t, methods=["random", "swp+l2"])
    assert list(c["method"]) == ["random", "swp+l2", "swp+l2"]
    nodes = T.node_removal_table(t).set_index("setting")
    assert not nodes.loc["random", "removes_nodes"] and nodes.loc["swp+l2, lam=0.01", "removes_nodes"]
    assert nodes.loc["swp+l2, lam=0.01", "nodes_removed"] == pytest.approx(300)


def test_total_weight_sparsity():
    n = T.mlp_weights([784, 300, 100, 10])
    assert n == 266200
    assert T.total_weight_sparsity(13310, n) == pytest.approx(0.95)


def test_figures_have_expected_axes():
    t = synthetic_runs()
    agg = T.aggregate(t)
    fig = P.plot_phase(agg, "nodes_removed", methods=["swp+l2"])
    assert isinstance(fig, Figure)
    heat = fig.axes[0]
    assert heat.get_title() == "swp+l2" and len(heat.images) == 1
    assert heat.images[0].get_array().shape == (2, 1)  # two lambdas x one sigma
    assert [tk.get_text() for tk in heat.get_yticklabels()] == ["0.005", "0.01"]
    assert any(txt.get_text().startswith("50%") for txt in heat.texts)
    d = agg[agg["setting"] == "dense"].iloc[0]
    fig = P.plot_nodes_vs_accuracy(agg, dense=(d["test_accuracy_mean"], d["test_accuracy_std"]), highlight="swp+l2, lam=0.005")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "hidden nodes removed" and ax.get_ylabel() == "test accuracy"
    assert "Pareto front" in [h.get_label() for h in ax.get_legend().legend_handles]
    fig = P.plot_sparsity_curves(T.curves(t), dense=(0.97, 0.01), scale="linear")
    labels = [x.get_text() for x in fig.axes[0].get_legend().get_texts()]
    assert "swp+l2" in labels and "random" in labels and "dense" not in labels
    speed = pd.DataFrame({"version": ["dense", "compact"] * 2, "batch": [1, 1, 256, 256], "ms": [1.0, 0.5, 2.0, 0.8],
                          "speedup": [1.0, 2.0, 1.0, 2.5], "flop_ratio": [1.0, 2.5, 1.0, 2.5]})
    fig = P.plot_speed(speed)
    assert [a.get_title() for a in fig.axes] == ["batch 1", "batch 256"]
    assert len(fig.axes[0].patches) == 2


SPEC = """
name: tiny
base: mlp-mnist
set: [data.source=embedded, data.train_size=500, data.test_size=200, epochs=1, "model.hidden=[16,8]"]
grid:
  - {regularizer.kind: [l2], regularizer.lam: [0.01], pruner.sigma: [0.01, 0.05]}
  - {label: [random], pruner.kind: [random], regularizer.kind: [none], pruner.sparsity: [0.5]}
runs:
  - {label: dense, pruner.kind: none, regularizer.kind: none, regularizer.lam: 0}
seeds: [0, 1]
"""


@pytest.mark.slow
def test_loader_on_a_tiny_real_sweep_complete_and_partial(tmp_path):
    (tmp_path / "spec.yaml").write_text(SPEC)
    out = tmp_path / "sweep"
    table = run_sweep(load_spec(tmp_path / "spec.yaml"), out, workers=1, progress=False)
    loaded = T.load_table(out)
    assert len(loaded) == 8 and list(loaded["run"]) == list(table["run"])
    assert set(loaded["method"]) == {"swp+l2", "random", "dense"}
    assert loaded["test_accuracy"].tolist() == pytest.approx(table["test_accuracy"].tolist())
    # the recorded CSV gives the same tidy table as the folder
    from_csv = T.load_table(out / "summary.csv")
    assert from_csv["setting"].tolist() == loaded["setting"].tolist()
    # a sweep still running: no summary.csv yet, one run unfinished -> rebuilt from the run folders
    unfinished = table["run"].iloc[3]
    saved = (out / unfinished / "summary.json").read_text()
    (out / unfinished / "summary.json").unlink()
    full_csv = (out / "summary.csv").read_text()
    (out / "summary.csv").unlink()
    partial = T.load_table(out)
    assert len(partial) == 7 and unfinished not in set(partial["run"])
    assert list(partial["run"]) == [r for r in table["run"] if r != unfinished]
    # a stale summary.csv listing fewer runs than the sweep has is not trusted either
    (out / "summary.csv").write_text("\n".join(full_csv.splitlines()[:3]) + "\n")
    assert len(T.load_table(out)) == 7
    agg = T.aggregate(partial)
    assert agg.set_index("setting").loc["dense", "n"] == 2
    w = T.weight_counts(out / table["run"].iloc[0])
    assert w["weights"] == 784 * 16 + 16 * 8 + 8 * 10
    s = json.loads((out / table["run"].iloc[0] / "summary.json").read_text())
    assert 1 - w["nonzero"] / w["weights"] == pytest.approx(s["weight_sparsity"])
    assert T.sweep_seconds(out)["runs"] == 8
    layers = T.load_layers(out, runs=list(table["run"]))
    assert len(layers) == 16 and set(layers["layer"]) == {"net.fc1", "net.fc2"}
    assert (layers["removed"] == layers["nodes"] - layers["alive"]).all()
    layers.drop(columns="removed").to_csv(tmp_path / "layers.csv", index=False)
    assert T.load_layers(tmp_path / "layers.csv")["removed"].tolist() == layers["removed"].tolist()
    with pytest.raises(FileNotFoundError):
        T.load_table(tmp_path / "nothing")
    # what the book keeps of a sweep: summary with timing, every epoch, first/last histograms
    (out / unfinished / "summary.json").write_text(saved)
    rec = T.record_sweep(out, tmp_path / "rec", "tiny", node_runs=[table["run"].iloc[0]])
    summary = pd.read_csv(rec["summary"])
    assert len(summary) == 8 and summary["device"].eq("cpu").all() and (summary["train_seconds"] > 0).all()
    metrics = pd.read_csv(rec["metrics"])
    assert len(metrics) == 8 * 2 and set(metrics["epoch"]) == {0, 1}
    hist = pd.read_csv(rec["hist"])
    assert set(hist["epoch"]) == {0, 1} and hist.groupby(["run", "epoch", "layer"])["count"].sum().nunique() == 3
    nodes = pd.read_csv(rec["nodes"])
    assert set(nodes["run"]) == {table["run"].iloc[0]} and set(nodes["epoch"]) == {1} and len(nodes) == 16 + 8
    assert (summary["weights"] == 784 * 16 + 16 * 8 + 8 * 10).all()
    assert (1 - summary["nonzero_weights"] / summary["weights"]).to_numpy() == pytest.approx(summary["weight_sparsity"].to_numpy())
    only = T.record_sweep(out, tmp_path / "rec2", "tiny", parts=("layers",))
    assert set(only) == {"summary", "layers"}
    with pytest.raises(ValueError, match="'histo'.*allowed: metrics, layers, hist, nodes"):
        T.record_sweep(out, tmp_path / "rec3", "tiny", parts=("histo",))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "sweep.yaml").write_text((out / "sweep.yaml").read_text())
    with pytest.raises(ValueError, match="has no finished run to record"):
        T.record_sweep(empty, tmp_path / "rec4", "tiny")
    assert not (tmp_path / "rec4").exists()  # nothing written


def test_layer_removal_means_per_setting_and_layer():
    t = synthetic_runs()
    rows = []
    for run, alive1, ind in (("a0", 100, 150), ("a1", 120, 140), ("dense0", 300, 0)):
        rows.append({"run": run, "layer": "net.fc1", "nodes": 300, "alive": alive1, "in_dead": ind, "out_dead": 300 - alive1,
                     "both_dead": ind - (alive1 - 100), "weight_sparsity": 0.9})
        rows.append({"run": run, "layer": "net.fc2", "nodes": 100, "alive": 100, "in_dead": 0, "out_dead": 0, "both_dead": 0,
                     "weight_sparsity": 0.5})
    layers = pd.DataFrame(rows)
    layers["removed"] = layers["nodes"] - layers["alive"]
    w = T.layer_removal(t, layers).set_index("setting")
    assert list(w.index) == ["dense", "swp+l2, lam=0.005"]
    assert w.loc["swp+l2, lam=0.005", "fc1_removed"] == pytest.approx(190)
    assert w.loc["swp+l2, lam=0.005", "fc1_in_dead"] == pytest.approx(145)
    assert w.loc["dense", "fc2_removed"] == 0
    assert list(w.columns[:4]) == ["fc1_removed", "fc1_in_dead", "fc1_out_dead", "fc1_weight_sparsity"]


def test_fronts_on_the_validation_split_choose_and_compare_by_known_numbers():
    t = synthetic_runs()
    # validation scores: the test scores shifted, so that selection can be told from the test set
    t["val_accuracy"] = t["test_accuracy"] + np.where(t["setting"].str.contains("0.01"), 0.03, 0.0)
    with pytest.raises(KeyError, match="val_accuracy"):
        FR.paired_front(t.drop(columns="val_accuracy"))
    f = FR.paired_front(t).set_index("setting")
    a, b = "swp+l2, lam=0.005", "swp+l2, lam=0.01"
    # paired gaps dense - setting per seed: a (0.02, 0.02, 0.02), b on validation (0.04, 0.01, 0.04)
    assert f.loc[a, "gap_mean"] == pytest.approx(0.02) and f.loc[a, "gap_std"] == pytest.approx(0.0, abs=1e-12)
    assert f.loc[b, "gap_mean"] == pytest.approx(0.03) and f.loc[b, "share_mean"] == pytest.approx(0.75)
    assert f.loc[b, "gap_se"] == pytest.approx(np.std([0.04, 0.01, 0.04], ddof=1) / math.sqrt(3))
    assert "dense" not in f.index and f.loc[a, "n"] == 3
    front = FR.paired_front(t)
    # the most nodes within the tolerance on validation: a within 2.5 points, b (more nodes) within 3.5
    chosen = FR.choose_within(front, 0.025).set_index("method")
    assert chosen.loc["swp+l2", "setting"] == a  # b's validation gap is 0.03 > 0.025
    assert FR.choose_within(front, 0.035).set_index("method").loc["swp+l2", "setting"] == b
    # gap_at: linear between the dense origin and the method's points, nothing beyond its largest share
    g, se = FR.gap_at(front, 0.5, "swp+l2")
    assert g == pytest.approx(0.02) and se == pytest.approx(0.0, abs=1e-12)
    g, _ = FR.gap_at(front, 0.25, "swp+l2")
    assert g == pytest.approx(0.01)
    assert math.isnan(FR.gap_at(front, 0.9, "swp+l2")[0])
    # a point beaten on both axes leaves the envelope: add a worse setting at a smaller share
    worse = pd.DataFrame([{"method": "swp+l2", "setting": "w", "share_mean": 0.4, "gap_mean": 0.05, "gap_se": 0.0}])
    assert FR.gap_at(pd.concat([front, worse]), 0.4, "swp+l2")[0] == pytest.approx(0.016)


def test_headline_share_is_the_largest_share_within_the_measured_tolerance():
    front = pd.DataFrame([
        {"method": "m", "setting": "m1", "share_mean": 0.3, "gap_mean": 0.010, "gap_se": 0.001},
        {"method": "m", "setting": "m2", "share_mean": 0.6, "gap_mean": 0.030, "gap_se": 0.002},
        {"method": "m", "setting": "m3", "share_mean": 0.9, "gap_mean": 0.050, "gap_se": 0.001},
        {"method": "b", "setting": "b1", "share_mean": 0.6, "gap_mean": 0.020, "gap_se": 0.004},
        {"method": "b", "setting": "b2", "share_mean": 0.8, "gap_mean": 0.040, "gap_se": 0.000},
    ])
    h = FR.headline_share(front, "m", ["b"])
    # m1: baseline at 0.3 is 0.010 (se 0.002) -> tol 0.010 + 2 sqrt(0.001^2 + 0.002^2) >= 0.010: within
    # m2: 0.020 + 2 sqrt(0.002^2 + 0.004^2) = 0.02894 < 0.030: not; m3: beyond b's front: no tolerance
    assert h["setting"] == "m1" and h["share_mean"] == 0.3
    assert h["margin"] == pytest.approx(2 * math.sqrt(0.001 ** 2 + 0.002 ** 2))
    assert FR.headline_share(front, "m", ["b"], z=3)["setting"] == "m2"
    none = FR.headline_share(front.assign(gap_mean=front["gap_mean"] + (front["method"] == "m") * 0.05), "m", ["b"])
    assert none["setting"] is None and none["share_mean"] == 0.0
