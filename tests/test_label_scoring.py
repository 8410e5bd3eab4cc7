"""Stage 3 by label scoring (data_gen/label_scoring.py): the calibration, rule and level
arithmetic on a scripted scorer with known log-probabilities, the vocabulary checks on a
fake tokenizer, and the real packaged SmolLM2 GGUF through `generate` (records, kill and
resume, one-sequence vs batched scores, a too-long prompt)."""
import functools
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_gen import label_scoring as ls
from data_gen import pipeline
from data_gen.config import GenerateConfig
from data_gen.engine import ScriptedEngine, scripted_answer
from data_gen.labels import process_labels
from data_gen.stages import STAGES
from data_gen.store import Store, read_jsonl
from emopillars_jax.config import load_config
from emopillars_jax.errors import EmoPillarsError
from emopillars_jax.taxonomy import LABELS, NUM_LABELS

LN2 = math.log(2)
# classes in the order of their calibrated score below: s = -rank * ln 2, so p ~ 2^-rank
RANKED = ["fear", "sadness", "anger", "joy", "grief", "love"] + \
    [n for n in LABELS if n not in ("fear", "sadness", "anger", "joy", "grief", "love")]
PRIOR = [-1.0 - 0.5 * c for c in range(NUM_LABELS)]   # what calibration must remove


def cfg_for(tmp_path: Path, *extra: str) -> GenerateConfig:
    return load_config(GenerateConfig, None, [f"out_dir={tmp_path / 'run'}", "progress=false",
                                              "labels_method=score", *extra])


def calibrated_scores() -> np.ndarray:
    s = np.zeros(NUM_LABELS)
    for rank, name in enumerate(RANKED):
        s[LABELS.index(name)] = -rank * LN2
    return s


def known_logprobs(req: ls.ScoreRequest) -> list[float]:
    """u0 = prior + s, u1 = prior - s: their mean is the prior, so `run` calibration gives
    u0 the scores s exactly as constructed."""
    s = calibrated_scores()
    sign = {"u0": 1.0, "u1": -1.0}.get(req.key, 0.0)
    return list(np.array(PRIOR) + sign * s)


def items(n: int = 2, target: str | None = None) -> list[dict]:
    return [{"utterance_id": f"u{i}", "utterance": f"words {i}", "character": "Anna",
             "target_emotion": target} for i in range(n)]


def label_stage(cfg, its, scorer, where: Path) -> tuple[dict, Store]:
    store = Store(where / "labels.jsonl", "utterance_id")
    eng = ScriptedEngine(scripted_answer)
    eng.label_scorer = scorer
    summary = ls.run_scoring_stage(STAGES["labels"], its, eng, cfg, store,
                                   Store(where / "rejects.jsonl", "id"))
    return summary, store


# ------------------------------------------------------------------------ arithmetic

@pytest.mark.parametrize("rule, extra, levels, kept", [
    # relative levels p/p_max = 1, 1/2, 1/4, 1/8, 1/16 -> 1.0 0.5 0.3 0.1 0.1 (half up);
    # the threshold 0.3 reads the rounded levels, as the paper's answers
    ("relative", [], [1.0, 0.5, 0.3, 0.1, 0.1], 3),
    # top 2: the third level (0.3) drops to the step below the threshold
    ("top_k", ["scoring.k=2"], [1.0, 0.5, 0.2, 0.1, 0.1], 2),
    # p ~ 0.5, 0.25, 0.125, 0.0625: 0.9 of the mass needs four; the fourth rises to 0.3
    ("mass", ["scoring.mass=0.9"], [1.0, 0.5, 0.3, 0.3, 0.1], 4),
])
def test_run_calibration_rules_and_levels(tmp_path, rule, extra, levels, kept):
    cfg = cfg_for(tmp_path, f"scoring.rule={rule}", "label_threshold=0.3", *extra)
    summary, store = label_stage(cfg, items(), ls.ScriptedScorer(known_logprobs), tmp_path)
    assert summary["calibration"]["method"] == "run" and summary["calibration"]["n"] == 2
    np.testing.assert_allclose(summary["calibration"]["priors"], PRIOR, atol=1e-12)
    rec = store.get("u0")
    assert rec["emotions"] == [[name, lv] for name, lv in zip(RANKED[:5], levels)]
    expected_p = 2.0 ** -np.arange(NUM_LABELS) / (2 - 2.0 ** -27)   # in RANKED order
    p = np.array(rec["distribution"])
    np.testing.assert_allclose([p[LABELS.index(n)] for n in RANKED], expected_p, atol=1e-6)
    np.testing.assert_allclose(rec["logprobs"], known_logprobs(ls.ScoreRequest("u0", ())),
                               atol=1e-6)
    assert json.loads(rec["raw"])["scores"][0] == ["fear", 0.5]
    pl = process_labels([tuple(e) for e in rec["emotions"]], cfg.label_threshold)
    assert sorted(LABELS[i] for i in pl.labels) == sorted(RANKED[:kept])
    assert pl.primary_emotion == "fear"
    # u1's scores are the mirror image: its primary is the class ranked last for u0
    assert store.get("u1")["emotions"][0][0] == RANKED[-1]
    assert json.loads((tmp_path / "labels_priors.json").read_text()) == summary["calibration"]


def test_none_and_content_free_calibration_and_the_target_prior(tmp_path):
    s = calibrated_scores()
    seen = []

    def logprobs(req):
        seen.append(req.key)
        if req.key.startswith("content_free:"):
            return PRIOR                       # the content-free inputs give the prior
        return list(np.array(PRIOR) + s)

    cfg = cfg_for(tmp_path, "scoring.calibration=content_free",
                  "scoring.content_free=['N/A', '', '[MASK]', 'nothing']")
    summary, store = label_stage(cfg, items(), ls.ScriptedScorer(logprobs), tmp_path / "cf")
    assert summary["calibration"]["n"] == 4
    assert seen.count("content_free:3") == 1 and len(seen) == 2 + 4
    np.testing.assert_allclose(summary["calibration"]["priors"], PRIOR)
    assert store.get("u0")["emotions"][0] == ["fear", 1.0]
    # without calibration the prior (highest for admiration, class 0) is what wins...
    none = cfg_for(tmp_path, "scoring.calibration=none")
    _, raw = label_stage(none, items(), ls.ScriptedScorer(logprobs), tmp_path / "none")
    lp = np.array(PRIOR) + s
    assert raw.get("u0")["emotions"][0][0] == LABELS[int(np.argmax(lp))] != "fear"
    # ...and the target prior adds its weight to the asked emotion's calibrated score:
    # joy (rank 3, s = -3 ln 2) + 3.5 ln 2 beats fear (0)
    w = cfg_for(tmp_path, "scoring.calibration=content_free", f"scoring.target_prior={3.5 * LN2}")
    _, tgt = label_stage(w, items(target="joy"), ls.ScriptedScorer(logprobs), tmp_path / "tgt")
    first, second = tgt.get("u0")["emotions"][:2]
    assert first == ["joy", 1.0] and second[0] == "fear"
    assert second[1] == round(2 ** -0.5, 1)


def test_standardized_run_calibration_divides_by_each_class_spread(tmp_path):
    # fear swings widely (+-4), joy a little (u0 +0.9, the others -0.3), the rest is flat:
    # after the mean fear leads u0 (4 > 0.9); in standard deviations joy does (1.73 > 1)
    swing = {"fear": [4, -4, 4, -4], "joy": [0.9, -0.3, -0.3, -0.3]}

    def logprobs(req):
        i = int(req.key[1:])
        return [PRIOR[c] + swing.get(n, [0] * 4)[i] for c, n in enumerate(LABELS)]
    plain, _ = label_stage(cfg_for(tmp_path), items(4), ls.ScriptedScorer(logprobs),
                           tmp_path / "run")
    std = cfg_for(tmp_path, "scoring.calibration=run_standardized")
    summary, store = label_stage(std, items(4), ls.ScriptedScorer(logprobs), tmp_path / "std")
    assert Store(tmp_path / "run" / "labels.jsonl", "utterance_id").get("u0")["emotions"][0][0] \
        == "fear"
    assert store.get("u0")["emotions"][0][0] == "joy"
    c = summary["calibration"]
    assert c["method"] == "run_standardized" and c["n"] == 4 and "scales" not in plain["calibration"]
    assert c["scales"][LABELS.index("fear")] == pytest.approx(4.0)
    assert c["scales"][LABELS.index("joy")] == pytest.approx(np.std([0.9, -0.3, -0.3, -0.3]))
    assert c["scales"][LABELS.index("anger")] == 1e-6     # a flat class: floored, scores 0
    np.testing.assert_allclose(c["priors"], PRIOR, atol=1e-12)


def test_resume_scores_only_missing_chunks_and_writes_the_same_records(tmp_path):
    cfg = cfg_for(tmp_path)
    its = items(10)
    full = ls.ScriptedScorer(width=1)                 # chunks of 4 utterances
    _, store = label_stage(cfg, its, full, tmp_path / "full")
    assert [len(c) for c in full.calls] == [4, 4, 2]
    # a kill after the first chunk: only its scores are stored, no priors, no labels
    part = tmp_path / "part"
    part.mkdir()
    lines = (tmp_path / "full" / "labels_scores.jsonl").read_text().splitlines(keepends=True)
    (part / "labels_scores.jsonl").write_text("".join(lines[:4]) + lines[4][:20])  # torn line
    again = ls.ScriptedScorer(width=1)
    label_stage(cfg, its, again, part)
    assert [[r.key for r in c] for c in again.calls] == [[f"u{i}" for i in range(4, 8)],
                                                         ["u8", "u9"]]
    for name in ("labels.jsonl", "labels_scores.jsonl", "labels_priors.json"):
        assert (part / name).read_text() == (tmp_path / "full" / name).read_text(), name
    # stored priors of another number of utterances: a one-line error, nothing relabelled
    with pytest.raises(EmoPillarsError, match=r"labels_priors\.json: priors of 10 utterances, "
                                              r"but the stage has 9"):
        label_stage(cfg, its[:9], ls.ScriptedScorer(width=1), part)


def test_generate_in_scoring_mode_with_the_scripted_engine(tmp_path):
    cfg = load_config(GenerateConfig, None, [f"out_dir={tmp_path / 'run'}", "corpus.max_plots=3",
                                             "progress=false", "labels_method=score"])
    pipeline.generate(cfg, engine=ScriptedEngine(functools.partial(scripted_answer,
                                                                   malformed_every=7)))
    out = Path(cfg.out_dir)
    labels = read_jsonl(out / "stages" / "labels.jsonl")
    utterances = sum(len(r["utterances"]) for r in read_jsonl(out / "stages" / "utterances.jsonl"))
    assert len(labels) == utterances == len(read_jsonl(out / "stages" / "labels_scores.jsonl"))
    manifest = json.loads((out / "stages" / "manifest.json").read_text())
    assert manifest["stages"]["labels"]["calibration"]["n"] == utterances
    assert manifest["fingerprint"]["scoring"]["rule"] == "top_k"
    rows = [json.loads(line) for f in (out / "dataset" / "contextless").glob("*.jsonl")
            for line in f.read_text().splitlines()]
    assert len(rows) == utterances            # scoring never leaves an utterance unlabelled
    for r in rows:
        assert len(r["labels"]) == 3 and len(r["distribution"]) == NUM_LABELS
        assert r["provenance"]["labels_method"] == "score"
        assert r["primary_emotion"] == r["all_emotions"][0]["label"]
    assert read_jsonl(out / "stages" / "context.jsonl")          # later stages ran on them
    with pytest.raises(EmoPillarsError, match="different settings.*scoring"):
        pipeline.generate(load_config(GenerateConfig, None, [
            f"out_dir={out}", "corpus.max_plots=3", "progress=false", "labels_method=score",
            "scoring.rule=relative"]), engine=ScriptedEngine(scripted_answer))


def test_top_k_and_mass_rules_need_a_positive_threshold():
    with pytest.raises(Exception, match="needs label_threshold > 0"):
        load_config(GenerateConfig, None, ["labels_method=score", "label_threshold=0"])
    load_config(GenerateConfig, None, ["labels_method=score", "label_threshold=0",
                                       "scoring.rule=relative"])


# ------------------------------------------------------------------------ vocabulary

def fake_vocab(unknown: str = "", bytes_only: str = "", merge_boundary: bool = False):
    """One token per character (ids = code points); `unknown` letters become token 0
    (read back as '?'), `bytes_only` letters are byte-fallback tokens."""
    def tokenize(text, as_prompt):
        toks = [0 if ch in unknown else ord(ch) for ch in text]
        if merge_boundary and "\n" in text[:-1]:   # a newline merges with the next letter
            at = text.index("\n")
            toks[at:at + 2] = [-ord(text[at + 1])]
        return toks

    def detokenize(toks):
        return "".join("?" if t == 0 else chr(abs(t)) for t in toks)

    return ls.Vocabulary("fake.gguf", tokenize, detokenize,
                         lambda t: t == 0 or chr(abs(t)) in bytes_only)


def test_class_names_are_tokenized_in_context_and_checked():
    prompt = "Which emotion?\n"
    vocab = fake_vocab()
    toks = ls.class_tokens(vocab, prompt, vocab.tokenize(prompt, True))
    assert [vocab.detokenize(t) for t in toks] == list(LABELS)
    # the answer's first letter merges with the prompt's newline: the name is tokenized alone
    merging = fake_vocab(merge_boundary=True)
    toks = ls.class_tokens(merging, prompt, merging.tokenize(prompt, True))
    assert toks[LABELS.index("joy")] == [ord("j"), ord("o"), ord("y")]
    with pytest.raises(EmoPillarsError) as err:   # no 'z' token: "realization" is the first
        ls.class_tokens(fake_vocab(unknown="z"), prompt, vocab.tokenize(prompt, True))
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("fake.gguf: its vocabulary cannot spell the class name "
                                     "'realization' (tokens [")
    with pytest.raises(EmoPillarsError, match="fake.gguf: its vocabulary cannot spell the class "
                                              "name 'sadness'"):
        ls.class_tokens(fake_vocab(unknown="s"), prompt, vocab.tokenize(prompt, True),
                        names=["joy", "sadness"])
    with pytest.raises(EmoPillarsError, match="cannot spell the class name 'joy'"):
        ls.class_tokens(fake_vocab(bytes_only="joy"), prompt, vocab.tokenize(prompt, True),
                        names=["joy"])


# ------------------------------------------------------------------------ llama.cpp

def _llama():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra (.[gen])")
    import test_gen_llm
    return test_gen_llm


def score_args(tiny: list[str]) -> list[str]:
    # up to 3 characters x 4 utterances, scored one utterance per batch: chunks of 4, so a
    # kill can fall between two chunks
    return [a for a in tiny if not a.startswith(("utterances_non_neutral", "max_characters",
                                                 "context_fraction"))] + [
        "max_characters=3", "utterances_non_neutral=3", "decoding.characters.max_tokens=200",
        "decoding.utterances.max_tokens=300",
        "context_fraction=0.5", "labels_method=score", "scoring.n_seq=1"]


@pytest.fixture(scope="module")
def score_run(tmp_path_factory) -> Path:
    """One uninterrupted run in scoring mode on one plot (shared by the tests below)."""
    gen = _llama()
    out = tmp_path_factory.mktemp("score") / "run"
    pipeline.generate(load_config(GenerateConfig, None, [f"out_dir={out}",
                                                         *score_args(gen.TINY)]))
    return out


def test_smollm2_scoring_run_writes_the_release_records(score_run):
    stages = score_run / "stages"
    manifest = json.loads((stages / "manifest.json").read_text())
    st = manifest["stages"]["labels"]
    labels = read_jsonl(stages / "labels.jsonl")
    assert st["new"] == st["answered"] == len(labels) > 0 and st["rejected"] == 0
    assert manifest["engine_stats"]["cached_prompt_tokens"] > 0    # the shared prefix
    for r in labels:
        assert len(r["emotions"]) == 5 and r["emotions"][0][1] == 1.0
        assert all(n in LABELS and 0 <= v <= 1 for n, v in r["emotions"])
        assert len(r["distribution"]) == NUM_LABELS
        assert abs(sum(r["distribution"]) - 1) < 1e-4 and max(r["logprobs"]) < 0
    rows = [json.loads(line) for f in (score_run / "dataset" / "contextless").glob("*.jsonl")
            for line in f.read_text().splitlines()]
    assert len(rows) == len(labels)
    release = {"plot_id", "utterance", "primary_emotion", "all_emotions", "all_emotions_mapped",
               "raw_emotion_explication", "expressiveness", "emotions_used_to_generate_context",
               "labels"}
    for r in rows:
        assert release <= set(r) and len(r["labels"]) == 3
        assert all(isinstance(d["score"], float) for d in r["all_emotions"])
        assert r["distribution"] == next(x for x in labels
                                         if x["utterance_id"] == r["utterance_id"])["distribution"]


def test_smollm2_sigkill_and_resume_in_scoring_mode(score_run, tmp_path):
    gen = _llama()
    assert len(read_jsonl(score_run / "stages" / "labels.jsonl")) > 4, \
        "one chunk of scores only: no kill can fall between two chunks"
    out = tmp_path / "killed"
    args = [f"out_dir={out}", *score_args(gen.TINY)]
    # kill as label scoring starts, after its first chunk, and while the context stage runs
    for marker in ("utterances.jsonl", "labels_scores.jsonl", "labels.jsonl"):
        proc = subprocess.Popen([sys.executable, "-c", gen.RUN_GENERATE, *args])
        path = out / "stages" / marker
        deadline = time.time() + 900
        while proc.poll() is None and not path.exists() and time.time() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    pipeline.generate(load_config(GenerateConfig, None, args))

    def records(run: Path) -> dict[str, str]:
        files = sorted((run / "stages").glob("*.jsonl")) + \
            sorted((run / "dataset").rglob("*.jsonl")) + [run / "stages" / "labels_priors.json"]
        return {str(f.relative_to(run)): "\n".join(sorted(f.read_text().splitlines()))
                for f in files}

    assert records(out) == records(score_run)


def test_one_sequence_and_batched_scores_agree(tmp_path):
    """Tolerance: 1.0 nat for any class, 0.25 on average. llama.cpp's CPU kernels differ
    between one-token and batched decodes (tiled flash attention from 64 queries on, other
    matrix-product paths) and with the KV cells' layout, and the 135M 4-bit model amplifies
    these float differences: 0.15 mean / 0.9 max measured on 6 utterances (Qwen 0.5B:
    0.08 / 0.36). Each path is exactly repeatable."""
    _llama()
    from data_gen.engine import open_engine
    cfg = cfg_for(tmp_path, "llm.model=smollm2-135m", "llm.n_threads=1", "llm.n_ctx=1024",
                  "scoring.n_seq=2")
    reqs = [ls.make_score_request(it, cfg) for it in [
        {"utterance_id": "a", "utterance": "Get out of my house before I throw you out!",
         "character": "Anna"},
        {"utterance_id": "b", "utterance": "Thank you, I will never forget your kindness.",
         "character": "Tom"},
        {"utterance_id": "c", "utterance": "The train leaves at nine.", "character": "Mia"}]]
    batched = open_engine(cfg.llm.model_copy(update={"engine": "batched", "n_seq": 2}))
    single = open_engine(cfg.llm.model_copy(update={"engine": "single"}))
    b = np.array(ls.scorer_for(batched, cfg).score(reqs))
    one = np.array(ls.scorer_for(single, cfg).score(reqs))
    assert np.array_equal(b, np.array(ls.scorer_for(batched, cfg).score(reqs)))
    diff = np.abs(b - one)
    print("single vs batched: max", diff.max(), "mean", diff.mean())
    assert diff.max() < 1.0 and diff.mean() < 0.25
    assert (b < 0).all() and (one < 0).all()
    batched.close()
    single.close()


def test_prompt_too_long_for_the_context_is_a_one_line_error(tmp_path):
    _llama()
    from data_gen.engine import open_engine
    cfg = cfg_for(tmp_path, "llm.model=smollm2-135m", "llm.n_threads=1", "llm.n_ctx=256",
                  "llm.engine=single")
    eng = open_engine(cfg.llm)
    req = ls.make_score_request({"utterance_id": "long", "utterance": "I wait. " * 5,
                                 "character": "Anna"}, cfg)
    with pytest.raises(EmoPillarsError) as err:
        ls.scorer_for(eng, cfg).score([req])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("label scoring of long: the prompt of ")
    assert "more than llm.n_ctx=256 (raise llm.n_ctx)" in msg
    eng.close()
