"""Hugging Face <-> NNX weights through one explicit name table per family.

Each row maps a Hugging Face module name to an NNX module path and says what kind of module it
is; the kind fixes the tensor names and transforms (Linear: weight -> kernel, transposed;
LayerNorm: weight -> scale; Embedding: weight -> embedding). Loading and export read the same
rows, in opposite directions. Loading follows the abstract-model pattern: build the model with
`nnx.eval_shape` (no memory), assign checkpoint arrays by path, then `nnx.merge`.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..errors import AssetError, EmoPillarsError, reading_text
from .encoder import EncoderClassifier, EncoderConfig, make_head

# kind -> ((HF tensor suffix, NNX variable name, transpose?), ...)
KINDS = {
    "linear": (("weight", "kernel", True), ("bias", "bias", False)),
    "norm": (("weight", "scale", False), ("bias", "bias", False)),
    "embed": (("weight", "embedding", False),),
}


def _body(p: str) -> tuple[tuple[str, str, str], ...]:
    """Encoder rows shared by both families; `p` is the checkpoint's base-model prefix."""
    L = f"{p}.encoder.layer.{{i}}"
    return (
        (f"{p}.embeddings.word_embeddings", "embeddings.word", "embed"),
        (f"{p}.embeddings.position_embeddings", "embeddings.position", "embed"),
        (f"{p}.embeddings.token_type_embeddings", "embeddings.token_type", "embed"),
        (f"{p}.embeddings.LayerNorm", "embeddings.norm", "norm"),
        (f"{L}.attention.self.query", "layers.{i}.query", "linear"),
        (f"{L}.attention.self.key", "layers.{i}.key", "linear"),
        (f"{L}.attention.self.value", "layers.{i}.value", "linear"),
        (f"{L}.attention.output.dense", "layers.{i}.attn_out", "linear"),
        (f"{L}.attention.output.LayerNorm", "layers.{i}.attn_norm", "norm"),
        (f"{L}.intermediate.dense", "layers.{i}.intermediate", "linear"),
        (f"{L}.output.dense", "layers.{i}.output", "linear"),
        (f"{L}.output.LayerNorm", "layers.{i}.out_norm", "norm"),
    )


TABLES = {
    # BertForSequenceClassification (also MiniLM)
    "bert": _body("bert") + (
        ("bert.pooler.dense", "head.pooler", "linear"),
        ("classifier", "head.classifier", "linear"),
    ),
    # RobertaForSequenceClassification (no pooler; its head is `classifier.dense/out_proj`)
    "roberta": _body("roberta") + (
        ("classifier.dense", "head.dense", "linear"),
        ("classifier.out_proj", "head.out_proj", "linear"),
    ),
}
ARCHITECTURES = {"bert": "BertForSequenceClassification",
                 "roberta": "RobertaForSequenceClassification"}
IGNORED = re.compile(r".*(position_ids|token_type_ids)$")   # buffers, not parameters
# names a base model (BertModel / RobertaModel) or old TF ports may use
LEGACY = ((re.compile(r"LayerNorm\.gamma$"), "LayerNorm.weight"),
          (re.compile(r"LayerNorm\.beta$"), "LayerNorm.bias"))


@functools.lru_cache(maxsize=None)
def _rules(family: str) -> tuple[tuple[re.Pattern, str, re.Pattern, str, bool], ...]:
    """(HF regex, NNX template, NNX regex, HF template, transpose) for each tensor."""
    rules = []
    for hf, nnx_path, kind in TABLES[family]:
        for hf_suffix, nnx_name, transpose in KINDS[kind]:
            hf_t, nnx_t = f"{hf}.{hf_suffix}", f"{nnx_path}.{nnx_name}"
            rx = lambda t: re.compile(re.escape(t).replace(r"\{i\}", r"(?P<i>\d+)") + "$")
            rules.append((rx(hf_t), nnx_t, rx(nnx_t), hf_t, transpose))
    return tuple(rules)


def hf_to_nnx_name(family: str, name: str) -> tuple[tuple, bool] | None:
    """HF tensor name -> (NNX path tuple, transpose?) or None when the table has no row."""
    for hf_rx, nnx_t, _, _, transpose in _rules(family):
        if m := hf_rx.match(name):
            path = nnx_t.format(**m.groupdict()).split(".")
            return tuple(int(p) if p.isdigit() else p for p in path), transpose
    return None


def nnx_to_hf_name(family: str, path: tuple) -> tuple[str, bool]:
    dotted = ".".join(str(p) for p in path)
    for _, _, nnx_rx, hf_t, transpose in _rules(family):
        if m := nnx_rx.match(dotted):
            return hf_t.format(**m.groupdict()), transpose
    raise EmoPillarsError(f"no Hugging Face name for parameter {dotted} ({family} table)")


def normalize_names(family: str, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add the base-model prefix a bare BertModel/RobertaModel file lacks; fix legacy names."""
    prefix = "roberta" if family == "roberta" else "bert"
    out = {}
    for name, value in tensors.items():
        for rx, new in LEGACY:
            name = rx.sub(new, name)
        if name.split(".")[0] in ("embeddings", "encoder", "pooler"):
            name = f"{prefix}.{name}"
        out[name] = value
    return out


# ---------------------------------------------------------------- reading checkpoint files

def _load_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return dict(load_file(path))
    except FileNotFoundError:
        raise AssetError(f"{path}: not found (listed in model.safetensors.index.json)") from None
    except (SafetensorError, OSError, ValueError) as exc:   # truncated or not safetensors
        raise AssetError(f"{path}: not a readable safetensors file ({exc})") from None


def read_hf_tensors(folder: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a HF folder: model.safetensors (single or sharded) or pytorch_model.bin."""
    folder = Path(folder)
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return _load_safetensors(single)
    if index.is_file():
        try:
            with reading_text(index):
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))
                                    ["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise AssetError(f"{index}: expected JSON with a \"weight_map\" of tensor -> "
                             "shard file") from None
        return {k: v for s in shards for k, v in _load_safetensors(folder / s).items()}
    if (folder / "pytorch_model.bin").is_file():
        try:
            import torch
        except ImportError:
            raise AssetError(f"{folder}/pytorch_model.bin needs torch to read "
                             "(pip install torch), or convert it to model.safetensors") from None
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
                for k, v in state.items()}
    raise AssetError(f"{folder}: no model.safetensors, model.safetensors.index.json or "
                     "pytorch_model.bin")


# ---------------------------------------------------------------- HF -> NNX

@dataclass
class LoadReport:
    unexpected: list[str] = field(default_factory=list)   # checkpoint tensors with no row
    initialized: list[str] = field(default_factory=list)  # NNX params newly initialised
    grown: list[str] = field(default_factory=list)        # params grown from the checkpoint


def _path_str(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def abstract_model(cfg: EncoderConfig, seed: int = 0) -> EncoderClassifier:
    return nnx.eval_shape(lambda: EncoderClassifier(cfg, rngs=nnx.Rngs(seed)))


def model_from_tensors(cfg: EncoderConfig, tensors: dict[str, np.ndarray], *, seed: int = 0,
                       source: str = "checkpoint") -> tuple[EncoderClassifier, LoadReport]:
    """Build an EncoderClassifier from HF tensors (names as saved by transformers)."""
    report = LoadReport()
    loaded: dict[tuple, tuple[str, np.ndarray]] = {}
    for name, value in normalize_names(cfg.family, tensors).items():
        hit = hf_to_nnx_name(cfg.family, name)
        if hit is None:
            if not IGNORED.match(name):
                report.unexpected.append(name)
            continue
        path, transpose = hit
        value = np.asarray(value)
        loaded[path] = (name, value.T if transpose else value)

    graphdef, params, rest = nnx.split(abstract_model(cfg, seed), nnx.Param, ...)
    flat = dict(nnx.to_flat_state(params))
    missing_body, missing_head = [], []
    for path, var in flat.items():
        want = tuple(var.get_value().shape)
        if path not in loaded:
            (missing_head if path[0] == "head" else missing_body).append(path)
            continue
        name, value = loaded.pop(path)
        if path == ("embeddings", "token_type", "embedding") and value.shape[0] < want[0]:
            # context-aware input needs token type 1: new rows start as a copy of row 0
            report.grown.append(f"{name}: {value.shape[0]} -> {want[0]} token types")
            value = np.concatenate([value] + [value[:1]] * (want[0] - value.shape[0]))
        if path[0] == "head" and value.shape != want and value.shape[-1] != want[-1]:
            # a head trained for another label set: start a new one
            missing_head.append(path)
            continue
        if tuple(value.shape) != want:
            flip = (lambda s: s[::-1]) if value.ndim == 2 and path[-1] == "kernel" else tuple
            raise AssetError(f"{source}: tensor {name} has shape {flip(value.shape)}, "
                             f"the model expects {flip(want)} (config.json disagrees with "
                             "the weights?)")
        var.set_value(jnp.asarray(value, jnp.float32))
    report.unexpected += [name for name, _ in loaded.values()]
    if missing_body:
        names = [nnx_to_hf_name(cfg.family, p)[0] for p in missing_body]
        more = f" (and {len(names) - 3} more)" if len(names) > 3 else ""
        raise AssetError(f"{source}: missing tensor(s) {', '.join(names[:3])}{more}")
    if missing_head:
        with nnx.use_eager_sharding(False):
            fresh = dict(nnx.to_flat_state(nnx.state(make_head(cfg, nnx.Rngs(seed)), nnx.Param)))
        for path in missing_head:
            flat[path].set_value(fresh[path[1:]].get_value())
            report.initialized.append(_path_str(path))
    model = nnx.merge(graphdef, params, rest)
    model.dropout_rngs = nnx.Rngs(dropout=seed)   # the abstract one has no concrete key
    return model, report


# ---------------------------------------------------------------- NNX -> HF

def tensors_from_model(model: EncoderClassifier, dtype: str = "float32") -> dict[str, np.ndarray]:
    """HF tensor name -> numpy array (in `dtype`), via the same table."""
    import ml_dtypes  # ships with jax; numpy has no bfloat16
    np_dtype = ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype)
    family = model.config.family
    out = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        name, transpose = nnx_to_hf_name(family, path)
        value = np.asarray(jax.device_get(var.get_value()), dtype=np.float32)
        out[name] = np.ascontiguousarray(value.T if transpose else value).astype(np_dtype)
    return out
