"""Benchmark scores from gold label sets and predicted probabilities.

The F1 family and the threshold sweep are the project's (emopillars_jax.evaluation),
applied to the columns of the classes a benchmark is scored on. Multi-label benchmarks
(GoEmotions) predict every class whose probability reaches one global threshold swept on
dev, as in the paper. Single-label benchmarks (ISEAR, EmoContext, MELD, IEMOCAP) predict
the most probable of the benchmark's own classes (with a 28-class head: the classes its
labels map to), so no threshold plays a part.
"""
from __future__ import annotations

import numpy as np

from ..errors import EmoPillarsError


def multi_hot(label_sets: list[list[int]], num_classes: int) -> np.ndarray:
    out = np.zeros((len(label_sets), num_classes), dtype=bool)
    for row, ids in enumerate(label_sets):
        out[row, list(ids)] = True
    return out


def scores(gold: np.ndarray, pred: np.ndarray, classes: list[int], names: list[str]) -> dict:
    """macro/micro/weighted F1 and per-class F1 and support over the columns `classes`."""
    from .. import evaluation
    m = evaluation.metrics(gold[:, classes], pred[:, classes], names)
    return {"macro_f1": m["macro_f1"], "micro_f1": m["micro_f1"],
            "weighted_f1": m["weighted_f1"],
            "per_class_f1": {n: m["per_class"][n]["f1"] for n in names},
            "support": {n: m["per_class"][n]["support"] for n in names}}


def emocontext_f1(gold_sets: list[list[int]], pred_sets: list[list[int]],
                  class_names: list[str]) -> float:
    """The official SemEval-2019 Task 3 score: micro-F1 over angry, sad and happy only.

    Label ids index `class_names` (the head's classes); with the 28-class head the three
    classes are the ones EmoContext's angry/sad/happy map to.
    """
    from ..taxonomy import BENCHMARK_LABEL_MAPS
    mapping = BENCHMARK_LABEL_MAPS["emocontext"]
    wanted = [mapping[n] if mapping[n] in class_names else n for n in ("angry", "sad", "happy")]
    missing = [w for w in wanted if w not in class_names]
    if missing:
        raise EmoPillarsError(f"EmoContext F1: classes {missing} are not in the head's classes")
    ids = [class_names.index(w) for w in wanted]
    n = len(class_names)
    return scores(multi_hot(gold_sets, n), multi_hot(pred_sets, n), ids, wanted)["micro_f1"]


def check_probs(probs, n: int, num_classes: int, what: str = "probabilities") -> np.ndarray:
    probs = np.asarray(probs, dtype=float)
    if probs.shape != (n, num_classes):
        raise EmoPillarsError(f"{what}: expected shape ({n}, {num_classes}), got {probs.shape}")
    return probs


def argmax_predictions(probs: np.ndarray, candidates: list[int]) -> np.ndarray:
    """One class per row: the most probable among `candidates` (column indices)."""
    pred = np.zeros(probs.shape, dtype=bool)
    best = np.asarray(candidates)[probs[:, candidates].argmax(1)]
    pred[np.arange(len(probs)), best] = True
    return pred


def em_prior_adjust(probs: np.ndarray, train_priors: np.ndarray, *, max_iter: int = 1000,
                    tol: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """Posteriors adjusted to the class priors of an unlabelled set, and those priors.

    The EM procedure of Saerens, Latinne & Decaestecker (2002, "Adjusting the outputs of a
    classifier to new a priori probabilities"): starting from the training priors,
    alternately reweight each row by new/train prior ratios and re-estimate the priors as
    the mean adjusted posterior. It uses no gold labels of the set it adjusts. `probs` are
    [N, K] scores over one single-label task's K classes (renormalised per row here)."""
    train_priors = np.asarray(train_priors, dtype=float)
    if train_priors.shape != (probs.shape[1],) or (train_priors <= 0).any():
        raise EmoPillarsError(f"prior adjustment: expected {probs.shape[1]} positive training "
                              f"priors, got {train_priors.tolist()}")
    base = np.clip(probs, 1e-12, None)
    base = base / base.sum(1, keepdims=True)
    train = train_priors / train_priors.sum()
    priors, adjusted = train, base
    for _ in range(max_iter):
        adjusted = base * (priors / train)
        adjusted /= adjusted.sum(1, keepdims=True)
        new = adjusted.mean(0)
        done = np.abs(new - priors).max() < tol
        priors = new
        if done:
            break
    return adjusted, priors


def class_logits(probs: np.ndarray) -> np.ndarray:
    """Logits behind sigmoid probabilities (clipped, so saved float32 0s and 1s stay finite)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def fit_calibration(logits: np.ndarray, gold: np.ndarray, method: str) -> dict:
    """Posterior calibration on held-out data from the training distribution.

    Minimises the negative log-likelihood of softmax(logits / T + b) over one single-label
    task's K classes (`gold`: the class index of each row). "temperature" fits T alone,
    "bcts" also a bias per class (bias-corrected temperature scaling; Alexandari et al.
    2020 found it with EM the strongest label-shift adaptation). EM needs calibrated
    posteriors: fine-tuned encoders are over-confident, which makes it over-correct.
    """
    from scipy.optimize import minimize
    z, gold = np.asarray(logits, dtype=np.float64), np.asarray(gold)
    n, k = z.shape
    if method not in ("temperature", "bcts"):
        raise EmoPillarsError(f"calibration {method!r}: expected temperature or bcts")
    if n == 0 or len(gold) != n or gold.min() < 0 or gold.max() >= k:
        raise EmoPillarsError(f"calibration: expected a class index in 0..{k - 1} for each of "
                              f"{n} held-out rows")
    rows = np.arange(n)

    def nll(theta):   # theta = [log T, biases...]; value and gradient
        inv_t = np.exp(-theta[0])
        bias = theta[1:] if method == "bcts" else np.zeros(k)
        p = softmax(z * inv_t + bias)
        loss = -np.log(p[rows, gold] + 1e-300).mean()
        d = p.copy()
        d[rows, gold] -= 1
        d /= n    # d loss / d (z * inv_t + bias)
        grad_log_t = -(d * z * inv_t).sum()
        return loss, np.concatenate([[grad_log_t], d.sum(0)] if method == "bcts"
                                    else [[grad_log_t]])

    theta0 = np.zeros(1 + (k if method == "bcts" else 0))
    res = minimize(nll, theta0, jac=True, method="L-BFGS-B")
    bias = res.x[1:] if method == "bcts" else np.zeros(k)
    bias = bias - bias.mean()    # only differences between classes matter
    return {"method": method, "temperature": float(np.exp(res.x[0])),
            "biases": [float(b) for b in bias], "n": int(n),
            "nll_before": float(nll(np.zeros_like(theta0))[0]), "nll_after": float(res.fun)}


def apply_calibration(logits: np.ndarray, calibration: dict) -> np.ndarray:
    """Calibrated posteriors [N, K] from fit_calibration's parameters."""
    return softmax(np.asarray(logits, dtype=np.float64) / calibration["temperature"]
                   + np.asarray(calibration["biases"]))


def threshold_predictions(probs: np.ndarray, threshold: float) -> np.ndarray:
    return probs >= threshold


def sweep_threshold(gold: np.ndarray, probs: np.ndarray, classes: list[int]) -> tuple[float, float]:
    """The project's global threshold sweep (0.05..0.95), on the columns `classes`."""
    from .. import evaluation
    return evaluation.sweep_global(gold[:, classes], probs[:, classes])
