"""NNX encoders against transformers + torch: tiny random BERT/RoBERTa and the real MiniLM."""
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file

from _tiny_hf import make_tiny
from emopillars_jax.assets import resolve
from emopillars_jax.errors import AssetError, ConfigError
from emopillars_jax.models import EncoderConfig, load_encoder
from emopillars_jax.models.hf_weights import TABLES, nnx_to_hf_name
from emopillars_jax.tokenization import Tokenizer, padded_length

LOGICAL = {"vocab", "embed", "heads", "mlp", "labels", None}


@pytest.fixture(scope="module", params=["bert", "roberta"])
def tiny(request, tmp_path_factory):
    return request.param, make_tiny(tmp_path_factory.mktemp(request.param), request.param)


def random_batch(pad_id, vocab, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (3, 13))
    mask = np.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = pad_id
    return ids, mask


def torch_logits(folder, ids, mask, types=None):
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        kwargs = {} if types is None else {"token_type_ids": torch.tensor(types)}
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     **kwargs).logits.numpy()


def test_tiny_logits_equal_transformers(tiny):
    family, folder = tiny
    model, cfg = load_encoder(str(folder), num_labels=5)
    assert cfg.family == family
    ids, mask = random_batch(cfg.pad_token_id, cfg.vocab_size)
    types = (np.arange(13)[None] >= 6).astype(np.int64) * mask if family == "bert" else None
    want = torch_logits(folder, ids, mask, types)
    got = model(jnp.asarray(ids), jnp.asarray(mask),
                None if types is None else jnp.asarray(types))
    assert got.dtype == jnp.float32 and got.shape == (3, 5)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_first_token_only_last_layer_equals_full_encoder(tiny):
    # the classifier path computes the last layer for position 0 only
    family, folder = tiny
    model, cfg = load_encoder(str(folder), num_labels=5)
    ids, mask = map(jnp.asarray, random_batch(cfg.pad_token_id, cfg.vocab_size, seed=3))
    full = model.encode(ids, mask)
    first = model.encode(ids, mask, first_token_only=True)
    assert full.shape == (3, 13, cfg.hidden_size) and first.shape == (3, 1, cfg.hidden_size)
    np.testing.assert_allclose(np.asarray(first[:, 0]), np.asarray(full[:, 0]), atol=1e-6)


def test_pytorch_bin_checkpoint(tmp_path):
    folder = make_tiny(tmp_path / "p", "bert")
    state = {k: torch.from_numpy(v) for k, v in load_file(folder / "model.safetensors").items()}
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    model, cfg = load_encoder(str(folder), num_labels=5)
    ids, mask = random_batch(0, cfg.vocab_size)
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(ids), jnp.asarray(mask))),
                               torch_logits(folder, ids, mask), atol=1e-5)


def test_every_parameter_has_logical_axes_and_a_table_row(tiny):
    family, folder = tiny
    model, _ = load_encoder(str(folder), num_labels=5)
    flat = list(nnx.to_flat_state(nnx.state(model, nnx.Param)))
    hf_names = set()
    for path, var in flat:
        axes = var.get_metadata()["out_sharding"]
        assert len(axes) == var.get_value().ndim and set(axes) <= LOGICAL, path
        hf_names.add(nnx_to_hf_name(family, path)[0])
    assert hf_names == set(load_file(folder / "model.safetensors"))  # a bijection
    assert len(TABLES[family]) < 20


def test_roberta_grows_token_types_for_context(tmp_path, caplog):
    folder = make_tiny(tmp_path / "r", "roberta")
    with caplog.at_level(logging.INFO):
        model, cfg = load_encoder(str(folder), num_labels=5, token_types=2)
    assert "grew token-type embedding" in caplog.text and cfg.type_vocab_size == 2
    table = np.asarray(model.embeddings.token_type.embedding.get_value())
    np.testing.assert_array_equal(table[0], table[1])
    ids, mask = random_batch(cfg.pad_token_id, cfg.vocab_size)
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(ids), jnp.asarray(mask))),
                               torch_logits(folder, ids, mask), atol=1e-5)


def test_base_model_gets_new_head_and_says_so(tmp_path, caplog):
    folder = make_tiny(tmp_path / "b", "bert", head=False)
    with caplog.at_level(logging.INFO):
        model, cfg = load_encoder(str(folder), num_labels=7, seed=3)
    assert "initialised a new bert head" in caplog.text
    assert model.head.classifier.kernel.get_value().shape == (32, 7)
    # the pooler comes from the checkpoint, not from the fresh head
    pooler = load_file(folder / "model.safetensors")["pooler.dense.weight"]
    np.testing.assert_array_equal(np.asarray(model.head.pooler.kernel.get_value()), pooler.T)


def test_missing_tensor_is_named(tmp_path):
    folder = make_tiny(tmp_path / "m", "bert")
    tensors = load_file(folder / "model.safetensors")
    del tensors["bert.encoder.layer.1.attention.self.key.weight"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(AssetError, match=r"missing tensor\(s\) bert\.encoder\.layer\.1\."
                                         r"attention\.self\.key\.weight"):
        load_encoder(str(folder), num_labels=5)


def test_shape_mismatch_is_named(tmp_path):
    folder = make_tiny(tmp_path / "s", "roberta")
    tensors = load_file(folder / "model.safetensors")
    name = "roberta.encoder.layer.0.intermediate.dense.weight"
    tensors[name] = tensors[name][:30]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(AssetError, match=rf"{name} has shape \(30, 32\).*\(37, 32\)"):
        load_encoder(str(folder), num_labels=5)


def test_head_for_other_labels_is_replaced(tiny, caplog):
    _, folder = tiny
    with caplog.at_level(logging.INFO):
        model, cfg = load_encoder(str(folder), num_labels=28)
    assert cfg.num_labels == 28 and "initialised a new" in caplog.text


def test_config_errors(tiny):
    family, folder = tiny
    hf = json.loads((folder / "config.json").read_text())
    with pytest.raises(ConfigError, match="position_embedding_type"):
        EncoderConfig.from_hf({**hf, "position_embedding_type": "relative_key"})
    with pytest.raises(ConfigError, match="missing field 'hidden_size'"):
        EncoderConfig.from_hf({k: v for k, v in hf.items() if k != "hidden_size"})
    other = "roberta" if family == "bert" else "bert"
    with pytest.raises(ConfigError, match="model.head"):
        load_encoder(str(folder), head=other)


def test_dropout_bf16_and_remat(tmp_path):
    folder = make_tiny(tmp_path / "d", "bert")
    ids, mask = map(jnp.asarray, random_batch(0, 60))
    model, _ = load_encoder(str(folder), num_labels=5)
    ref = model(ids, mask)
    np.testing.assert_array_equal(np.asarray(model(ids, mask)), np.asarray(ref))
    train1, train2 = model(ids, mask, deterministic=False), model(ids, mask, deterministic=False)
    assert not np.allclose(train1, ref) and not np.allclose(train1, train2)
    no_drop, _ = load_encoder(str(folder), num_labels=5, dropout=0.0)
    np.testing.assert_allclose(np.asarray(no_drop(ids, mask, deterministic=False)),
                               np.asarray(ref), atol=1e-6)
    bf16, _ = load_encoder(str(folder), num_labels=5, dtype="bfloat16")
    out = bf16(ids, mask)
    assert out.dtype == jnp.float32
    assert bf16.layers[0].query.kernel.get_value().dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=5e-2)

    def grads(m):
        return nnx.grad(lambda m: m(ids, mask).sum())(m)
    remat, _ = load_encoder(str(folder), num_labels=5, remat=True)
    for a, b in zip(jax.tree.leaves(grads(model)), jax.tree.leaves(grads(remat))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


# ------------------------------------------------------------------ real all-MiniLM-L6-v2

@pytest.fixture(scope="module")
def minilm():
    return resolve("minilm-l6", kind="encoder")


def test_minilm_embeddings_and_logits_equal_transformers(minilm, tmp_path):
    texts = ["I can't believe you remembered my birthday!",
             "The meeting was moved to Thursday afternoon.",
             "Why does this keep happening to me every single time I try?"]
    hf_tok = transformers.AutoTokenizer.from_pretrained(minilm)
    enc = hf_tok(texts, padding=True, return_tensors="np")
    base = transformers.AutoModel.from_pretrained(minilm).eval()
    with torch.no_grad():
        hidden = base(**{k: torch.tensor(v) for k, v in enc.items()}).last_hidden_state.numpy()
    m = enc["attention_mask"][..., None]
    want = (hidden * m).sum(1) / m.sum(1)
    model, cfg = load_encoder("minilm-l6")
    assert (cfg.family, cfg.num_layers, cfg.hidden_size) == ("bert", 6, 384)
    args = [jnp.asarray(enc[k]) for k in ("input_ids", "attention_mask", "token_type_ids")]
    np.testing.assert_allclose(np.asarray(model.embed(*args)), want, atol=1e-4)
    # a classifier on the real weights: transformers initialises it, we load it
    torch.manual_seed(1)
    clf = transformers.AutoModelForSequenceClassification.from_pretrained(
        minilm, num_labels=28, problem_type="multi_label_classification").eval()
    clf.save_pretrained(tmp_path)
    with torch.no_grad():
        want_logits = clf(**{k: torch.tensor(v) for k, v in enc.items()}).logits.numpy()
    model, _ = load_encoder(str(tmp_path))
    np.testing.assert_allclose(np.asarray(model(*args)), want_logits, atol=1e-4)


def test_tokenizer_pairs_types_and_per_batch_padding(minilm):
    tok = Tokenizer.from_folder(minilm)
    hf_tok = transformers.AutoTokenizer.from_pretrained(minilm)
    texts = ["I knew it!", "She smiled and said nothing at all for a long while."]
    contexts = ["The exam results came out this morning.", None]
    batch = tok(texts, contexts, buckets=[16, 32, 64])
    assert batch["input_ids"].dtype == np.int32 and batch["input_ids"].shape == (2, 16)
    want = hf_tok(contexts[0], texts[0])
    n = len(want["input_ids"])
    assert batch["input_ids"][0, :n].tolist() == want["input_ids"]
    assert batch["token_type_ids"][0, :n].tolist() == want["token_type_ids"]
    assert 1 in want["token_type_ids"] and batch["token_type_ids"][1].sum() == 0
    assert batch["attention_mask"][0].sum() == n
    # the packaged tokenizer.json pads to 128; ours pads per batch
    assert tok(["short"], multiple=8)["input_ids"].shape == (1, 8)
    long = tok(["word " * 300], max_length=40)
    assert long["input_ids"].shape == (1, 40) and long["input_ids"][0, -1] == 102   # [SEP]
    assert padded_length(33, buckets=[16, 32, 64]) == 64
    assert padded_length(70, buckets=[16, 32, 64], multiple=8) == 72
    assert padded_length(70, buckets=[16, 32, 64], max_length=64) == 64
