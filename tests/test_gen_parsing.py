"""Parsers and label processing, on recorded real SmolLM2 answers (malformed ones included)
and on hand-written answers in the shapes instruct models produce."""
import json
from pathlib import Path

import pytest

from data_gen import parsing
from data_gen.labels import process_labels
from data_gen.parsing import ParseError
from data_gen.stages import STAGES
from emopillars_jax.config import load_config
from data_gen.config import GenerateConfig
from emopillars_jax.taxonomy import LABEL_TO_ID, LABELS

FIXTURES = Path(__file__).parent / "fixtures"
RECORDED = [json.loads(line) for f in sorted(FIXTURES.glob("*_answers.jsonl"))
            for line in f.read_text().splitlines()]
SMOL = [r for r in RECORDED if r["model"].startswith("SmolLM2")]
ITEM = {"plot_id": "p", "title": "T", "character_id": "p-c00", "utterance_id": "p-c00-u00"}


@pytest.mark.parametrize("rec", RECORDED,
                         ids=lambda r: f"{r['model'][:6]}-{r['answer_mode']}-{r['stage']}")
def test_recorded_answers_parse_or_fail_with_a_reason(rec):
    """Whatever a real model answered, a stage parser returns fields or raises ParseError."""
    cfg = load_config(GenerateConfig, None, [f"answer_mode={rec['answer_mode']}",
                                             "max_characters=5"])
    try:
        fields = STAGES[rec["stage"]].parse(rec["answer"], ITEM, cfg)
    except ParseError as exc:
        assert str(exc)
        return
    assert isinstance(fields, dict) and fields
    json.dumps(fields)   # records must be serialisable


def test_recorded_json_answers_are_valid_json_when_complete():
    """Grammar-constrained answers that stopped on their own always parse as JSON."""
    complete = [r for r in RECORDED if r["answer_mode"] == "json" and r["finish"] == "stop"]
    assert complete
    for r in complete:
        assert isinstance(parsing.load_json(r["answer"]), dict)


def _recorded(mode, stage):
    return [r["answer"] for r in SMOL if r["answer_mode"] == mode and r["stage"] == stage]


def test_recorded_specific_answers():
    # comma-separated names on one line, with repeats
    names = [c["name"] for c in parsing.parse_characters(_recorded("free", "characters")[0],
                                                         "free", 5)]
    assert names[:4] == ["Prince Hamlet of Denmark", "Ophelia", "Claudius", "Gertrude"]
    assert len(names) == len(set(names)) <= 5
    # a free-text label answer that names an emotion but gives no level is rejected
    with pytest.raises(ParseError, match="emotion: level"):
        parsing.parse_labels(_recorded("free", "labels")[0], "free")
    # a rewriting answer that repeats the instructions is rejected
    with pytest.raises(ParseError, match="repeats the instructions"):
        parsing.parse_text(_recorded("free", "rewriting")[0], "free", "utterance", 2)
    # grammar-constrained labels: duplicates collapse to the max level in processing
    pairs = parsing.parse_labels(_recorded("json", "labels")[1], "json")
    assert pairs == [("embarrassment", 0.1), ("embarrassment", 1.0)]
    assert process_labels(pairs).labels == [LABEL_TO_ID["embarrassment"]]


def test_free_text_shapes():
    chars = parsing.parse_characters(
        "Here are the characters:\n1. **Cinderella** - a kind girl\n2. Lady Tremaine: her "
        "stepmother\n- Prince Henri (the prince)\n3. Cinderella - again", "free", 10)
    assert [c["name"] for c in chars] == ["Cinderella", "Lady Tremaine", "Prince Henri"]
    assert chars[1]["description"] == "her stepmother"
    utts = parsing.parse_utterances(
        "1. Joy: I cannot believe it, I am free!\n2. (Fear) - What if they find me?\n"
        "Neutral: I should fetch the water now.\nneutral: The mill is north of here.\n"
        "neutral: One more neutral line here.", "free", 8, 2)
    assert [(u["kind"], u["target_emotion"]) for u in utts] == [
        ("emotional", "joy"), ("emotional", "fear"), ("neutral", "neutral"), ("neutral", "neutral")]
    assert parsing.parse_labels("1. Joy: 0.8\n2. Excitement (0.6)\n3. hope - 5/10\n"
                                "4. surprise: 30%\n5. Relief 0.2\n6. awe: 0.9", "free") == [
        ("joy", 0.8), ("excitement", 0.6), ("hope", 0.5), ("surprise", 0.3), ("relief", 0.2)]
    assert parsing.parse_text('{"context": "Line one.\nLine two of it."}', "json", "context", 3) \
        == "Line one. Line two of it."
    cut = '{"emotions":[{"emotion":"anger","level":0.6},{"emotion":"fear", "level": 1.0},{"emo'
    assert parsing.parse_labels(cut, "json") == [("anger", 0.6), ("fear", 1.0)]
    assert parsing.parse_text('Rewritten utterance: "I guess that is that."', "free",
                              "utterance", 2) == "I guess that is that."
    assert parsing.parse_text('Sure! Here is the text: It rained.  Then he left.', "free",
                              "context", 3) == "It rained. Then he left."
    for bad in ("", "   ", "{", '{"context": 3}', '["a"]'):
        with pytest.raises(ParseError):
            parsing.parse_text(bad, "json", "context", 1)
    with pytest.raises(ParseError):
        parsing.parse_utterances("Sure, here you go:", "free", 8, 2)


def test_repeated_utterances_are_kept_once():
    # recorded from the demo's 0.5B model under greedy decoding: one sentence, four emotions
    same = "I'm so sorry, but I can't believe that you're still alive."
    answer = json.dumps({"emotional": [{"emotion": e, "utterance": u} for e, u in [
        ("disappointment", same), ("disapproval", same), ("grief", "  i'm so SORRY, but I can't "
         "believe that you're still alive."), ("joy", "The cage is open at last!")]],
        "neutral": ["I should fetch the water before dark."]})
    utts = parsing.parse_utterances(answer, "json", 4, 1)
    assert [(u["target_emotion"], u["text"]) for u in utts] == [
        ("disappointment", same), ("joy", "The cage is open at last!"),
        ("neutral", "I should fetch the water before dark.")]


def test_schemas_bound_arrays_and_close_the_label_set():
    s = parsing.labels_schema()["properties"]["emotions"]
    assert s["maxItems"] == 5 and s["items"]["properties"]["emotion"]["enum"] == list(LABELS)
    assert parsing.characters_schema(7)["properties"]["characters"]["maxItems"] == 7
    u = parsing.utterances_schema(8, 2)["properties"]
    assert u["emotional"]["maxItems"] == 8 and u["neutral"]["maxItems"] == 2
    assert "neutral" not in u["emotional"]["items"]["properties"]["emotion"]["enum"]


def test_schemas_compile_to_llama_cpp_grammars():
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra")
    for schema in (parsing.labels_schema(), parsing.characters_schema(15),
                   parsing.utterances_schema(8, 2), parsing.text_schema("context")):
        g = llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        assert "root" in g._grammar


def test_label_processing_as_in_the_paper():
    r = process_labels([("anxiety", 0.7), ("Joy", 0.2), ("hope", 0.5), ("sassiness", 0.9),
                        ("fear", 0.3)], threshold=0.3)
    # off-taxonomy names mapped (anxiety -> nervousness, hope -> optimism), unknown dropped
    assert r.unmapped == ["sassiness"]
    assert [LABELS[i] for i in r.labels] == ["fear", "nervousness", "optimism"]  # >= 0.3 kept
    assert r.primary_emotion == "nervousness" and r.expressiveness == 0.7
    assert r.targets[LABEL_TO_ID["joy"]] == 0.0 and r.targets[LABEL_TO_ID["fear"]] == 0.3
    assert all(isinstance(d["score"], float) and isinstance(d["label"], str)
               for d in r.all_emotions + r.all_emotions_mapped)
    # the first answered emotion is primary only if it survives the threshold
    assert process_labels([("joy", 0.2), ("anger", 0.6)]).primary_emotion == "anger"
    # nothing left -> the example is dropped
    assert process_labels([("joy", 0.1), ("sassiness", 0.9)]).empty
    assert not process_labels([("joy", 0.1)], threshold=0.1).empty


def test_template_parroting_and_all_unmapped_label_answers_are_unparseable():
    # every answer of the demo's 0.5B model in free mode (80 of 80): the format's placeholder
    with pytest.raises(ParseError, match=r"^repeats the answer template \(emotion: 0\.5\)$"):
        parsing.parse_labels("emotion: 0.5\n" * 5, "free")
    # a recorded SmolLM2 answer: the placeholder line, then definitions without levels
    with pytest.raises(ParseError, match="repeats the answer template"):
        parsing.parse_labels(_recorded("free", "labels")[1], "free")
    with pytest.raises(ParseError, match=r"^no emotion of the taxonomy \(sassiness, glumness, "
                                         r"zest and 1 more\)$"):
        parsing.parse_labels("Sassiness: 0.7\nglumness: 0.4\nzest: 0.3\nvim: 0.2", "free")
    ungrammatical = json.dumps({"emotions": [{"emotion": "sassiness", "level": 0.5}]})
    with pytest.raises(ParseError, match=r"no emotion of the taxonomy \(sassiness\)"):
        parsing.parse_labels(ungrammatical, "json")
    # one usable name is enough: processing drops and reports the others
    pairs = parsing.parse_labels("emotion: 0.5\nsassiness: 0.6\nanxiety: 0.4", "free")
    assert pairs == [("emotion", 0.5), ("sassiness", 0.6), ("anxiety", 0.4)]
    processed = process_labels(pairs)
    assert [LABELS[i] for i in processed.labels] == ["nervousness"]
    assert processed.unmapped == ["emotion", "sassiness"]
    assert not any(parsing.canonical_label(n) for n in parsing.TEMPLATE_NAMES)


def test_unusable_label_answers_are_retried_then_rejected_never_stored(tmp_path):
    """Through the stage runner: retried at the retry temperature, then a reject with the
    reason; an answer that is fixed on retry is stored; no stored labelling is empty."""
    from data_gen import pipeline
    from data_gen.engine import ScriptedEngine
    from data_gen.store import Store

    def answer(req):
        retry = req.decoding.temperature > 0
        return {"u0": "emotion: 0.5\n" * 5,
                "u1": "Glumness: 0.9" if retry
                else "sassiness: 0.7",
                "u2": "joy: 0.8\nsassiness: 0.4" if retry else "level: 0.5",
                "u3": "anger: 0.6\nzest: 0.5"}[req.key]
    cfg = load_config(GenerateConfig, None, ["answer_mode=free", "max_retries=2",
                                             "progress=false"])
    items = [{"utterance_id": f"u{i}", "utterance": "I did not see that coming.",
              "character": "Ann"} for i in range(4)]
    store, rejects = Store(tmp_path / "labels.jsonl", "utterance_id"), \
        Store(tmp_path / "rejects.jsonl", "id")
    eng = ScriptedEngine(answer)
    summary = pipeline.run_stage(STAGES["labels"], items, eng, cfg, store, rejects)
    assert (summary["answered"], summary["rejected"]) == (2, 2)
    assert [len(c) for c in eng.calls] == [4, 3, 2]   # u0, u1, u2 retried; u2 fixed once
    assert rejects.get("labels:u0")["reason"] == \
        "unparseable: repeats the answer template (emotion: 0.5)"
    assert rejects.get("labels:u1")["reason"] == "unparseable: no emotion of the taxonomy " \
        "(glumness)" and rejects.get("labels:u1")["attempts"] == 3
    assert store.get("u2")["attempts"] == 2 and store.get("u2")["emotions"][0] == ["joy", 0.8]
    assert store.get("u3")["emotions"] == [["anger", 0.6], ["zest", 0.5]]
    assert all(not process_labels([tuple(p) for p in r["emotions"]]).empty for r in store)
