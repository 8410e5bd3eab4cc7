"""Metrics, threshold selection on dev, and the report files."""
import json

import numpy as np
import pytest

from emopillars_jax import evaluation as E


def test_f1_family_by_hand():
    gold = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], bool)
    pred = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 1], [0, 0, 0]], bool)
    m = E.metrics(gold, pred, ["a", "b", "c"])
    # a: tp1 fn1 -> P1 R.5 F1 2/3; b: tp2 fp1 -> P2/3 R1 F1 .8; c: no gold, fp1 -> F1 0
    assert m["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 0.5,
                                                "f1": 2 / 3, "support": 2})
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.8)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)    # classes with gold only
    assert m["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert m["weighted_f1"] == pytest.approx((2 / 3 * 2 + 0.8 * 2) / 4)


def test_global_sweep_finds_the_separating_threshold_and_test_reuses_it():
    rng = np.random.default_rng(0)
    gold = rng.random((200, 4)) < 0.3
    # positives score around 0.3, negatives around 0.1: 0.5 misses everything
    probs = np.where(gold, 0.3, 0.1) + rng.normal(0, 0.02, gold.shape)
    t, score = E.sweep_global(gold, probs)
    assert 0.15 <= t <= 0.25 and score == pytest.approx(1.0)
    assert E.metrics(gold, E.predict(probs, 0.5))["macro_f1"] == 0.0
    thr = E.choose_thresholds(gold, probs)
    test = E.evaluate_split(gold.astype(np.float32), probs, thr)
    assert test["thresholds"]["global"] == t and test["macro_f1"] == pytest.approx(1.0)
    fixed = E.choose_thresholds(gold, probs, default=0.5, sweep=False)
    assert fixed["global"] == 0.5


def test_sweep_ties_on_macro_f1_are_broken_against_false_positives():
    # dev holds one class only: every threshold up to 0.6 gives it macro-F1 1.0, but low
    # thresholds also fire the absent class, which micro-F1 counts
    gold = np.array([[1, 0]] * 4, bool)
    probs = np.array([[0.7, 0.3]] * 4)
    t, score = E.sweep_global(gold, probs)
    assert score == 1.0 and 0.3 < t <= 0.7


def test_per_class_thresholds_differ_when_classes_are_calibrated_differently():
    rng = np.random.default_rng(1)
    gold = rng.random((300, 2)) < 0.4
    probs = np.stack([np.where(gold[:, 0], 0.8, 0.6), np.where(gold[:, 1], 0.3, 0.1)], 1)
    probs = probs + rng.normal(0, 0.02, probs.shape)
    thr = E.choose_thresholds(gold, probs, per_class=True)
    a, b = thr["per_class"]
    assert 0.6 < a < 0.8 and 0.1 < b < 0.3
    assert E.evaluate_split(gold.astype(float), probs, thr)["macro_f1"] == pytest.approx(1.0)
    assert E.evaluate_split(gold.astype(float), probs, {"global": thr["global"],
                                                        "per_class": None})["macro_f1"] < 1.0


def test_a_split_carries_the_every_label_reference():
    # two examples sharing the same two gold classes: predicting every class scores 1.0,
    # which is why a perfect score on such a split means nothing
    gold = np.zeros((2, 28), np.float32)
    gold[:, [3, 9]] = 1
    low = E.evaluate_split(gold, np.full((2, 28), 0.2), {"global": 0.1, "per_class": None})
    assert low["macro_f1"] == 1.0 and low["every_label_macro_f1"] == 1.0
    assert low["labels_per_example"] == 28.0
    # a discriminating model reaches the same score with two labels each
    probs = np.where(gold > 0, 0.9, 0.1)
    sharp = E.evaluate_split(gold, probs, {"global": 0.5, "per_class": None})
    assert sharp["macro_f1"] == 1.0 and sharp["labels_per_example"] == 2.0
    # on a mixed split the reference is well below a good model
    gold = np.eye(28, dtype=np.float32)
    assert E.evaluate_split(gold, gold, {"global": 0.5, "per_class": None})[
        "every_label_macro_f1"] == pytest.approx(2 / 29)     # per class P 1/28, R 1


def test_report_files(tmp_path):
    rng = np.random.default_rng(2)
    gold = rng.random((50, 28)) < 0.1
    probs = rng.random((50, 28))
    thr = E.choose_thresholds(gold, probs)
    results = {"dev": E.evaluate_split(gold, probs, thr), "test": E.evaluate_split(gold, probs, thr)}
    history = [{"step": i, "loss": 1.0 / i} for i in range(1, 20)] + \
        [{"step": 10, "dev_macro_f1": 0.3}, {"step": 19, "dev_macro_f1": 0.4}]
    paths = E.write_report(tmp_path, results, history)
    assert json.loads(paths["json"].read_text())["test"]["macro_f1"] == results["test"]["macro_f1"]
    md = paths["markdown"].read_text()
    assert "| admiration |" in md and "| test |" in md and f"{thr['global']:.2f}" in md
    test = results["test"]
    assert f"| {test['labels_per_example']:.2f} | {test['every_label_macro_f1']:.4f} |" in md
    for key in ("per_class_png", "curves_png"):
        assert paths[key].read_bytes()[:4] == b"\x89PNG"
