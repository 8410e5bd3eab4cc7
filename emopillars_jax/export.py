"""NNX classifier -> Hugging Face folder (config.json, model.safetensors, tokenizer, model card),
and the proof that transformers + PyTorch computes the same logits from it.

From memory: `export_model(model, out_dir, tokenizer_folder=...)`. From a training run:
`export_from_checkpoint(ckpt_dir, out_dir)` restores only the Orbax "params" item of a step,
plus the small JSON "metadata" item (architecture, base folder, thresholds, metrics).
"""
from __future__ import annotations

import json
import logging
import math
import stat
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import taxonomy
from .errors import AssetError, EmoPillarsError

log = logging.getLogger(__name__)

# Sentences for --verify: short and long, emotional and neutral, so padding is exercised.
VERIFY_TEXTS = (
    "Thank you so much, this is the nicest thing anyone has done for me!",
    "I can't believe they cancelled the show again. What a waste of my evening.",
    "The train leaves at nine.",
    "I'm scared that if I tell her the truth she will never speak to me again, and I "
    "don't know what I would do without her.",
)
VERIFY_CONTEXTS = ("After years of saving, Mara finally opened her bakery.", None,
                   "Tom waited on the empty platform.", None)


def label_names(num_labels: int, labels: Sequence[str] | None = None) -> list[str]:
    if labels is not None:
        if len(labels) != num_labels:
            raise EmoPillarsError(f"got {len(labels)} label names for a {num_labels}-label head")
        return list(labels)
    if num_labels != taxonomy.NUM_LABELS:
        raise EmoPillarsError(f"a {num_labels}-label head needs explicit label names "
                              f"(the taxonomy has {taxonomy.NUM_LABELS})")
    return list(taxonomy.LABELS)


def hf_config(cfg, labels: Sequence[str], threshold: float,
              thresholds: Sequence[float] | None, input_mode: str, dtype: str,
              max_length: int | None = None) -> dict:
    from .models.hf_weights import ARCHITECTURES
    out = cfg.to_hf()
    out.update(
        architectures=[ARCHITECTURES[cfg.family]],
        id2label={str(i): name for i, name in enumerate(labels)},
        label2id={name: i for i, name in enumerate(labels)},
        problem_type="multi_label_classification",
        dtype=dtype,
        threshold=float(threshold),
        thresholds=({name: float(t) for name, t in zip(labels, thresholds)}
                    if thresholds is not None else None),
        input_mode=input_mode,
    )
    if max_length:
        out["input_max_length"] = int(max_length)   # what training used; predict uses it
    return out


def _card(config: dict, metrics: dict | None, training_data: str | None,
          base_model: str | None) -> str:
    labels = list(config["label2id"])
    per_class = config.get("thresholds")
    thr_text = (f"one global threshold **{config['threshold']:.2f}** on the sigmoid "
                "probability of each label")
    if per_class:
        thr_text = "per-label thresholds (in `config.json` under `thresholds`)"
    contextual = config.get("input_mode") == "contextual"
    rows = "\n".join(f"| {k} | {v:.4f} |" if isinstance(v, (int, float)) else f"| {k} | {v} |"
                     for k, v in (metrics or {}).items()) or "| (none recorded) | |"
    usage_input = ('"She finally said yes."' if not contextual else
                   '{"text": "<context>", "text_pair": "<utterance>"}')   # a list in, a list out
    keep = (f'[s["label"] for s in scores if s["score"] >= {config["threshold"]:.2f}]'
            if not per_class else '[s["label"] for s in scores\n          '
            'if s["score"] >= clf.model.config.thresholds[s["label"]]]')
    ctx_arg = ' --context "Tom had waited for years."' if contextual else ""
    front = ["---", "library_name: transformers", "pipeline_tag: text-classification",
             "tags: [emotion, multi-label-classification, emo-pillars, jax, flax]"]
    if base_model and "/" in base_model and not Path(base_model).exists():   # a Hub repo id
        front.append(f"base_model: {base_model}")
    front.append("---")
    return "\n".join(front) + f"""

# Emo Pillars emotion classifier ({config['model_type']}, {len(labels)} labels)

**Task**: multi-label emotion classification{' of an utterance given its context' if contextual
else ''}. Each label gets an independent sigmoid probability; the predicted labels are those
above the threshold. Trained with the Emo Pillars method (LLM-distilled, plot-grounded
synthetic data; arXiv 2504.16856) in JAX/Flax and exported to PyTorch.

**Input**: {'context as the first segment (token type 0) and the utterance as the second '
            '(token type 1)' if contextual else 'one text'}.

**Thresholds**: {thr_text}.

**Labels** ({len(labels)}): {', '.join(labels)}.

**Training data**: {training_data or 'not recorded'}.

## Metrics

| metric | value |
|---|---|
{rows}

## How to use

```python
from transformers import pipeline

clf = pipeline("text-classification", model="PATH_OR_REPO_ID", top_k=None,
               function_to_apply="sigmoid")
scores = clf([{usage_input}])[0]   # one list of {{label, score}} per input
labels = {keep}
```

Or with the project's own predictor (JAX, batched and length-bucketed):
`emopillars predict PATH --text "She finally said yes."{ctx_arg}`.
"""


def export_model(model, out_dir: str | Path, *, tokenizer_folder: str | Path,
                 labels: Sequence[str] | None = None, threshold: float = 0.5,
                 thresholds: Sequence[float] | None = None, input_mode: str = "contextless",
                 dtype: str = "float32", metrics: dict | None = None,
                 training_data: str | None = None, base_model: str | None = None,
                 max_length: int | None = None) -> Path:
    """Write a Hugging Face folder loadable by AutoModelForSequenceClassification."""
    from safetensors.numpy import save_file
    from .models.hf_weights import tensors_from_model
    from .tokenization import Tokenizer
    cfg = model.config
    names = label_names(cfg.num_labels, labels)
    if isinstance(thresholds, dict):
        thresholds = [thresholds[name] for name in names]
    if thresholds is not None and len(thresholds) != cfg.num_labels:
        raise EmoPillarsError(f"got {len(thresholds)} thresholds for {cfg.num_labels} labels")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = hf_config(cfg, names, threshold, thresholds, input_mode, dtype, max_length)
    weights = out / "model.safetensors"
    save_file(tensors_from_model(model, dtype), str(weights), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    # safetensors writes the weights owner-only: give them the mode of the other files
    weights.chmod(stat.S_IMODE((out / "config.json").stat().st_mode))
    tok = Tokenizer.from_folder(tokenizer_folder)
    if cfg.type_vocab_size > 1:
        tok.mark_second_segment()
    tok.save(out)
    _fix_tokenizer_config(out, cfg)
    (out / "README.md").write_text(_card(config, metrics, training_data, base_model))
    log.info("exported %s (%s, %s) to %s", cfg.family, cfg.num_labels, dtype, out)
    return out


def _fix_tokenizer_config(out: Path, cfg) -> None:
    """Ask transformers' tokenizer for token type ids (context-aware RoBERTa needs them)."""
    path = out / "tokenizer_config.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    if not 0 < data.get("model_max_length", 0) <= cfg.max_tokens:
        data["model_max_length"] = cfg.max_tokens
    if cfg.type_vocab_size > 1:
        data["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
        if cfg.family == "roberta":
            # transformers' RobertaTokenizer replaces the post-processor that types the
            # utterance 1 (see Tokenizer.mark_second_segment); the generic class keeps it
            data["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(data, indent=2) + "\n")


# ---------------------------------------------------------------- verification

def _rounded(model, dtype: str):
    """The model with parameters rounded to the export dtype (what the file holds)."""
    if dtype == "float32":
        return model
    import jax
    import jax.numpy as jnp
    from flax import nnx
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(lambda x: x.astype(jnp.dtype(dtype)).astype(jnp.float32), params)
    return nnx.merge(graphdef, params, rest)


def verify_export(out_dir: str | Path, model, texts: Sequence[str] = VERIFY_TEXTS,
                  contexts: Sequence[str | None] | None = None, *, atol: float = 1e-4,
                  max_length: int = 128) -> float:
    """Load `out_dir` with transformers + PyTorch; its logits must equal the JAX model's.

    Also checks that transformers' tokenizer from the folder gives the same token ids as
    ours. Returns the max abs logit difference; raises EmoPillarsError above `atol`.
    """
    try:
        import torch
        import transformers
    except ImportError:
        raise EmoPillarsError("verifying an export needs torch and transformers "
                              "(pip install -e '.[torch]')") from None
    import jax
    import jax.numpy as jnp
    from .tokenization import Tokenizer
    out = Path(out_dir)
    config = json.loads((out / "config.json").read_text())
    max_length = min(max_length, model.config.max_tokens)
    batch = Tokenizer.from_folder(out)(list(texts), contexts, max_length=max_length,
                                       multiple=None)
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    for i, text in enumerate(texts):
        ctx = contexts[i] if contexts is not None else None
        args = (ctx, text) if ctx else (text,)
        want = hf_tok(*args, truncation=True, max_length=max_length)
        real = batch["attention_mask"][i] == 1
        for key in ("input_ids", "token_type_ids"):
            if key in want and want[key] != batch[key][i][real].tolist():
                raise EmoPillarsError(f"{out}: transformers' tokenizer gives other {key} than "
                                      f"ours for {text[:40]!r}")
    torch_model = transformers.AutoModelForSequenceClassification.from_pretrained(
        out, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = torch_model(**{k: torch.from_numpy(v.astype(np.int64))
                             for k, v in batch.items()}).logits.numpy()
    jax_model = _rounded(model, config.get("dtype", "float32"))
    with jax.default_matmul_precision("highest"):   # no TF32 on GPUs: compare true fp32
        got = np.asarray(jax_model(*(jnp.asarray(batch[k]) for k in
                                     ("input_ids", "attention_mask", "token_type_ids"))))
    diff = float(np.abs(got - ref).max())
    if not math.isfinite(diff) or diff > atol:
        raise EmoPillarsError(f"{out}: PyTorch logits differ from JAX by {diff:.2e} "
                              f"(allowed {atol:.0e})")
    log.info("verified %s: transformers + PyTorch logits match JAX (max |diff| %.2e)", out, diff)
    return diff


# ---------------------------------------------------------------- checkpoints

def _flatten(tree: Any, prefix: tuple = ()) -> dict[tuple, Any]:
    """Nested dicts (the nnx.to_pure_dict layout the trainer saves) -> {path: array}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flatten(value, prefix + (key,)))
    return out


def load_from_checkpoint(ckpt_dir: str | Path, which: str | int = "best"):
    """The "params" item of a training checkpoint (best step, else latest) -> a classifier.

    The architecture, base folder (for tokenizer files), labels, thresholds and metrics come
    from the checkpoint's JSON "metadata" item (see emopillars_jax.checkpointing).
    Returns (model, metadata) with metadata["step"] set.
    """
    from .checkpointing import restore_params
    from .models import EncoderConfig
    from .models.hf_weights import model_from_tensors, nnx_to_hf_name
    params, meta, step = restore_params(ckpt_dir, which)
    meta = dict(meta or {}, step=step)
    where = f"{Path(ckpt_dir)}/{step}"
    if not meta.get("encoder_config") or not meta.get("model_path"):
        raise AssetError(f"{where}: checkpoint metadata lacks encoder_config / model_path "
                         "(not written by `emopillars train`?)")
    cfg = EncoderConfig.from_hf(meta["encoder_config"],
                                num_labels=meta.get("num_labels", taxonomy.NUM_LABELS))
    # through the HF name table, so the same shape checks and messages apply
    tensors = {}
    for path, value in _flatten(params).items():
        name, transpose = nnx_to_hf_name(cfg.family, path)
        value = np.asarray(value, np.float32)
        tensors[name] = value.T if transpose else value
    model, report = model_from_tensors(cfg, tensors, source=where)
    if report.initialized or report.unexpected:
        raise AssetError(f"{where}: params do not fit the model in its metadata "
                         f"(missing {report.initialized}, unexpected {report.unexpected})")
    return model, meta


def export_from_checkpoint(ckpt_dir: str | Path, out_dir: str | Path, *,
                           which: str | int = "best", dtype: str = "float32",
                           verify: bool = False) -> Path:
    """A training run's checkpoints folder -> verified (optionally) Hugging Face folder."""
    model, meta = load_from_checkpoint(ckpt_dir, which)
    out = export_model(
        model, out_dir, tokenizer_folder=meta["model_path"], labels=meta.get("labels"),
        threshold=meta.get("threshold") or 0.5, thresholds=meta.get("thresholds"),
        input_mode=meta.get("input_mode") or "contextless", dtype=dtype,
        metrics=meta.get("metrics"), training_data=meta.get("training_data"),
        base_model=meta.get("base_model"),
        max_length=((meta.get("config") or {}).get("data") or {}).get("max_length"))
    if verify:
        contextual = meta.get("input_mode") == "contextual"
        verify_export(out, model, VERIFY_TEXTS, VERIFY_CONTEXTS if contextual else None)
    return out


def run_export(args) -> int:
    """`emopillars export CHECKPOINT OUT [--verify] [--dtype D]`."""
    out = export_from_checkpoint(args.checkpoint, args.out, dtype=args.dtype,
                                 verify=args.verify)
    print(f"exported to {out}" + (" (verified against transformers + PyTorch)"
                                  if args.verify else ""))
    return 0
