"""prunedyn.book.baselines: paired gaps per method and the claim-4 staged table."""
import pandas as pd
import pytest

from prunedyn.book import baselines as B


def runs():
    rows = []
    for seed, (dense, l2, slim, more, staged) in enumerate([(0.80, 0.75, 0.79, 0.81, 0.78),
                                                            (0.82, 0.78, 0.83, 0.83, 0.80),
                                                            (0.78, 0.76, 0.78, 0.80, 0.79)]):
        common = {"seed": seed, "epochs_completed": 10, "weight_sparsity": 0.0}
        rows += [
            {**common, "label": "dense", "test_accuracy": dense, "dead_node_fraction": 0.0, "nodes_alive": 100,
             "weights": 1000, "nonzero_weights": 1000},
            {**common, "label": "swp-l2", "test_accuracy": l2, "dead_node_fraction": 0.3 + 0.01 * seed,
             "weight_sparsity": 0.9, "nodes_alive": 70, "weights": 1000, "nonzero_weights": 100},
            {**common, "label": "slimming", "test_accuracy": slim, "dead_node_fraction": 0.1, "nodes_alive": 90,
             "weights": 1000, "nonzero_weights": 1000},
            {**common, "label": "dense-more", "epochs_completed": 5, "test_accuracy": more, "dead_node_fraction": 0.0,
             "nodes_alive": 100, "weights": 1000, "nonzero_weights": 1000},
            {**common, "label": "compact-then-magnitude", "epochs_completed": 5, "test_accuracy": staged,
             "dead_node_fraction": 0.0, "weight_sparsity": 0.95, "nodes_alive": 70, "weights": 500, "nonzero_weights": 50},
        ]
    return pd.DataFrame(rows)


def test_labels_with_a_lambda_belong_to_their_method():
    assert B.method_of("slimming@0.0057") == "slimming" and B.method_of("swp-l2") == "swp-l2"
    assert B.describe("slimming@0.0057") == B.METHODS["slimming"] + ", lambda 0.0057"
    t = runs()
    t = pd.concat([t, t[t["label"] == "slimming"].assign(label="slimming@0.1")], ignore_index=True)
    assert list(B.method_table(t, "test_accuracy").index) == ["dense", "swp-l2", "slimming", "slimming@0.1"]


def test_method_table_pairs_gaps_by_seed_and_gives_the_verdict():
    t = B.method_table(runs(), "test_accuracy", labels=["dense", "swp-l2", "slimming"])
    assert list(t.index) == ["dense", "swp-l2", "slimming"]
    assert t.loc["swp-l2", "gap_mean"] == pytest.approx((0.05 + 0.04 + 0.02) / 3)
    assert t.loc["swp-l2", "gap_min"] == pytest.approx(0.02)
    assert t.loc["swp-l2", "verdict"] == "loses"  # every seed below dense
    assert t.loc["slimming", "verdict"] == "no clear difference"  # signs differ: +0.01, -0.01, 0
    assert t.loc["dense", "gap_mean"] == 0 and t.loc["swp-l2", "dead_mean"] == pytest.approx(0.31)
    assert t.loc["swp-l2", "seeds"] == 3 and t.loc["swp-l2", "method"] == B.METHODS["swp-l2"]
    with pytest.raises(KeyError, match="'nope'"):
        B.method_table(runs(), "test_accuracy", labels=["nope"])
    with pytest.raises(KeyError, match="test_dice"):
        B.method_table(runs(), "test_dice")


def test_staged_table_counts_sparsity_against_the_original_weights_and_pairs_by_total_epochs():
    st = B.staged_table(runs(), "test_accuracy")
    assert len(st) == 6 and set(st["arm"]) == {"swp-l2", "compact-then-magnitude"}
    s0 = st[st["seed"] == 0].set_index("arm")
    assert s0.loc["swp-l2", "total_sparsity"] == pytest.approx(0.9)
    assert s0.loc["compact-then-magnitude", "total_sparsity"] == pytest.approx(0.95)  # 50 of the original 1000
    assert s0.loc["compact-then-magnitude", "epochs"] == 15 and s0.loc["swp-l2", "epochs"] == 10
    assert s0.loc["swp-l2", "gap"] == pytest.approx(0.05)  # against dense, 10 epochs
    assert s0.loc["compact-then-magnitude", "gap"] == pytest.approx(0.03)  # against dense-more, 15 epochs
    summary = B.staged_summary(st, "test_accuracy")
    assert summary.loc["compact-then-magnitude", "gap_mean"] == pytest.approx((0.03 + 0.03 + 0.01) / 3)
    assert summary.loc["compact-then-magnitude", "seeds"] == 3
    with pytest.raises(KeyError, match="nonzero_weights"):
        B.staged_table(runs().drop(columns="nonzero_weights"), "test_accuracy")


def test_staged_table_adds_the_matched_sparsity_control_against_the_same_epochs():
    """The dense network magnitude-pruned to the staged arm's sparsity and fine-tuned as long: its
    epochs count from the dense run, its gap is against the dense network trained as long."""
    from prunedyn.book.tradeoff_plots import plot_staged

    t = runs()
    control = t[t["label"] == "dense-more"].assign(label="dense-magnitude", nonzero_weights=50,
                                                   test_accuracy=t.loc[t["label"] == "dense-more", "test_accuracy"] - 0.1)
    st = B.staged_table(pd.concat([t, control], ignore_index=True), "test_accuracy", matched="dense-magnitude")
    m = st[st["arm"] == "dense-magnitude"].set_index("seed")
    assert len(m) == 3 and (m["epochs"] == 15).all() and m["gap"].tolist() == pytest.approx([0.1] * 3)
    assert m.loc[0, "total_sparsity"] == pytest.approx(0.95)
    fig = plot_staged(st, "test_accuracy")
    assert len(fig.axes[0].get_legend().get_texts()) == 3 and len(fig.axes[0].lines) == 1 + 3  # seeds' lines: 2 arms
    with pytest.raises(KeyError, match="dense-magnitude"):
        B.staged_table(t, "test_accuracy", matched="dense-magnitude")


def test_staged_table_reads_the_dead_share_from_the_named_column():
    t = runs().assign(filter_share=lambda d: d["dead_node_fraction"] / 2)  # e.g. VGG-16's filters only
    st = B.staged_table(t, "test_accuracy", nodes="filter_share")
    src = st[st["arm"] == "swp-l2"].sort_values("seed")
    assert list(src["filter_share"]) == pytest.approx([0.15, 0.155, 0.16]) and "dead_node_fraction" not in st
    with pytest.raises(KeyError, match="filter_share"):
        B.staged_table(runs(), "test_accuracy", nodes="filter_share")


def test_figures_draw_one_marker_group_per_method_and_arm():
    from prunedyn.book.tradeoff_plots import plot_method_costs, plot_staged

    t = runs()
    t = pd.concat([t, t[t["label"] == "slimming"].assign(label="slimming@0.1", dead_node_fraction=0.5)], ignore_index=True)
    fig = plot_method_costs(t, "test_accuracy", ["swp-l2", "slimming", "slimming@0.1"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        f"{B.METHODS['swp-l2']} (3 seeds)", f"{B.METHODS['slimming']} (3 seeds)"]
    slim_curve = [line for line in ax.lines if line.get_label().startswith(B.METHODS["slimming"])][0]
    assert list(slim_curve.get_xdata()) == pytest.approx([0.1, 0.5])  # one method at two lambdas: one curve
    fig = plot_staged(B.staged_table(runs(), "test_accuracy"), "test_accuracy")
    assert len(fig.axes[0].get_legend().get_texts()) == 2 and len(fig.axes[0].lines) == 1 + 3  # zero line + a line per seed


def test_schedule_table_pairs_the_gap_at_each_budget():
    from prunedyn.book.tradeoff_plots import plot_schedule

    rows = []
    for epochs, (dense, l2, dead) in {10: ((0.80, 0.82, 0.78), (0.70, 0.75, 0.72), 0.3), 20: ((0.85, 0.86, 0.84), (0.84, 0.86, 0.85), 0.5)}.items():
        for seed in range(3):
            rows.append({"label": "dense", "seed": seed, "epochs": epochs, "test_accuracy": dense[seed], "dead_node_fraction": 0.0})
            rows.append({"label": "swp-l2", "seed": seed, "epochs": epochs, "test_accuracy": l2[seed], "dead_node_fraction": dead})
    st = B.schedule_table(pd.DataFrame(rows), "test_accuracy")
    assert list(st.index) == [10, 20] and (st["seeds"] == 3).all()
    assert st.loc[10, "gap_mean"] == pytest.approx((0.10 + 0.07 + 0.06) / 3)
    assert st.loc[20, "gap_min"] == pytest.approx(-0.01) and st.loc[20, "dead_mean"] == pytest.approx(0.5)
    assert len(plot_schedule(st, "test_accuracy").axes) == 2
    fig = plot_schedule({"constant sigma": st, "sigma ramp": st.iloc[:1]}, "test_accuracy")
    assert [len(ax.containers) for ax in fig.axes] == [2, 2]  # one errorbar series per arm in each panel
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["constant sigma", "sigma ramp"]
    with pytest.raises(KeyError, match="epochs"):
        B.schedule_table(pd.DataFrame(rows).drop(columns="epochs"), "test_accuracy")
    # an arm run at some budgets only is paired where it ran
    drift = [{"label": "swp-l2-drift", "seed": s, "epochs": 20, "test_accuracy": 0.80, "dead_node_fraction": 0.2} for s in range(3)]
    sd = B.schedule_table(pd.DataFrame(rows + drift), "test_accuracy", pruned="swp-l2-drift")
    assert list(sd.index) == [20] and sd.loc[20, "gap_mean"] == pytest.approx((0.05 + 0.06 + 0.04) / 3)
