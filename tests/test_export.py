"""Export NNX -> Hugging Face folder, proven by transformers + PyTorch on the same inputs."""
import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file

from _tiny_hf import make_tiny, save_params_checkpoint
from emopillars_jax import cli
from emopillars_jax.assets import resolve
from emopillars_jax.errors import EmoPillarsError
from emopillars_jax.export import export_model, verify_export
from emopillars_jax.models import load_encoder
from emopillars_jax.taxonomy import LABELS

TEXTS = ["she finally said yes", "i am so happy today", "the train leaves at nine"]


def perturb(model, seed=0):
    """Make every parameter differ from the checkpoint, so export must carry our values."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    keys = iter(jax.random.split(jax.random.key(seed), len(jax.tree.leaves(params))))
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(next(keys), x.shape), params)
    return nnx.merge(graphdef, params, rest)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_export_roundtrip_through_torch(family, tmp_path):
    src = make_tiny(tmp_path / "src", family, num_labels=28)
    model, cfg = load_encoder(str(src), token_types=2)
    model = perturb(model)
    out = export_model(model, tmp_path / "out", tokenizer_folder=src, threshold=0.36,
                       metrics={"dev macro-F1": 0.41}, training_data="Emo Pillars (test)")
    config = json.loads((out / "config.json").read_text())
    # the weights are as readable as the other files (safetensors alone writes 0600)
    assert (out / "model.safetensors").stat().st_mode == (out / "config.json").stat().st_mode
    assert config["architectures"] == [f"{family.capitalize()}ForSequenceClassification"]
    assert config["problem_type"] == "multi_label_classification"
    assert [config["id2label"][str(i)] for i in range(28)] == list(LABELS)
    assert config["label2id"]["neutral"] == 27 and config["threshold"] == 0.36
    assert config["type_vocab_size"] == 2
    card = (out / "README.md").read_text()
    assert "pipeline(" in card and "0.36" in card and "0.4100" in card and "grief" in card
    # NNX -> torch: the exported file gives the (perturbed) JAX logits, also for pairs
    contexts = ["after years of saving", None, "tom waited on the empty platform"]
    assert verify_export(out, model, TEXTS, contexts) <= 1e-4
    # torch -> NNX: loading the export back gives the same model
    again, _ = load_encoder(str(out))
    ids = jnp.asarray(np.array([[2, 9, 14, 30, 3]]) if family == "bert" else
                      np.array([[0, 9, 14, 30, 2]]))
    mask = jnp.ones_like(ids)
    np.testing.assert_allclose(np.asarray(again(ids, mask)), np.asarray(model(ids, mask)),
                               atol=1e-6)


def test_bf16_export_and_mismatch_detection(tmp_path):
    src = make_tiny(tmp_path / "src", "bert", num_labels=28)
    model, _ = load_encoder(str(src))
    out = export_model(perturb(model), tmp_path / "out", tokenizer_folder=src, dtype="bfloat16")
    tensors = load_file(out / "model.safetensors")
    assert {v.dtype for v in tensors.values()} == {np.dtype(ml_dtypes.bfloat16)}
    # the file holds other weights than `model` (unperturbed): verification must fail
    with pytest.raises(EmoPillarsError, match="PyTorch logits differ from JAX"):
        verify_export(out, model, TEXTS)


def test_real_minilm_export_and_pipeline(tmp_path):
    model, _ = load_encoder("minilm-l6", seed=2)
    out = export_model(model, tmp_path / "minilm", tokenizer_folder=resolve("minilm-l6"))
    texts = ["Thank you, this made my whole week!", "I am terrified of what comes next.",
             "Ok."]
    assert verify_export(out, model, texts) <= 1e-4
    clf = transformers.pipeline("text-classification", model=str(out), top_k=None)
    scores = clf(texts)
    assert len(scores) == 3 and len(scores[0]) == 28
    # pipeline's probabilities are the sigmoid of the JAX logits
    from emopillars_jax.tokenization import Tokenizer
    batch = Tokenizer.from_folder(out)(texts)
    logits = np.asarray(model(*(jnp.asarray(batch[k]) for k in
                                ("input_ids", "attention_mask", "token_type_ids"))))
    for row, result in zip(logits, scores):
        got = {s["label"]: s["score"] for s in result}
        want = 1 / (1 + np.exp(-row))
        np.testing.assert_allclose([got[name] for name in LABELS], want, atol=1e-4)


def test_export_cli_from_checkpoint_with_verify(tmp_path, capsys):
    src = make_tiny(tmp_path / "src", "roberta", num_labels=28)
    model, _ = load_encoder(str(src), token_types=2)
    model = perturb(model, seed=4)
    save_params_checkpoint(model, tmp_path / "run" / "checkpoints", {
        "model_path": str(src), "threshold": 0.3, "input_mode": "contextual",
        "metrics": {"dev_macro_f1": 0.5}}, step=7)
    out = tmp_path / "exported"
    # the run folder stands for its checkpoints/
    assert cli.main(["export", str(tmp_path / "run"), str(out), "--verify"]) == 0
    assert "verified" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["threshold"] == 0.3 and config["input_mode"] == "contextual"
    torch_model = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        ids = torch.tensor([[0, 9, 14, 2, 2, 30, 2]])
        types = torch.tensor([[0, 0, 0, 0, 0, 1, 1]])
        want = torch_model(input_ids=ids, token_type_ids=types).logits.numpy()
    got = model(jnp.asarray(ids.numpy()), jnp.ones((1, 7), jnp.int32),
                jnp.asarray(types.numpy()))
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)


def test_export_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path / "nope"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint folder not found" in err
    (tmp_path / "empty").mkdir()
    assert cli.main(["export", str(tmp_path / "empty"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no checkpoints" in err
