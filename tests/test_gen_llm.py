"""Real llama.cpp runs with the packaged SmolLM2-135M-Instruct GGUF (small and weak, so the
tests check structure and consistency, not quality)."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_gen import parsing, pipeline
from data_gen.config import Decoding, GenerateConfig, LLMConfig
from data_gen.engine import Request, open_engine
from emopillars_jax.config import load_config
from emopillars_jax.errors import AssetError
from data_gen.stages import STAGES

pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional extra (.[gen])")
MODEL = "smollm2-135m"
TINY = ["llm.model=smollm2-135m", "llm.n_threads=1", "llm.n_ctx=1536", "llm.n_seq=4",
        "corpus.max_plots=1", "max_characters=2", "utterances_non_neutral=1",
        "utterances_neutral=1", "context_fraction=1.0", "max_retries=1", "progress=false",
        "decoding.characters.max_tokens=100", "decoding.utterances.max_tokens=200",
        "decoding.labels.max_tokens=100", "decoding.context.max_tokens=120",
        "decoding.cleaning.max_tokens=120", "decoding.rewriting.max_tokens=60"]


@pytest.fixture()
def batched():
    return open_engine(LLMConfig(model=MODEL, n_ctx=1024, n_threads=1, engine="batched", n_seq=4))


def _requests():
    msgs = [({"role": "user", "content": f"Name {k} animals of the {w}."},)
            for k, w in ((3, "sea"), (2, "desert"), (4, "forest"))]
    d = Decoding(max_tokens=40)
    schema = parsing.labels_schema()
    return ([Request(f"t{i}", m, d) for i, m in enumerate(msgs)] +
            [Request(f"j{i}", ({"role": "user", "content": f"Which emotions does '{t}' show?"},),
                     Decoding(max_tokens=80), schema)
             for i, t in enumerate(("I won the prize!", "Leave me alone.", "Where is it?"))])


def test_batched_engine_is_deterministic_and_grammar_answers_parse(batched):
    # llama.cpp kernels are not batch-invariant, so each call starts from an empty cache:
    # the same requests get the same answers whatever the engine answered before
    reqs = _requests()
    finished = []
    first = batched.generate(reqs, on_done=finished.append)
    assert sorted(finished) == list(range(len(reqs)))   # progress: each answer once
    batched.generate(reqs[3:] + reqs[:1])                # other batches, other cached prefixes
    assert [c.text for c in batched.generate(reqs)] == [c.text for c in first]
    fresh = open_engine(LLMConfig(model=MODEL, n_ctx=1024, n_threads=1, engine="batched",
                                  n_seq=4))
    assert [c.text for c in first] == [c.text for c in fresh.generate(reqs)]
    for req, c in zip(reqs, first):
        assert c.n_prompt > 0 and 0 < c.n_generated <= req.decoding.max_tokens
        if req.schema is not None and c.finish == "stop":
            assert parsing.parse_labels(c.text, "json")   # grammar: always valid JSON


def test_single_engine_answers_the_same_requests(batched):
    single = open_engine(LLMConfig(model=MODEL, n_ctx=1024, n_threads=1, engine="single"))
    reqs = _requests()
    one = single.generate(reqs)
    many = batched.generate(reqs)
    for req, a, b in zip(reqs, one, many):
        assert a.n_prompt == b.n_prompt          # same chat template and tokenisation
    # same sampler chain: greedy answers start alike (float noise may flip near-ties later)
    same_start = sum(a.text.split()[:2] == b.text.split()[:2] for a, b in zip(one, many))
    print("single vs batched:", [(a.text[:40], b.text[:40]) for a, b in zip(one, many)])
    assert same_start >= len(reqs) // 2
    assert single.describe()["model_sha256"] == batched.describe()["model_sha256"]


def test_too_long_prompt_is_a_per_request_error(batched):
    long = Request("x", ({"role": "user", "content": "word " * 1200},), Decoding(max_tokens=10))
    (c,) = batched.generate([long])
    assert c.finish == "error" and "exceeds the context" in c.error


def test_gguf_without_chat_template_is_refused(tmp_path):
    from emopillars_jax.assets import resolve
    src = resolve(MODEL, kind="gguf")
    data = bytearray(src.read_bytes())
    key = b"tokenizer.chat_template"
    at = data.find(key)
    assert at > 0
    data[at:at + len(key)] = b"tokenizer.chat_templatX"   # same length: a valid GGUF
    base = tmp_path / "base.gguf"
    base.write_bytes(bytes(data))
    with pytest.raises(AssetError, match="not a chat model"):
        open_engine(LLMConfig(model=str(base), n_ctx=512, n_threads=1, engine="single"))


def test_truncated_gguf_gets_llama_cpps_reason_in_one_line(tmp_path, capfd):
    from emopillars_jax.assets import resolve
    from emopillars_jax.errors import EmoPillarsError
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(resolve(MODEL, kind="gguf").read_bytes()[:1000])
    with pytest.raises(EmoPillarsError) as err:
        open_engine(LLMConfig(model=str(cut), n_ctx=512, n_threads=1, engine="single"))
    msg = str(err.value)
    assert "\n" not in msg and str(cut) in msg and "failed to read" in msg
    assert "llama_model_load" not in capfd.readouterr().err   # the loader log stayed hidden


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """One uninterrupted six-stage run on one plot (shared by the tests below)."""
    out = tmp_path_factory.mktemp("llm") / "run"
    pipeline.generate(load_config(GenerateConfig, None, [f"out_dir={out}", *TINY]))
    return out


def test_all_six_stages_on_one_plot(tiny_run):
    stages = tiny_run / "stages"
    rejects = [json.loads(line) for line in (stages / "rejects.jsonl").read_text().splitlines()] \
        if (stages / "rejects.jsonl").exists() else []
    manifest = json.loads((stages / "manifest.json").read_text())
    assert manifest["complete"] and manifest["provenance"]["model"].endswith(".gguf")
    attempted = {name for name, st in manifest["stages"].items() if st["new"]}
    # the LLM was asked in every stage that had inputs; every input got a record or a reject
    assert {"characters", "utterances", "labels"} <= attempted
    for name, st in manifest["stages"].items():
        assert st["answered"] + st["rejected"] == st["new"], name
        rows = [json.loads(line) for line in (stages / f"{name}.jsonl").read_text().splitlines()] \
            if (stages / f"{name}.jsonl").exists() else []
        assert len(rows) == st["answered"]
        for r in rows:
            assert r["raw"] and r[STAGES[name].key]
    assert all(r["reason"] for r in rejects)
    ds = tiny_run / "dataset"
    for kind in ("contextless", "contextual"):
        for split in pipeline.SPLITS:
            assert (ds / kind / f"{split}.jsonl").exists()
    for line in (ds / "contextless" / "train.jsonl").read_text().splitlines():
        r = json.loads(line)
        assert r["labels"] and r["provenance"]["model_sha256"] == manifest["provenance"]["model_sha256"]


RUN_GENERATE = """import sys
from data_gen import pipeline
from data_gen.config import GenerateConfig
from emopillars_jax.config import load_config
pipeline.generate(load_config(GenerateConfig, None, sys.argv[1:]))
"""


def test_sigkill_and_resume_reproduce_the_uninterrupted_run(tiny_run, tmp_path):
    # llama.cpp's answers depend on the batch they are decoded in and on the prompt prefixes
    # it reuses from its cache; a resumed run must still give byte-identical records
    out = tmp_path / "killed"
    # kill when a stage's file appears, i.e. while the next stage runs (once in labels, once
    # later: the second run may finish first when no label calls for a context)
    for stage in ("utterances", "labels"):
        proc = subprocess.Popen([sys.executable, "-c", RUN_GENERATE, f"out_dir={out}", *TINY])
        marker = out / "stages" / f"{stage}.jsonl"
        deadline = time.time() + 600
        while proc.poll() is None and not marker.exists() and time.time() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        else:
            assert stage == "labels" and proc.returncode == 0, f"run ended before {stage}"
        proc.wait()
    pipeline.generate(load_config(GenerateConfig, None, [f"out_dir={out}", *TINY]))

    def records(run: Path) -> dict[str, list[str]]:
        files = sorted((run / "stages").glob("*.jsonl")) + sorted((run / "dataset").rglob("*.jsonl"))
        return {str(f.relative_to(run)): sorted(f.read_text().splitlines()) for f in files}

    assert records(out) == records(tiny_run)


def test_template_without_system_role_gets_the_system_prompt_folded_in(tmp_path):
    # the shape of Mistral-7B-Instruct-v0.2's template: alternating user/assistant only
    template = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
                "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
                "{% elif m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
                "{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}")
    eng = open_engine(LLMConfig(model=MODEL, n_ctx=512, n_threads=1, engine="batched", n_seq=2,
                                chat_format=template))
    msgs = ({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"})
    text = eng.llm.detokenize(eng.tokenize_prompt(msgs)).decode()
    assert "[INST] Be brief.\n\nHi? [/INST]" in text
    (c,) = eng.generate([Request("x", msgs, Decoding(max_tokens=5))])
    assert c.finish != "error" and c.n_generated > 0
