"""Prediction from an exported folder (real MiniLM) and from a checkpoint; the CLI."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from _tiny_hf import make_tiny, save_params_checkpoint
from emopillars_jax import cli
from emopillars_jax.assets import resolve
from emopillars_jax.errors import EmoPillarsError
from emopillars_jax.export import export_model
from emopillars_jax.models import load_encoder
from emopillars_jax.predict import Predictor, read_inputs
from emopillars_jax.taxonomy import LABELS

TEXTS = ["I can't stop smiling, we actually won the championship!",
         "Ugh.",
         "My grandmother passed away last night and I keep thinking about all the summers we "
         "spent together at her house by the lake, and how I never called her enough.",
         "Could you explain again how the new scheduling system is supposed to work?",
         "Thanks a lot for covering my shift, you saved me.",
         "Get out of my room right now!"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model, _ = load_encoder("minilm-l6", seed=5)
    out = tmp_path_factory.mktemp("minilm") / "model"
    return export_model(model, out, tokenizer_folder=resolve("minilm-l6"), threshold=0.5)


def test_predict_real_text_matches_torch_and_is_order_independent(exported):
    predictor = Predictor.from_path(exported, batch_size=4)
    results = predictor.predict(TEXTS)
    assert len(results) == len(TEXTS)
    probs = np.array([[r["scores"][name] for name in LABELS] for r in results])
    # the same probabilities as transformers + torch on the exported folder
    tok = transformers.AutoTokenizer.from_pretrained(exported)
    torch_model = transformers.AutoModelForSequenceClassification.from_pretrained(exported)
    with torch.no_grad():
        logits = torch_model(**tok(TEXTS, padding=True, return_tensors="pt")).logits
    np.testing.assert_allclose(probs, torch.sigmoid(logits).numpy(), atol=1e-4)
    # sorting, bucketing and batch filling do not change any row
    single = [Predictor.predict(predictor, [t])[0]["scores"] for t in TEXTS[::-1]][::-1]
    np.testing.assert_allclose(probs, [[s[n] for n in LABELS] for s in single], atol=1e-5)
    for r in results:
        assert r["labels"] == [n for n in LABELS if r["scores"][n] >= 0.5]
    everything = predictor.predict(TEXTS[:2], threshold=0.0)
    assert all(r["labels"] == list(LABELS) for r in everything)


def test_predict_cli_text_and_files(exported, tmp_path, capsys):
    assert cli.main(["predict", str(exported), "--text", TEXTS[0], "--text", TEXTS[1]]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 2 and "top:" in out
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    preds = tmp_path / "preds.jsonl"
    assert cli.main(["predict", str(exported), "--file", str(jsonl), "--out", str(preds),
                     "--threshold", "0.3"]) == 0
    assert "wrote 6 predictions" in capsys.readouterr().out
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    assert all(r["labels"] == [n for n in LABELS if r["scores"][n] >= 0.3] for r in rows)
    table = tmp_path / "in.csv"
    with open(table, "w", newline="") as fh:
        writer = csv.DictWriter(fh, ["text", "context"])
        writer.writeheader()
        writer.writerows({"text": t, "context": ""} for t in TEXTS[:3])
    assert cli.main(["predict", str(exported), "--file", str(table)]) == 0
    assert capsys.readouterr().out.count("\n") == 3


def test_predict_input_errors(exported, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"utterance": ""}\n')
    with pytest.raises(EmoPillarsError, match=r"bad.jsonl:2: expected a non-empty 'text'"):
        read_inputs(bad)
    bad.write_text('{"text": "fine"}\n\n{"text": "hi", "context": 5}\n')
    with pytest.raises(EmoPillarsError, match=r"bad.jsonl:3: 'context' must be a string, got int"):
        read_inputs(bad)
    bad.write_bytes(b'{"text": "\xd0\xff"}\n')
    with pytest.raises(EmoPillarsError, match=r"bad.jsonl: not UTF-8 text"):
        read_inputs(bad)
    table = tmp_path / "bad.csv"
    table.write_text("text,context\nfine,\n,no text\n")
    with pytest.raises(EmoPillarsError, match=r"bad.csv:3: expected a non-empty 'text'"):
        read_inputs(table)
    assert cli.main(["predict", str(exported)]) == 1
    assert "give --text" in capsys.readouterr().err
    assert cli.main(["predict", str(tmp_path / "missing"), "--text", "hi"]) == 1
    assert "not found" in capsys.readouterr().err


def test_contextual_prediction_from_checkpoint(tmp_path, caplog):
    src = make_tiny(tmp_path / "src", "roberta", num_labels=28)
    model, _ = load_encoder(str(src), token_types=2)
    ckpt = save_params_checkpoint(model, tmp_path / "run" / "checkpoints", {
        "model_path": str(src), "threshold": 0.5, "input_mode": "contextual"})
    from_ckpt = Predictor.from_path(ckpt)
    contexts = ["after years of saving she opened her bakery", None]
    texts = ["she finally said yes", "she finally said yes"]
    results = from_ckpt.predict(texts, contexts)
    with_ctx, without = (np.array(list(r["scores"].values())) for r in results)
    assert not np.allclose(with_ctx, without)   # the context reaches the model
    # the run folder works as well as its checkpoints/; no context at all gets a warning
    from_run = Predictor.from_path(tmp_path / "run")
    with caplog.at_level("WARNING"):
        alone = from_run.predict(texts[1:])
    np.testing.assert_allclose(list(alone[0]["scores"].values()), without, atol=1e-6)
    assert "trained with a context" in caplog.text
    out = export_model(model, tmp_path / "out", tokenizer_folder=src, input_mode="contextual")
    again = Predictor.from_path(out).predict(texts, contexts)
    for a, b in zip(results, again):
        np.testing.assert_allclose(list(a["scores"].values()), list(b["scores"].values()),
                                   atol=1e-5)


def test_predict_file_resumes_after_interruption(exported, tmp_path, capsys):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    out = tmp_path / "preds.jsonl"
    # two finished records (marked, to see they are kept) and a torn third line
    kept = [json.dumps({"text": t, "scores": {}, "labels": ["kept"]}) for t in TEXTS[:2]]
    out.write_text("\n".join(kept) + "\n" + '{"text": "My grand')
    assert cli.main(["predict", str(exported), "--file", str(jsonl), "--out", str(out)]) == 0
    assert "2 predictions already there" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    assert [r["labels"] for r in rows[:2]] == [["kept"], ["kept"]]
    assert all(len(r["scores"]) == 28 for r in rows[2:])
    # an output file of other inputs is refused, not appended to
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"text": "something else", "scores": {}, "labels": []}) + "\n")
    assert cli.main(["predict", str(exported), "--file", str(jsonl), "--out", str(other)]) == 1
    assert "is not a prediction for input 1" in capsys.readouterr().err


def test_predict_out_must_be_a_prediction_file_other_than_the_input(exported, tmp_path,
                                                                     capsys):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    before = jsonl.read_bytes()
    assert cli.main(["predict", str(exported), "--file", str(jsonl), "--out", str(jsonl)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the same file as --file" in err
    assert jsonl.read_bytes() == before
    # lines that are not this command's records (and a last line without a newline, which
    # is no torn record of ours either): refused, the file left as it was
    for content in ("not json\n", json.dumps({"text": TEXTS[0]}) + "\n",
                    '{"text": "x", "scores": {}, "labels": []}\nsome notes'):
        out = tmp_path / "notes.txt"
        out.write_text(content)
        assert cli.main(["predict", str(exported), "--file", str(jsonl), "--out",
                         str(out)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not a prediction record" in err, err
        assert f"{out}:" in err and out.read_text() == content
    out.write_bytes(b"\xff\xfe\x00\n")
    assert cli.main(["predict", str(exported), "--file", str(jsonl), "--out", str(out)]) == 1
    assert "notes.txt: not UTF-8 text" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiny")
    model, _ = load_encoder(str(make_tiny(tmp / "src", "bert", num_labels=28)))
    return export_model(model, tmp / "model", tokenizer_folder=tmp / "src")


def test_predict_names_the_damaged_file_of_an_exported_folder(tiny_exported, tmp_path, capsys):
    assert Predictor.from_path(tiny_exported).predict(["hi"])   # the intact folder works
    for name, damage in (("tokenizer.json", b"garbage"), ("model.safetensors", None),
                         ("tokenizer_config.json", b"{")):
        folder = tmp_path / name
        shutil.copytree(tiny_exported, folder)
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(damage if damage is not None else data[:len(data) // 2])
        assert cli.main(["predict", str(folder), "--text", "hi"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{folder / name}: " in err, err
    # neither an exported folder nor a checkpoints folder: said so, not "no checkpoints"
    no_config = tmp_path / "no_config"
    shutil.copytree(tiny_exported, no_config)
    (no_config / "config.json").unlink()
    for path in (no_config, no_config / "model.safetensors"):
        with pytest.raises(EmoPillarsError, match="neither an exported model folder "
                                                  r"\(with config.json\) nor a training run"):
            Predictor.from_path(path)


def test_cli_keeps_compilations_on_disk_unless_turned_off(exported, tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    command = [sys.executable, "-m", "emopillars_jax.cli", "predict", str(exported),
               "--text", TEXTS[0]]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
    cached = list((tmp_path / "cache" / "emopillars" / "xla").iterdir())
    assert any(f.name.startswith("jit_") for f in cached)
    off = {**env, "XDG_CACHE_HOME": str(tmp_path / "other"), "JAX_COMPILATION_CACHE_DIR": ""}
    subprocess.run(command, env=off, check=True, capture_output=True, timeout=300)
    assert not (tmp_path / "other").exists()


def _kernel_dtypes(model) -> set[str]:
    import jax
    from flax import nnx
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model))
    return {str(leaf.dtype) for path, leaf in leaves if "kernel" in jax.tree_util.keystr(path)}


def test_int8_prediction_on_real_minilm_stays_close_to_float32(exported, capsys):
    full = Predictor.from_path(exported, batch_size=4)
    quantized = Predictor(full.model, full.tokenizer, full.labels, batch_size=4,
                          max_length=full.max_length, quantize="int8")
    # the encoder's dense kernels are int8 now; the head and the source model stay float32
    assert "int8" in _kernel_dtypes(quantized.model)
    assert _kernel_dtypes(full.model) == {"float32"}
    assert str(quantized.model.head.classifier.kernel.dtype) == "float32"
    p32, p8 = full.probabilities(TEXTS), quantized.probabilities(TEXTS)
    diff = np.abs(p32 - p8)
    assert diff.max() > 0          # it did quantize
    assert diff.max() < 0.02       # measured ~2e-3 on this model
    # the same ranking of labels for every text, near-ties aside
    for row32, row8 in zip(p32, p8):
        top = np.argsort(-row32)[:3]
        assert set(top) & set(np.argsort(-row8)[:5]) == set(top)
    assert cli.main(["predict", str(exported), "--text", TEXTS[0], "--quantize", "int8"]) == 0
    assert "top:" in capsys.readouterr().out
    with pytest.raises(EmoPillarsError, match="quantize: expected one of none, int8"):
        Predictor.from_path(exported, quantize="int4")


def test_int8_prediction_on_roberta_with_context(tmp_path):
    src = make_tiny(tmp_path / "src", "roberta", num_labels=28)
    model, _ = load_encoder(str(src), token_types=2)
    out = export_model(model, tmp_path / "out", tokenizer_folder=src, input_mode="contextual")
    contexts = ["after years of saving she opened her bakery", None]
    texts = ["she finally said yes", "she finally said yes"]
    p32 = Predictor.from_path(out).probabilities(texts, contexts)
    p8 = Predictor.from_path(out, quantize="int8").probabilities(texts, contexts)
    assert 0 < np.abs(p32 - p8).max() < 0.02
    assert not np.allclose(p8[0], p8[1])   # the context still reaches the quantized model
