"""BERT-family encoders (BERT, MiniLM, RoBERTa) in Flax NNX, numerically equal to transformers.

Parameters are float32; `dtype` sets the compute dtype (bf16 halves activation memory). Every
parameter carries logical axis names ("vocab", "embed", "heads", "mlp", "labels", None) as
sharding metadata; emopillars_jax.sharding maps them to mesh axes and places the arrays. The
model itself is always created unsharded, so plain CPU needs no mesh.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ..errors import ConfigError
from ..taxonomy import NUM_LABELS

ROBERTA_TYPES = ("roberta", "xlm-roberta", "camembert")
_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),         # exact erf, as torch
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu, "silu": jax.nn.silu, "swish": jax.nn.silu,
}


@dataclass(frozen=True)
class EncoderConfig:
    """The architecture fields of a Hugging Face BERT/RoBERTa config.json (hashable: static)."""
    family: str = "bert"                 # "bert" or "roberta" (positions, head, export class)
    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    pad_token_id: int = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    classifier_dropout: float | None = None
    initializer_range: float = 0.02
    num_labels: int = NUM_LABELS
    dtype: str = "float32"               # compute dtype; parameters stay float32
    remat: bool = False
    model_type: str = "bert"

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides: Any) -> "EncoderConfig":
        model_type = hf.get("model_type", "bert")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ConfigError(f"config.json: position_embedding_type "
                              f"{hf['position_embedding_type']!r} is not supported "
                              "(expected 'absolute')")
        if hf.get("hidden_act", "gelu") not in _ACTIVATIONS:
            raise ConfigError(f"config.json: hidden_act {hf['hidden_act']!r} is not supported "
                              f"(expected one of {sorted(_ACTIVATIONS)})")
        try:
            fields = dict(
                family="roberta" if model_type in ROBERTA_TYPES else "bert",
                vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
                num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
                intermediate_size=hf["intermediate_size"],
                hidden_act=hf.get("hidden_act", "gelu"),
                layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                max_position_embeddings=hf.get("max_position_embeddings", 512),
                type_vocab_size=hf.get("type_vocab_size", 2),
                pad_token_id=(hf["pad_token_id"] if hf.get("pad_token_id") is not None
                              else 1 if model_type in ROBERTA_TYPES else 0),
                bos_token_id=hf.get("bos_token_id"), eos_token_id=hf.get("eos_token_id"),
                hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
                attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
                classifier_dropout=hf.get("classifier_dropout"),
                initializer_range=hf.get("initializer_range", 0.02),
                num_labels=len(hf["id2label"]) if "id2label" in hf else NUM_LABELS,
                model_type=model_type)
        except KeyError as exc:
            raise ConfigError(f"config.json: missing field {exc.args[0]!r}") from None
        fields.update(overrides)
        cfg = cls(**fields)
        if cfg.hidden_size % cfg.num_heads:
            raise ConfigError(f"config.json: hidden_size {cfg.hidden_size} is not divisible by "
                              f"num_attention_heads {cfg.num_heads}")
        return cfg

    def to_hf(self) -> dict[str, Any]:
        """The architecture part of config.json (export adds labels and thresholds)."""
        out = dict(
            model_type=self.model_type, vocab_size=self.vocab_size, hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size, hidden_act=self.hidden_act,
            hidden_dropout_prob=self.hidden_dropout,
            attention_probs_dropout_prob=self.attention_dropout,
            classifier_dropout=self.classifier_dropout,
            max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size, initializer_range=self.initializer_range,
            layer_norm_eps=self.layer_norm_eps, pad_token_id=self.pad_token_id,
            position_embedding_type="absolute")
        if self.bos_token_id is not None:
            out["bos_token_id"] = self.bos_token_id
        if self.eos_token_id is not None:
            out["eos_token_id"] = self.eos_token_id
        return out

    @property
    def max_tokens(self) -> int:
        """Longest input the position table allows (RoBERTa positions start at pad + 1)."""
        offset = self.pad_token_id + 1 if self.family == "roberta" else 0
        return self.max_position_embeddings - offset

    def replace(self, **changes: Any) -> "EncoderConfig":
        return dataclasses.replace(self, **changes)


def _normal(cfg: EncoderConfig, names: tuple) -> Any:
    return nnx.with_partitioning(nnx.initializers.normal(cfg.initializer_range), names)


def _dense(cfg: EncoderConfig, n_in: int, n_out: int, names: tuple, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(n_in, n_out, dtype=jnp.dtype(cfg.dtype), rngs=rngs,
                      kernel_init=_normal(cfg, names),
                      bias_init=nnx.with_partitioning(nnx.initializers.zeros, names[1:]))


def _norm(cfg: EncoderConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, dtype=jnp.dtype(cfg.dtype),
                         scale_init=nnx.with_partitioning(nnx.initializers.ones, ("embed",)),
                         bias_init=nnx.with_partitioning(nnx.initializers.zeros, ("embed",)),
                         rngs=rngs)


class Embeddings(nnx.Module):
    def __init__(self, cfg: EncoderConfig, rngs: nnx.Rngs):
        def embed(n, names):
            return nnx.Embed(n, cfg.hidden_size, dtype=jnp.dtype(cfg.dtype),
                             embedding_init=_normal(cfg, names), rngs=rngs)
        self.word = embed(cfg.vocab_size, ("vocab", "embed"))
        self.position = embed(cfg.max_position_embeddings, (None, "embed"))
        self.token_type = embed(cfg.type_vocab_size, (None, "embed"))
        self.norm = _norm(cfg, rngs)
        self.dropout = nnx.Dropout(cfg.hidden_dropout)
        self.roberta = cfg.family == "roberta"
        self.pad_id = cfg.pad_token_id

    def __call__(self, ids, token_type_ids, *, deterministic, rngs):
        if self.roberta:  # positions count real tokens from padding_idx + 1, as transformers
            real = (ids != self.pad_id).astype(jnp.int32)
            positions = jnp.cumsum(real, axis=1) * real + self.pad_id
        else:
            positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
        x = self.word(ids) + self.token_type(token_type_ids) + self.position(positions)
        return self.dropout(self.norm(x), deterministic=deterministic, rngs=rngs)


class Layer(nnx.Module):
    """Post-LayerNorm transformer block (self-attention + feed-forward)."""

    def __init__(self, cfg: EncoderConfig, rngs: nnx.Rngs):
        h = cfg.hidden_size
        self.query = _dense(cfg, h, h, ("embed", "heads"), rngs)
        self.key = _dense(cfg, h, h, ("embed", "heads"), rngs)
        self.value = _dense(cfg, h, h, ("embed", "heads"), rngs)
        self.attn_out = _dense(cfg, h, h, ("heads", "embed"), rngs)
        self.attn_norm = _norm(cfg, rngs)
        self.intermediate = _dense(cfg, h, cfg.intermediate_size, ("embed", "mlp"), rngs)
        self.output = _dense(cfg, cfg.intermediate_size, h, ("mlp", "embed"), rngs)
        self.out_norm = _norm(cfg, rngs)
        self.attn_dropout = nnx.Dropout(cfg.attention_dropout)
        self.dropout = nnx.Dropout(cfg.hidden_dropout)
        self.num_heads = cfg.num_heads
        self.act = cfg.hidden_act

    def __call__(self, x, mask_bias, *, deterministic, rngs, first_token_only=False):
        """`first_token_only`: the block's output for position 0 alone ([B, 1, H]); every
        position still serves as key and value. What a classifier head reads of the last
        layer, for about 10/12 less of that layer's work."""
        b, t, h = x.shape
        tq = 1 if first_token_only else t
        # dense layers see [rows, features]: XLA:CPU runs their weight gradients as plain
        # GEMMs then (with [B, T, H] operands it is ~1.6x slower on a dense chain's grad)
        rows = x.reshape(b * t, h)
        rows_q = x[:, 0] if first_token_only else rows
        heads = lambda y, n: y.reshape(b, n, self.num_heads, h // self.num_heads)
        q = heads(self.query(rows_q), tq)
        k, v = heads(self.key(rows), t), heads(self.value(rows), t)
        # scores and softmax in float32 also under bf16 compute
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        scores = scores / math.sqrt(h // self.num_heads) + mask_bias
        probs = jax.nn.softmax(scores, axis=-1).astype(x.dtype)
        probs = self.attn_dropout(probs, deterministic=deterministic, rngs=rngs)
        # heads-major product, then a transpose: XLA:CPU runs "bhqk,bkhd->bqhd" itself as a
        # slow transposed dot (at length 48: 5 ms against 2.9 ms per layer)
        ctx = jnp.einsum("bhqk,bkhd->bhqd", probs, v).transpose(0, 2, 1, 3).reshape(b * tq, h)
        attn = self.dropout(self.attn_out(ctx), deterministic=deterministic, rngs=rngs)
        x = self.attn_norm(rows_q + attn)
        y = self.output(_ACTIVATIONS[self.act](self.intermediate(x)))
        y = self.dropout(y, deterministic=deterministic, rngs=rngs)
        return self.out_norm(x + y).reshape(b, tq, h)


class BertHead(nnx.Module):
    """pooler: dense -> tanh on the first token; then dropout -> classifier."""

    def __init__(self, cfg: EncoderConfig, rngs: nnx.Rngs):
        self.pooler = _dense(cfg, cfg.hidden_size, cfg.hidden_size, (None, "embed"), rngs)
        self.classifier = _dense(cfg, cfg.hidden_size, cfg.num_labels, ("embed", "labels"), rngs)
        rate = cfg.classifier_dropout if cfg.classifier_dropout is not None else cfg.hidden_dropout
        self.dropout = nnx.Dropout(rate)

    def __call__(self, hidden, *, deterministic, rngs):
        pooled = jnp.tanh(self.pooler(hidden[:, 0]))
        return self.classifier(self.dropout(pooled, deterministic=deterministic, rngs=rngs))


class RobertaHead(nnx.Module):
    """first token -> dropout -> dense -> tanh -> dropout -> out_proj."""

    def __init__(self, cfg: EncoderConfig, rngs: nnx.Rngs):
        self.dense = _dense(cfg, cfg.hidden_size, cfg.hidden_size, (None, "embed"), rngs)
        self.out_proj = _dense(cfg, cfg.hidden_size, cfg.num_labels, ("embed", "labels"), rngs)
        rate = cfg.classifier_dropout if cfg.classifier_dropout is not None else cfg.hidden_dropout
        self.dropout = nnx.Dropout(rate)

    def __call__(self, hidden, *, deterministic, rngs):
        x = self.dropout(hidden[:, 0], deterministic=deterministic, rngs=rngs)
        x = jnp.tanh(self.dense(x))
        return self.out_proj(self.dropout(x, deterministic=deterministic, rngs=rngs))


def make_head(cfg: EncoderConfig, rngs: nnx.Rngs) -> nnx.Module:
    return (RobertaHead if cfg.family == "roberta" else BertHead)(cfg, rngs)


class EncoderClassifier(nnx.Module):
    """Encoder + multi-label head: `model(ids, mask, types) -> float32 logits [B, num_labels]`."""

    def __init__(self, cfg: EncoderConfig, *, rngs: nnx.Rngs):
        # Parameters only carry logical axis names; emopillars_jax.sharding places them
        # (it also handles dimensions a mesh axis does not divide), so no eager sharding.
        with nnx.use_eager_sharding(False):
            self.embeddings = Embeddings(cfg, rngs)
            self.layers = nnx.List([Layer(cfg, rngs) for _ in range(cfg.num_layers)])
            self.head = make_head(cfg, rngs)
        # one dropout stream for the whole model (a single key + counter in the state)
        self.dropout_rngs = nnx.Rngs(dropout=rngs.dropout())
        self.config = cfg

    def encode(self, input_ids, attention_mask, token_type_ids=None, *, deterministic=True,
               first_token_only=False):
        """Last hidden states [B, T, H] in the compute dtype ([B, 1, H], the first token's,
        with `first_token_only`: the last layer then skips the other positions)."""
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        rngs = None if deterministic else self.dropout_rngs
        x = self.embeddings(input_ids, token_type_ids, deterministic=deterministic, rngs=rngs)
        mask = attention_mask.astype(jnp.float32)[:, None, None, :]
        mask_bias = (1.0 - mask) * jnp.finfo(jnp.float32).min

        def block(layer, x, mask_bias, rngs):
            return layer(x, mask_bias, deterministic=deterministic, rngs=rngs)

        def last_block(layer, x, mask_bias, rngs):
            return layer(x, mask_bias, deterministic=deterministic, rngs=rngs,
                         first_token_only=first_token_only)
        if self.config.remat:
            block, last_block = nnx.remat(block), nnx.remat(last_block)
        for i, layer in enumerate(self.layers):
            x = (last_block if i == len(self.layers) - 1 else block)(layer, x, mask_bias, rngs)
        return x

    def __call__(self, input_ids, attention_mask, token_type_ids=None, *, deterministic=True):
        # both heads read the first token only
        hidden = self.encode(input_ids, attention_mask, token_type_ids, deterministic=deterministic,
                             first_token_only=True)
        rngs = None if deterministic else self.dropout_rngs
        return self.head(hidden, deterministic=deterministic, rngs=rngs).astype(jnp.float32)

    def embed(self, input_ids, attention_mask, token_type_ids=None, *, normalize=False):
        """Mean-pooled sentence embeddings over real tokens (float32) [B, H]."""
        hidden = self.encode(input_ids, attention_mask, token_type_ids).astype(jnp.float32)
        mask = attention_mask.astype(jnp.float32)[..., None]
        pooled = (hidden * mask).sum(1) / jnp.maximum(mask.sum(1), 1e-9)
        if normalize:
            pooled = pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
        return pooled
