"""Benchmark adapters, metrics, the GoEmotions download and the runner (small fixtures)."""
import hashlib
import http.server
import json
import socket
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from emopillars_jax import cli
from emopillars_jax import taxonomy as tx
from emopillars_jax.benchmarks import adapters as A
from emopillars_jax.benchmarks import metrics as M
from emopillars_jax.benchmarks import runner as R
from emopillars_jax.benchmarks.download import RemoteFile, download_goemotions, verify
from emopillars_jax.errors import ConfigError, EmoPillarsError
from emopillars_jax.hub import render_results_table

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ID = tx.LABEL_TO_ID


def write(path: Path, text: str, encoding="utf-8", newline="\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding=encoding, newline=newline) as fh:
        fh.write(text)
    return path


# --- GoEmotions ---------------------------------------------------------------------------
def goemotions_dir(tmp_path: Path) -> Path:
    d = tmp_path / "goemotions"
    write(d / "labels.txt", "\n".join(tx.LABELS))
    write(d / "train.tsv", "I love this so much\t18,17\tid1\nWhat?\t6\tid2\n"
                           "meh, whatever\t27\tid3\nThanks a lot!\t15\tid4\n")
    write(d / "dev.tsv", "So happy for you\t17\tid5\nWhy would you do that\t7,10\tid6\n")
    return d


def test_goemotions_reads_ids_through_labels_file(tmp_path):
    recs = A.read_goemotions(goemotions_dir(tmp_path) / "train.tsv")
    assert [r["id"] for r in recs] == ["id1", "id2", "id3", "id4"]
    assert recs[0]["labels"] == [ID["joy"], ID["love"]]
    assert recs[0]["label_names"] == ["love", "joy"]
    assert recs[2]["labels"] == [tx.NEUTRAL_ID] and "context" not in recs[0]


@pytest.mark.parametrize("row, message", [
    ("only text\n", "expected 3 tab-separated fields"),
    ("text\tjoy\tid9\n", "expected comma-separated integers"),
    ("text\t3,28\tid9\n", "label id 28 out of range 0..27"),
])
def test_goemotions_malformed_row_names_file_and_line(tmp_path, row, message):
    path = write(tmp_path / "bad.tsv", "fine\t1\tid0\n" + row)
    with pytest.raises(EmoPillarsError, match=rf"bad\.tsv:2: .*{message}"):
        A.read_goemotions(path)


def test_goemotions_rejects_a_foreign_labels_file(tmp_path):
    d = goemotions_dir(tmp_path)
    write(d / "labels.txt", "admiration\nhappiness-ish\n")
    with pytest.raises(EmoPillarsError, match=r"labels\.txt:2: 'happiness-ish'"):
        A.read_goemotions(d / "train.tsv")


def test_goemotions_tfds_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)   # import fails
    with pytest.raises(EmoPillarsError, match=r"emopillars\[tfds\]"):
        A.read_goemotions_tfds("validation")


def test_goemotions_tfds_examples_are_converted(monkeypatch):
    # a stand-in for tfds.data_source: the builder's boolean-per-class features
    rows = [{"comment_text": b"yay", **{n: n in ("joy", "excitement") for n in tx.LABELS}},
            {"comment_text": b"ok", **{n: n == "neutral" for n in tx.LABELS}}]
    calls = []
    fake = types.SimpleNamespace(data_source=lambda name, split, data_dir: calls.append(
        (name, split, data_dir)) or rows)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    recs = A.read_goemotions_tfds("train", data_dir="/d")
    assert calls == [("goemotions", "train", "/d")]
    assert recs[0]["text"] == "yay" and recs[0]["labels"] == [ID["excitement"], ID["joy"]]
    assert recs[1]["labels"] == [tx.NEUTRAL_ID]


# --- ISEAR --------------------------------------------------------------------------------
ISEAR_HEADER = "ID|CITY|Field1|Field3|MYKEY|SIT|STATE|\n"


def isear_file(tmp_path: Path, extra: str = "") -> Path:
    rows = ["1|1|joy|4|k1|When I passed my exam \u00e1 with top marks.|1|",
            "1|1|shame|3|k2|I forgot my friend\u2019s birthday.|1|",
            # stray separators and the export's escaped quotes inside the text
            "1|2|guilt|2|k3|I told him \\\"the truth\\\" too late \u00e1|and he left|again.\"|1|",
            "2|1|fear|4|k4|A dog chased me.|1|", "2|1|anger|4|k5|Someone cut in line.|1|",
            "2|2|joy|4|k6|My sister was born.|1|"]
    return write(tmp_path / "isear.csv", ISEAR_HEADER + "\n".join(rows) + "\n" + extra)


def test_isear_parses_stray_separators_from_both_ends(tmp_path):
    recs = A.read_isear(isear_file(tmp_path))
    assert len(recs) == 6
    assert recs[0]["text"] == "When I passed my exam with top marks."
    assert recs[2]["text"] == 'I told him "the truth" too late and he left again.'
    assert recs[2]["id"] == "k3" and recs[2]["label_names"] == ["guilt"]
    assert recs[1]["labels"] == [ID["embarrassment"]] and recs[2]["labels"] == [ID["remorse"]]


def test_isear_native_label_space_indexes_its_own_classes(tmp_path):
    recs = A.read_isear(isear_file(tmp_path), label_space="native")
    names = A.class_names("isear", "native")
    assert len(names) == 7 and [names[r["labels"][0]] for r in recs][:3] == ["joy", "shame",
                                                                            "guilt"]


@pytest.mark.parametrize("row, message", [
    ("3|1|joy|k7|too few fields|\n", r"isear\.csv:8: expected 8 '\|'-separated fields"),
    ("3|1|pride|4|k8|I won.|1|\n", r"isear\.csv:8: unknown isear label 'pride'"),
])
def test_isear_malformed_row_names_file_and_line(tmp_path, row, message):
    with pytest.raises(EmoPillarsError, match=message):
        A.read_isear(isear_file(tmp_path, row))


def test_isear_reads_cp1252_files(tmp_path):
    path = tmp_path / "isear.csv"
    path.write_bytes((ISEAR_HEADER + "1|1|joy|4|k1|A caf\u00e9 visit.|1|\n").encode("cp1252"))
    assert A.read_isear(path)[0]["text"] == "A caf\u00e9 visit."


def test_cv_folds_are_deterministic_stratified_and_disjoint():
    recs = [{"label_names": [c]} for c in "aaaaabbbbbbbbbbccc" * 2]
    folds = A.cv_folds(recs, k=3, seed=1)
    assert folds == A.cv_folds(recs, k=3, seed=1)
    assert folds != A.cv_folds(recs, k=3, seed=2)
    tests = [set(te) for _, te in folds]
    assert set().union(*tests) == set(range(len(recs))) and sum(map(len, tests)) == len(recs)
    for tr, te in folds:
        assert not set(tr) & set(te)
        for c, total in (("a", 10), ("b", 20), ("c", 6)):   # every class spread evenly
            assert sum(recs[i]["label_names"][0] == c for i in te) in (total // 3,
                                                                       -(-total // 3))
    with pytest.raises(EmoPillarsError, match="folds"):
        A.cv_folds(recs[:2], k=3)


# --- EmoContext ---------------------------------------------------------------------------
def emocontext_file(tmp_path: Path, extra: str = "") -> Path:
    text = ("id\tturn1\tturn2\tturn3\tlabel\n0\tHi\tHello\tYou are awful\tangry\n"
            "1\tI lost it\tOh no\tI miss my dog\tsad\n2\tGuess what\tWhat\tI got the job!\thappy\n"
            "3\tok\tfine\tsee you\tothers\n" + extra)
    return write(tmp_path / "dev.txt", text, newline="\r\n")   # the official files use CRLF


def test_emocontext_context_and_utterance(tmp_path):
    recs = A.read_emocontext(emocontext_file(tmp_path))
    assert recs[0] == {"id": "0", "text": "You are awful", "context": "Hi\nHello",
                       "labels": [ID["anger"]], "label_names": ["angry"]}
    assert [r["labels"] for r in recs[1:]] == [[ID["sadness"]], [ID["joy"]], [tx.NEUTRAL_ID]]
    native = A.read_emocontext(emocontext_file(tmp_path), label_space="native")
    assert [A.class_names("emocontext", "native")[r["labels"][0]] for r in native] == \
        ["angry", "sad", "happy", "others"]


def test_emocontext_malformed(tmp_path):
    with pytest.raises(EmoPillarsError, match=r"dev\.txt:6: expected 5 tab-separated fields"):
        A.read_emocontext(emocontext_file(tmp_path, "4\tonly\ttwo turns\tangry\n"))
    with pytest.raises(EmoPillarsError, match=r"dev\.txt:6: unknown emocontext label 'bored'"):
        A.read_emocontext(emocontext_file(tmp_path, "4\ta\tb\tc\tbored\n"))
    bad = write(tmp_path / "x.txt", "id,turn1,turn2,turn3,label\n")
    with pytest.raises(EmoPillarsError, match=r"x\.txt:1: expected the header"):
        A.read_emocontext(bad)


def test_emocontext_metric_ignores_others():
    names = list(tx.LABELS)
    a, s, h, o = ID["anger"], ID["sadness"], ID["joy"], tx.NEUTRAL_ID
    gold = [[a], [s], [h], [o], [o]]
    pred = [[a], [h], [h], [o], [s]]
    # over angry/sad/happy: tp 2 (a, h), fp 2 (h for s, s for o), fn 1 (s) -> 4 / 7
    assert M.emocontext_f1(gold, pred, names) == pytest.approx(4 / 7)
    native = A.class_names("emocontext", "native")   # happy, sad, angry, others
    assert M.emocontext_f1([[2], [3]], [[2], [2]], native) == pytest.approx(2 / 3)


# --- MELD and IEMOCAP ---------------------------------------------------------------------
MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season\n"


def test_meld_fixes_mojibake_and_builds_dialogue_context(tmp_path):
    rows = [f'3,"Oh, he\u00e2\u20ac\u2122s here.",Rachel,surprise,positive,0,1,1',
            "1,Hi there.,Ross,neutral,neutral,0,0,1",
            "2,I can\x92t.,Monica,sadness,negative,1,0,1",
            "4,Get out!,Joey,anger,negative,0,2,1"]
    recs = A.read_meld(write(tmp_path / "dev_sent_emo.csv", MELD_HEADER + "\n".join(rows)),
                       context_turns=1)
    by_id = {r["id"]: r for r in recs}
    assert by_id["0_1"]["text"] == "Oh, he\u2019s here."
    assert by_id["1_0"]["text"] == "I can\u2019t." and by_id["1_0"]["context"] == ""
    assert by_id["0_0"]["context"] == ""
    assert by_id["0_2"]["context"] == "Rachel: Oh, he\u2019s here."   # only 1 turn back
    assert by_id["0_2"]["labels"] == [ID["anger"]] and by_id["0_2"]["speaker"] == "Joey"


def test_meld_malformed(tmp_path):
    with pytest.raises(EmoPillarsError, match=r"dev\.csv:3: column 'Utterance_ID': expected "
                                              r"an integer"):
        A.read_meld(write(tmp_path / "dev.csv", MELD_HEADER + "1,a,R,joy,p,0,0,1\n"
                                                              "2,b,R,joy,p,0,x,1\n"))
    with pytest.raises(EmoPillarsError, match=r"dev2\.csv:1: missing column\(s\) \['Emotion'\]"):
        A.read_meld(write(tmp_path / "dev2.csv", "Utterance,Speaker,Dialogue_ID,Utterance_ID\n"))
    with pytest.raises(EmoPillarsError, match=r"dev3\.csv:2: expected 8 comma-separated"):
        A.read_meld(write(tmp_path / "dev3.csv", MELD_HEADER + "1,a,R,joy\n"))


def test_fix_mojibake_leaves_clean_text_alone():
    assert A.fix_mojibake("caf\u00c3\u00a9 \u00e2\u20ac\u201c ok") == "caf\u00e9 \u2013 ok"
    for clean in ("na\u00efve caf\u00e9", "plain", "\u2019quoted\u2019", "\u00c9cole"):
        assert A.fix_mojibake(clean) == clean


def iemocap_release(tmp_path: Path) -> Path:
    root = tmp_path / "IEMOCAP_full_release"
    for sess, prefix in (("Session1", "Ses01F"), ("Session5", "Ses05M")):
        dlg = f"{prefix}_impro01"
        write(root / sess / "dialog" / "transcriptions" / f"{dlg}.txt",
              f"{dlg}_M000 [010.0000-011.0000]: Are you coming?\n"
              f"{dlg}_F000 [002.0000-004.5000]: Excuse me.\n"
              f"{dlg}_F001 [005.0000-006.0000]: Hello?\n"
              f"{dlg}_MXX0 [012.0000-013.0000]: [LAUGHTER]\n")
        write(root / sess / "dialog" / "EmoEvaluation" / f"{dlg}.txt",
              "% header\n\n"
              f"[2.0000 - 4.5000]\t{dlg}_F000\tneu\t[2.5000, 2.5000, 2.5000]\n"
              "C-E1:\tNeutral;\t()\n\n"
              f"[5.0000 - 6.0000]\t{dlg}_F001\txxx\t[2.0000, 3.0000, 2.0000]\n\n"
              f"[10.0000 - 11.0000]\t{dlg}_M000\tfru\t[2.0000, 3.5000, 3.0000]\n")
    return root


def test_iemocap_release_layout(tmp_path):
    recs = A.read_iemocap(iemocap_release(tmp_path))
    assert [r["id"] for r in recs] == ["Ses01F_impro01_F000", "Ses01F_impro01_M000",
                                       "Ses05M_impro01_F000", "Ses05M_impro01_M000"]
    m = recs[1]
    assert m["labels"] == [ID["annoyance"]] and m["speaker"] == "M" and m["session"] == "Session1"
    # the unlabelled (xxx) turn is left out but still gives context
    assert m["context"] == "F: Excuse me.\nF: Hello?"
    four_way = A.read_iemocap(iemocap_release(tmp_path / "b"), keep_labels=["neu", "hap", "ang",
                                                                            "sad"])
    assert {r["label_names"][0] for r in four_way} == {"neu"}


def test_run_benchmark_iemocap_with_its_shipped_config(tmp_path):
    """configs/finetune_iemocap.yaml (on finetune_meld.yaml): its own head, contextual."""
    calls = []
    out = R.run_benchmark("iemocap", source=iemocap_release(tmp_path), out_dir=tmp_path / "run",
                          train_fn=oracle_train_fn(calls), log=lambda m: None)
    assert [(c.model.num_labels, c.data.mode) for c in calls] == [(9, "contextual")]
    assert out["variants"]["baseline"]["value"] == 1.0


def test_iemocap_missing_label_names_the_transcript_line(tmp_path):
    root = iemocap_release(tmp_path)
    t = root / "Session1" / "dialog" / "transcriptions" / "Ses01F_impro01.txt"
    t.write_text(t.read_text() + "Ses01F_impro01_F009 [020.0000-021.0000]: Bye.\n")
    with pytest.raises(EmoPillarsError, match=r"Ses01F_impro01\.txt:5: utterance "
                                              r"Ses01F_impro01_F009 has no label"):
        A.read_iemocap(root)


def test_iemocap_csv(tmp_path):
    path = write(tmp_path / "iemocap.csv",
                 "dialogue_id,utterance_id,speaker,text,emotion\n"
                 "Ses01F_a,0,F,Hi.,neu\nSes01F_a,1,M,Great!,exc\nSes01F_a,2,F,Hm.,xxx\n"
                 "Ses01F_a,3,M,No!,ang\n")
    recs = A.read_iemocap(path)
    assert [r["label_names"] for r in recs] == [["neu"], ["exc"], ["ang"]]
    assert recs[2]["context"] == "M: Great!\nF: Hm."
    with pytest.raises(EmoPillarsError, match=r"bad\.csv:2: unknown iemocap label 'happy'"):
        A.read_iemocap(write(tmp_path / "bad.csv", "dialogue_id,utterance_id,speaker,text,"
                                                   "emotion\nS,0,F,Hi.,happy\n"))


def test_label_maps_cover_every_benchmark_and_point_into_taxonomy():
    for name in R.BENCHMARKS:
        mapping = tx.BENCHMARK_LABEL_MAPS[name]
        assert set(mapping.values()) <= set(tx.LABELS)
        ids, shown = R.evaluated_classes(name, "taxonomy")
        assert len(ids) == len(set(ids)) == len(shown)
    assert R.evaluated_classes("isear", "taxonomy")[1][5] == "shame (embarrassment)"


# --- metrics ------------------------------------------------------------------------------
def test_scores_threshold_sweep_and_argmax():
    gold = M.multi_hot([[0], [1], [0, 1], []], 3)
    probs = np.array([[0.9, 0.1, 0], [0.2, 0.4, 0], [0.7, 0.35, 0], [0.1, 0.2, 0]])
    s = M.scores(gold, M.threshold_predictions(probs, 0.5), [0, 1], ["a", "b"])
    assert s["per_class_f1"] == {"a": 1.0, "b": 0.0} and s["macro_f1"] == 0.5
    assert s["support"] == {"a": 2, "b": 2}
    t, f1 = M.sweep_threshold(gold, probs, [0, 1])
    assert 0.2 < t <= 0.35 and f1 == 1.0
    pred = M.argmax_predictions(probs, [1, 2])
    assert pred.sum() == 4 and pred[:, 1].all()


def shifted_posteriors(n: int, train_priors, true_priors, seed=0):
    """Labels drawn with `true_priors`, and the posteriors of a classifier calibrated on
    `train_priors` (Gaussian class likelihoods): a pure prior-shift set."""
    rng = np.random.default_rng(seed)
    k = len(train_priors)
    y = rng.choice(k, n, p=true_priors)
    x = np.eye(k)[y] * 2.0 + rng.normal(size=(n, k))
    lik = np.exp(-0.5 * ((x[:, None, :] - 2.0 * np.eye(k)[None]) ** 2).sum(-1))
    post = lik * train_priors
    return y, post / post.sum(1, keepdims=True)


TRAIN_MIX, DEV_MIX = np.array([0.5, 0.17, 0.17, 0.16]), np.array([0.85, 0.05, 0.05, 0.05])


def test_em_prior_adjust_recovers_shifted_priors():
    # a classifier calibrated on train priors (half "others") meets a set with 85% others
    y, post = shifted_posteriors(4000, TRAIN_MIX, DEV_MIX)
    adjusted, priors = M.em_prior_adjust(post, TRAIN_MIX)
    assert np.abs(priors - DEV_MIX).max() < 0.02
    assert np.allclose(adjusted.sum(1), 1.0)
    assert (adjusted.argmax(1) == y).mean() > (post.argmax(1) == y).mean() + 0.02
    with pytest.raises(EmoPillarsError, match="expected 4 positive training priors"):
        M.em_prior_adjust(post, [0.5, 0.5])


def test_score_prior_shift_em_on_emocontext():
    cols = [tx.NEUTRAL_ID, ID["joy"], ID["sadness"], ID["anger"]]   # others happy sad angry
    y, post = shifted_posteriors(2000, TRAIN_MIX, DEV_MIX, seed=1)
    probs = np.zeros((len(y), tx.NUM_LABELS))
    probs[:, cols] = post
    dev = [{"labels": [cols[c]]} for c in y]
    counts = (TRAIN_MIX * 1000).astype(int)
    train = [{"labels": [cols[c]]} for c in range(4) for _ in range(counts[c])]
    plain = R.score("emocontext", "taxonomy", dev, probs, None)
    em = R.score("emocontext", "taxonomy", dev, probs, None, prior_shift="em",
                 train_records=train)
    assert plain["decision"] == "argmax" and "value_without_prior_shift" not in plain
    assert em["decision"] == "argmax after EM prior adjustment"
    assert em["value_without_prior_shift"] == plain["value"]
    assert em["value"] > plain["value"] + 0.01         # fewer "others" taken for emotions
    assert em["estimated_dev_priors"]["others (neutral)"] == pytest.approx(0.85, abs=0.03)
    with pytest.raises(EmoPillarsError, match="needs the training records"):
        R.score("emocontext", "taxonomy", dev, probs, None, prior_shift="em")
    with pytest.raises(ConfigError, match="expected none or em"):
        R.score("emocontext", "taxonomy", dev, probs, None, prior_shift="bayes")
    with pytest.raises(ConfigError, match="goemotions is multi-label"):
        R.score("goemotions", "taxonomy", dev, probs, None, prior_shift="em",
                train_records=train)


def overconfident_probs(post: np.ndarray, cols: list[int], scale: float = 3.0) -> np.ndarray:
    """28-column sigmoid probabilities whose logits over `cols` are `scale` times the log
    posteriors (up to a constant): the over-confidence of a fine-tuned encoder."""
    z = scale * np.log(np.clip(post, 1e-3, None))
    probs = np.full((len(post), tx.NUM_LABELS), 1e-4)
    probs[:, cols] = 1 / (1 + np.exp(-(z - z.mean(1, keepdims=True))))
    return probs


def test_fit_calibration_recovers_temperature_and_biases():
    y, post = shifted_posteriors(3000, TRAIN_MIX, TRAIN_MIX, seed=2)
    logits = 3.0 * np.log(np.clip(post, 1e-3, None)) + np.array([0.0, 1.0, -0.5, 0.2])
    t = M.fit_calibration(logits, y, "temperature")
    assert t["temperature"] > 2 and t["nll_after"] < t["nll_before"]
    assert t["biases"] == [0.0] * 4
    b = M.fit_calibration(logits, y, "bcts")
    assert b["temperature"] == pytest.approx(3.0, rel=0.15) and b["nll_after"] < t["nll_after"]
    # the biases lean against the added offsets: the most favoured class loses the most
    assert int(np.argmin(b["biases"])) == 1
    assert np.abs(M.apply_calibration(logits, b) - post).mean() < 0.03
    with pytest.raises(EmoPillarsError, match="expected temperature or bcts"):
        M.fit_calibration(logits, y, "platt")
    with pytest.raises(EmoPillarsError, match=r"class index in 0..3"):
        M.fit_calibration(logits, y + 4, "bcts")


def test_score_calibration_before_em_on_emocontext():
    cols = [tx.NEUTRAL_ID, ID["joy"], ID["sadness"], ID["anger"]]   # others happy sad angry
    y, post = shifted_posteriors(2000, TRAIN_MIX, DEV_MIX, seed=1)
    y_cal, post_cal = shifted_posteriors(1000, TRAIN_MIX, TRAIN_MIX, seed=3)
    dev = [{"labels": [cols[c]]} for c in y]
    cal = [{"labels": [cols[c]]} for c in y_cal] + [{"labels": []}]   # one without a class
    counts = (TRAIN_MIX * 1000).astype(int)
    train = [{"labels": [cols[c]]} for c in range(4) for _ in range(counts[c])]
    probs = overconfident_probs(post, cols)
    probs_cal = overconfident_probs(np.vstack([post_cal, post_cal[:1]]), cols)
    em = R.score("emocontext", "taxonomy", dev, probs, None, prior_shift="em",
                 train_records=train)
    both = R.score("emocontext", "taxonomy", dev, probs, None, prior_shift="em",
                   train_records=train, calibration="bcts", calibration_records=cal,
                   calibration_probs=probs_cal)
    assert both["decision"] == "argmax after bcts calibration and EM prior adjustment"
    assert both["calibration"]["temperature"] > 2 and both["calibration"]["n"] == 1000
    others = "others (neutral)"
    # over-confident posteriors make EM over-correct; calibrated ones estimate dev's mix
    assert abs(both["estimated_dev_priors"][others] - 0.85) < 0.03
    assert abs(both["estimated_dev_priors"][others] - 0.85) < \
        abs(em["estimated_dev_priors"][others] - 0.85)
    assert both["value"] >= em["value"]
    assert "bcts on 1000 held-out training examples" in render_results_table(both)
    with pytest.raises(EmoPillarsError, match="needs held-out training records"):
        R.score("emocontext", "taxonomy", dev, probs, None, calibration="bcts")
    with pytest.raises(ConfigError, match="eval.calibration=bcts: goemotions is multi-label"):
        R.score("goemotions", "taxonomy", dev, probs, None, calibration="bcts")


def test_holdout_split_is_stratified_and_deterministic():
    recs = [{"label_names": [c]} for c in "aaaaaaaaaabbbbbbbbbbbbbbbbbbbbc"]   # 10 a, 20 b, 1 c
    keep, held = A.holdout_split(recs, 0.1, seed=0)
    assert sorted(keep + held) == list(range(len(recs))) and not set(keep) & set(held)
    assert [recs[i]["label_names"][0] for i in held].count("a") == 1
    assert [recs[i]["label_names"][0] for i in held].count("b") == 2
    assert all(recs[i]["label_names"] != ["c"] for i in held)   # a lone example stays in
    assert A.holdout_split(recs, 0.1, seed=0) == (keep, held)
    assert A.holdout_split(recs, 0.1, seed=1) != (keep, held)
    with pytest.raises(EmoPillarsError, match=r"expected a number in \(0, 1\), got 1.5"):
        A.holdout_split(recs, 1.5)


# --- GoEmotions download ------------------------------------------------------------------
class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    requests = []

    class Handler(_Files):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/", requests
    server.shutdown()
    server.server_close()


def test_download_verifies_and_skips_valid_files(tmp_path, file_server):
    root, url, requests = file_server
    train = b"a\t1\tx\n"
    (root / "train.tsv").write_bytes(train)
    (root / "emotions.txt").write_text("\n".join(tx.LABELS))
    files = (RemoteFile("train.tsv", len(train), hashlib.sha256(train).hexdigest()),
             RemoteFile("emotions.txt", None, None, check="taxonomy_labels"))
    out = tmp_path / "out"
    paths = download_goemotions(out, base_url=url, files=files, log=lambda m: None)
    assert [p.read_bytes() for p in paths][0] == train and len(requests) == 2
    download_goemotions(out, base_url=url, files=files, log=lambda m: None)
    assert len(requests) == 2                           # both verified in place, none refetched
    assert sorted(p.name for p in out.iterdir()) == ["emotions.txt", "train.tsv"]


def test_download_rejects_a_corrupted_file_and_keeps_nothing(tmp_path, file_server):
    root, url, _ = file_server
    (root / "train.tsv").write_bytes(b"tampered\t1\tx\n")
    spec = RemoteFile("train.tsv", None, hashlib.sha256(b"original").hexdigest())
    with pytest.raises(EmoPillarsError, match="train.tsv: the downloaded file has sha256"):
        download_goemotions(tmp_path / "out", base_url=url, files=(spec,), log=lambda m: None)
    assert not (tmp_path / "out").exists()   # nor the folder the failed call would have made
    (root / "emotions.txt").write_text("joy\nanger\n")
    with pytest.raises(EmoPillarsError, match="expected the 28 GoEmotions classes"):
        download_goemotions(tmp_path / "out", base_url=url, log=lambda m: None,
                            files=(RemoteFile("emotions.txt", None, None, "taxonomy_labels"),))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_without_network_is_one_line(tmp_path, capsys):
    rc = cli.main(["data", "download", "goemotions", "--out", str(tmp_path / "g" / "data"),
                   "--base-url", f"http://127.0.0.1:{closed_port()}/"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "cannot download" in err and "train.tsv" in err
    assert list(tmp_path.iterdir()) == []   # no empty folders left behind
    rc = cli.main(["data", "download", "goemotions", "--out", str(tmp_path / "g"),
                   "--base-url", "notaurl"])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1
    assert "--base-url 'notaurl': expected an http://, https:// or file:// URL" in err
    assert list(tmp_path.iterdir()) == []
    assert cli.main(["data", "download", "isear"]) == 1
    assert "only goemotions" in capsys.readouterr().err


# --- runner -------------------------------------------------------------------------------
def oracle_train_fn(calls, noise=None):
    """Test double of the training step: probabilities from the gold labels of cfg.data.dev."""
    def oracle(path, model):
        recs = R.read_jsonl(Path(path))[:max_examples[0]]   # as the trainer reads them
        probs = M.multi_hot([r["labels"] for r in recs], cfg_labels[0]) * 0.6 + 0.2
        if noise is not None and model == noise:
            probs = np.random.default_rng(0).random(probs.shape)
        return probs

    cfg_labels, max_examples = [None], [None]

    def train_fn(cfg, predict_files=()):
        calls.append(cfg)
        cfg_labels[0], max_examples[0] = cfg.model.num_labels, cfg.data.max_examples
        return {"dev_probs": oracle(cfg.data.dev, cfg.model.path), "threshold": 0.5,
                "train_seconds": 1.5,
                "predicted": [oracle(p, cfg.model.path) for p in predict_files]}
    return train_fn


def test_run_benchmark_compares_finetuned_with_baseline_and_resumes(tmp_path):
    src = goemotions_dir(tmp_path)
    calls = []
    out = R.run_benchmark("goemotions", init_from="runs/student_hf", source=src,
                          out_dir=tmp_path / "run", overrides=["epochs=1"],
                          train_fn=oracle_train_fn(calls, noise="minilm-l6"), log=lambda m: None)
    assert [c.model.path for c in calls] == ["runs/student_hf", "minilm-l6"]
    assert calls[0].data.train.endswith("data/train.jsonl") and calls[0].epochs == 1
    fin, base = out["variants"]["finetuned"], out["variants"]["baseline"]
    assert fin["value"] == 1.0 and fin["threshold"] == 0.5 and fin["n_examples"] == 2
    assert base["value"] < fin["value"]
    run = tmp_path / "run"
    comparison = (run / "comparison.md").read_text()
    assert "finetuned - baseline" in comparison and "F1 joy" in comparison
    assert (run / "comparison.png").stat().st_size > 1000
    assert "| threshold | 0.5000 |" in (run / "finetuned" / "main" / "results.md").read_text()
    result = json.loads((run / "baseline" / "main" / "results.json").read_text())
    assert result["checkpoint"] == "latest"   # the config's: nothing selected on dev
    assert "| checkpoint | latest |" in (run / "baseline" / "main" / "results.md").read_text()
    # a second run finds results.json of each run and trains nothing
    R.run_benchmark("goemotions", init_from="runs/student_hf", source=src,
                    out_dir=run, train_fn=lambda cfg: pytest.fail("retrained"),
                    log=lambda m: None)
    # asked for another checkpoint, each run predicts again (its training time is kept)
    again, oracle = [], oracle_train_fn([])

    def predict_only(cfg, predict_files=()):   # training resumes at its end: seconds
        again.append(cfg)
        return {**oracle(cfg, predict_files), "train_seconds": 0.01}
    R.run_benchmark("goemotions", source=src, out_dir=run, overrides=["eval.checkpoint=best"],
                    train_fn=predict_only, log=lambda m: None)
    assert [c.eval.checkpoint for c in again] == ["best"]
    result = json.loads((run / "baseline" / "main" / "results.json").read_text())
    assert result["checkpoint"] == "best" and result["train_seconds"] == 1.5


def test_run_benchmark_isear_folds_native_head(tmp_path):
    isear_file(tmp_path / "isear")
    calls = []
    out = R.run_benchmark("isear", source=tmp_path / "isear", out_dir=tmp_path / "run",
                          folds=2, train_fn=oracle_train_fn(calls), log=lambda m: None)
    base = out["variants"]["baseline"]
    assert len(calls) == 2 and base["folds"] == 2 and base["value"] == 1.0
    assert base["threshold"] is None and base["n_examples"] == 6
    labels = json.loads((tmp_path / "run" / "data" / "labels.json").read_text())
    assert labels["label_space"] == "native" and len(labels["classes"]) == 7   # the config's
    mapped = R.run_benchmark("isear", source=tmp_path / "isear", out_dir=tmp_path / "r28",
                             overrides=["model.num_labels=28"], folds=2,
                             train_fn=oracle_train_fn([]), log=lambda m: None)
    assert mapped["variants"]["baseline"]["label_space"] == "taxonomy"
    assert "shame (embarrassment)" in mapped["variants"]["baseline"]["per_class_f1"]
    # a quick run on the first records of each split scores just those
    quick = R.run_benchmark("isear", source=tmp_path / "isear", out_dir=tmp_path / "quick",
                            overrides=["data.max_examples=2"], folds=2,
                            train_fn=oracle_train_fn([]), log=lambda m: None)
    assert quick["variants"]["baseline"]["n_examples"] == 4
    with pytest.raises(ConfigError, match="model.num_labels=5"):
        R.run_benchmark("isear", source=tmp_path / "isear", out_dir=tmp_path / "r2",
                        overrides=["model.num_labels=5"], train_fn=oracle_train_fn([]))


def test_aggregate_averages_each_folds_calibration_and_priors():
    def fold(i, value, temperature, sad):
        return {"run": f"fold{i}", "metric": "macro_f1", "value": value, "macro_f1": value,
                "value_without_prior_shift": value - 0.1, "threshold": None,
                "per_class_f1": {"sad": value}, "support": {"sad": 10}, "n_examples": 10,
                "calibration": {"method": "bcts", "n": 4, "temperature": temperature,
                                "biases": {"sad": sad}},
                "estimated_dev_priors": {"sad": sad}}
    out = R.aggregate([fold(0, 0.6, 1.0, 0.2), fold(1, 0.8, 3.0, 0.4)])
    assert out["run"] == "mean of 2 folds" and out["folds"] == 2
    assert out["value"] == pytest.approx(0.7) and out["value_std"] == pytest.approx(0.1)
    assert out["value_without_prior_shift"] == pytest.approx(0.6)
    assert out["calibration"]["method"] == "bcts"
    assert out["calibration"]["temperature"] == pytest.approx(2.0)
    assert out["calibration"]["biases"]["sad"] == pytest.approx(0.3)
    assert out["estimated_dev_priors"]["sad"] == pytest.approx(0.3)
    assert out["support"] == {"sad": 20}
    steps = R.aggregate([{**fold(0, 0.6, 1.0, 0.2), "checkpoint_step": 9},
                         {**fold(1, 0.8, 3.0, 0.4), "checkpoint_step": 8}])
    assert steps["checkpoint_step"] is None   # not fold 0's when the folds differ


def test_emocontext_runner_scores_official_metric(tmp_path):
    write(tmp_path / "ec" / "train.txt", emocontext_file(tmp_path).read_text())
    write(tmp_path / "ec" / "dev.txt", emocontext_file(tmp_path).read_text())
    out = R.run_benchmark("emocontext", source=tmp_path / "ec", out_dir=tmp_path / "run",
                          # 4 records: none to hold out; the paper's mapped 28-class head
                          overrides=["eval.calibration=none", "model.num_labels=28"],
                          train_fn=oracle_train_fn([]), log=lambda m: None)
    base = out["variants"]["baseline"]
    assert base["metric"] == "emocontext_f1" and base["value"] == 1.0
    assert base["decision"] == "argmax after EM prior adjustment"   # the config's choice
    table = (tmp_path / "run" / "baseline" / "main" / "results.md").read_text()
    assert "| value with the plain argmax | 1.0000 |" in table
    probs = np.load(tmp_path / "run" / "baseline" / "main" / "dev_probs.npy")
    assert probs.shape == (4, tx.NUM_LABELS) and probs.dtype == np.float32
    # re-running re-scores the saved probabilities under the new config, without training
    again = R.run_benchmark("emocontext", source=tmp_path / "ec", out_dir=tmp_path / "run",
                            overrides=["eval.prior_shift=none", "eval.calibration=none",
                                       "model.num_labels=28"],
                            train_fn=lambda cfg: pytest.fail("retrained"), log=lambda m: None)
    rescored = again["variants"]["baseline"]
    assert rescored["decision"] == "argmax" and rescored["train_seconds"] == 1.5
    saved = json.loads((tmp_path / "run" / "baseline" / "main" / "results.json").read_text())
    assert saved["decision"] == "argmax"
    recs = R.read_jsonl(tmp_path / "run" / "data" / "dev.jsonl")
    assert recs[0]["context"] == "Hi\nHello"


def test_emocontext_runner_holds_out_a_calibration_split(tmp_path):
    labels = ["others"] * 20 + ["happy"] * 8 + ["sad"] * 6 + ["angry"] * 6
    rows = "".join(f"{i}\tturn {i}\treply\tutterance {i}\t{lab}\n"
                   for i, lab in enumerate(labels))
    for split in ("train", "dev"):
        write(tmp_path / "ec" / f"{split}.txt", "id\tturn1\tturn2\tturn3\tlabel\n" + rows)
    calls = []
    out = R.run_benchmark("emocontext", source=tmp_path / "ec", out_dir=tmp_path / "run",
                          train_fn=oracle_train_fn(calls), log=lambda m: None)
    data = tmp_path / "run" / "data"
    fit, cal = R.read_jsonl(data / "train_fit.jsonl"), R.read_jsonl(data / "calibration.jsonl")
    assert calls[0].data.train == str(data / "train_fit.jsonl")   # never trained on cal
    assert len(cal) == 5 and len(fit) + len(cal) == 40   # 2 others + 1 of each emotion
    assert {r["id"] for r in fit}.isdisjoint(r["id"] for r in cal)
    base = out["variants"]["baseline"]
    assert base["decision"] == "argmax after bcts calibration and EM prior adjustment"
    assert base["calibration"]["n"] == 5 and base["value"] == 1.0
    run = tmp_path / "run" / "baseline" / "main"
    assert np.load(run / "calibration_probs.npy").shape == (5, 4)   # the config's own head
    # re-scored without training; a run trained without the split cannot be calibrated
    again = R.run_benchmark("emocontext", source=tmp_path / "ec", out_dir=tmp_path / "run",
                            overrides=["eval.calibration=temperature"],
                            train_fn=lambda cfg: pytest.fail("retrained"), log=lambda m: None)
    assert again["variants"]["baseline"]["calibration"]["method"] == "temperature"
    (run / "calibration_probs.npy").unlink()
    with pytest.raises(EmoPillarsError, match="trained without a held-out calibration split"):
        R.run_benchmark("emocontext", source=tmp_path / "ec", out_dir=tmp_path / "run",
                        train_fn=lambda cfg: pytest.fail("retrained"), log=lambda m: None)
    with pytest.raises(ConfigError, match="eval.calibration=bcts: goemotions is multi-label"):
        R.run_benchmark("goemotions", source=tmp_path / "ec", out_dir=tmp_path / "g",
                        overrides=["eval.calibration=bcts"],
                        train_fn=lambda cfg: pytest.fail("trained"), log=lambda m: None)


def test_cli_prepare_writes_jsonl(tmp_path, capsys):
    isear_file(tmp_path / "src")
    assert cli.main(["data", "prepare", "isear", "--source", str(tmp_path / "src"),
                     "--out", str(tmp_path / "out"), "--folds", "3"]) == 0
    dev = [R.read_jsonl(tmp_path / "out" / f"fold{k}" / "dev.jsonl") for k in range(3)]
    assert sorted(r["id"] for d in dev for r in d) == [f"k{i}" for i in range(1, 7)]
    assert "fold2: train" in capsys.readouterr().out
    # a bad split file: one error line and no output at all (not even labels.json)
    src = goemotions_dir(tmp_path)
    write(src / "dev.tsv", "fine\t1\tid0\ntext\tjoy\tid9\n")
    assert cli.main(["data", "prepare", "goemotions", "--source", str(src),
                     "--out", str(tmp_path / "g")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dev.tsv:2:" in err
    assert not (tmp_path / "g").exists()


# --- the real files, when this machine has them -------------------------------------------
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real benchmark files not at {SHARED} "
                                                "(only on the project's dev machine)")
def test_real_benchmark_files_parse():
    from emopillars_jax.benchmarks.download import GOEMOTIONS_FILES
    ge = SHARED / "goemotions"
    for spec in GOEMOTIONS_FILES[:2]:
        assert verify(ge / spec.name, spec) is None          # our pins match the real files
    assert len(A.read_goemotions(ge / "dev.tsv")) == 5426
    isear = A.read_isear(SHARED / "isear" / "isear.csv")
    assert len(isear) == 6104 and not any("|" in r["text"] or "\u00e1" in r["text"]
                                          for r in isear)
    assert len(A.read_emocontext(SHARED / "emocontext" / "dev.txt")) == 2755
    assert len(A.read_meld(SHARED / "meld" / "dev_sent_emo.csv")) == 1109


# one training step of the real MiniLM-L6 through the real trainer, on tiny data
ONE_REAL_STEP = ["max_steps=1", "batch_size=2", "data.max_length=24",
                 "data.bucket_boundaries=[24]", "progress=false", "checkpoint.async_save=false"]


def real_run_source(tmp_path: Path) -> Path:
    """An EmoContext release with two records of each class in train (one is held out for
    calibration) and one in dev."""
    twice = "".join(f"{4 + i}\tagain\tand again\tline {i}\t{lab}\n"
                    for i, lab in enumerate(["angry", "sad", "happy", "others"]))
    write(tmp_path / "ec" / "train.txt", emocontext_file(tmp_path, twice).read_text())
    write(tmp_path / "ec" / "dev.txt", emocontext_file(tmp_path).read_text())
    return tmp_path / "ec"


def test_runner_trains_with_the_project_trainer(tmp_path):
    """Real MiniLM-L6 and the real trainer for one step: proves the wiring, not a score."""
    source = real_run_source(tmp_path)
    out = R.run_benchmark(
        "emocontext", source=source, out_dir=tmp_path / "run",
        config=Path(__file__).parents[1] / "configs" / "finetune_emocontext.yaml",
        overrides=ONE_REAL_STEP, log=lambda m: None)
    base = out["variants"]["baseline"]
    assert base["n_examples"] == 4 and 0.0 <= base["value"] <= 1.0
    assert base["metric"] == "emocontext_f1" and base["train_seconds"] > 0
    run = tmp_path / "run" / "baseline" / "main"
    assert (run / "train" / "checkpoints").is_dir() and (run / "results.json").is_file()
    # the config's BCTS calibration: one record of each class held out and predicted by
    # the config's own 4-way head
    assert np.load(run / "calibration_probs.npy").shape == (4, 4)
    assert base["calibration"]["n"] == 4
    assert base["checkpoint"] == "latest" and base["checkpoint_step"] == 1
    # another checkpoint: training resumes at its end and only predicts again
    again = R.run_benchmark(
        "emocontext", source=source, out_dir=tmp_path / "run",
        config=Path(__file__).parents[1] / "configs" / "finetune_emocontext.yaml",
        overrides=[*ONE_REAL_STEP, "eval.checkpoint=best"], log=lambda m: None)
    assert again["variants"]["baseline"]["checkpoint"] == "best"
    assert again["variants"]["baseline"]["train_seconds"] == base["train_seconds"]
    assert json.loads((run / "train" / "summary.json").read_text())["step"] == 1


def test_runner_finetunes_an_exported_student_into_the_native_head(tmp_path):
    """The (b) variant with real parts: an exported 28-class MiniLM folder (as a student
    is published) starts EmoContext's 4-way fine-tune with a new head (test_encoder checks
    what carries over), and the comparison with the baseline is written."""
    from emopillars_jax.assets import resolve
    from emopillars_jax.export import export_model
    from emopillars_jax.models import load_encoder
    student, _ = load_encoder("minilm-l6", seed=0)
    assert student.head.classifier.kernel.shape[-1] == tx.NUM_LABELS
    folder = export_model(student, tmp_path / "student", tokenizer_folder=resolve("minilm-l6"))
    source = real_run_source(tmp_path)
    out = R.run_benchmark(
        "emocontext", init_from=str(folder), source=source, out_dir=tmp_path / "run",
        overrides=ONE_REAL_STEP, log=lambda m: None)
    assert set(out["variants"]) == {"finetuned", "baseline"}
    for variant in ("finetuned", "baseline"):
        run = tmp_path / "run" / variant / "main"
        assert np.load(run / "dev_probs.npy").shape == (4, 4)
    started = json.loads((tmp_path / "run" / "finetuned" / "main" / "results.json").read_text())
    assert started["model"] == str(folder)
    assert "finetuned - baseline" in (tmp_path / "run" / "comparison.md").read_text()


def test_prepare_goemotions_through_tfds(tmp_path, monkeypatch):
    splits = {"train": [{"comment_text": b"yay", **{n: n == "joy" for n in tx.LABELS}}] * 3,
              "validation": [{"comment_text": b"hm", **{n: n == "confusion" for n in tx.LABELS}}],
              "test": []}
    fake = types.SimpleNamespace(data_source=lambda name, split, data_dir: splits[split])
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    runs = R.prepare("goemotions", "tfds:/some/dir", tmp_path / "out", log=lambda m: None)
    dev = R.read_jsonl(runs[0].dev)
    assert dev[0]["text"] == "hm" and dev[0]["labels"] == [ID["confusion"]]
    assert len(R.read_jsonl(runs[0].train)) == 3
    with pytest.raises(EmoPillarsError, match="only goemotions"):
        R.prepare("isear", "tfds", tmp_path / "out2")


def test_prepare_conversational_benchmarks(tmp_path):
    meld = tmp_path / "meld"
    for split in ("train", "dev"):
        write(meld / f"{split}_sent_emo.csv", MELD_HEADER + "1,Hi.,Ross,joy,positive,0,0,1\n"
                                                            "2,Bye.,Rachel,fear,negative,0,1,1\n")
    runs = R.prepare("meld", meld, tmp_path / "m", log=lambda m: None)
    assert R.read_jsonl(runs[0].dev)[1]["context"] == "Ross: Hi."
    runs = R.prepare("iemocap", iemocap_release(tmp_path), tmp_path / "i", log=lambda m: None)
    assert {r["id"][:5] for r in R.read_jsonl(runs[0].dev)} == {"Ses05"}
    assert {r["id"][:5] for r in R.read_jsonl(runs[0].train)} == {"Ses01"}


def test_benchmark_module_cli_errors_are_one_line(tmp_path, capsys):
    from emopillars_jax.benchmarks.commands import main
    assert main(["run", "isear", "--source", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "isear data folder not found" in err


def test_benchmark_subcommand_takes_overrides_after_options(tmp_path, capsys):
    from emopillars_jax.cli import main
    # the override after --source is collected (not "unrecognized"), then validated
    assert main(["benchmark", "isear", "--source", str(tmp_path), "epochs=0"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "epochs" in err
    with pytest.raises(SystemExit):
        main(["benchmark", "isear", "--source", str(tmp_path), "--bogus"])
