"""Encoders (BERT/MiniLM/RoBERTa) in Flax NNX, loaded from Hugging Face folders."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import AssetError, ConfigError
from ..taxonomy import NUM_LABELS
from .encoder import EncoderClassifier, EncoderConfig
from .hf_weights import LoadReport, model_from_tensors, read_hf_tensors

log = logging.getLogger(__name__)

__all__ = ["EncoderClassifier", "EncoderConfig", "LoadReport", "load_encoder", "read_hf_config"]


def read_hf_config(folder: str | Path) -> dict:
    path = Path(folder) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AssetError(f"{path}: not found (expected a Hugging Face model folder)") from None
    except ValueError as exc:
        raise AssetError(f"{path}: invalid JSON ({exc})") from None


def load_encoder(path_or_asset: str, num_labels: int = NUM_LABELS, head: str = "auto",
                 dtype: str = "float32", remat: bool = False, dropout: float | None = None,
                 seed: int = 0, token_types: int | None = None
                 ) -> tuple[EncoderClassifier, EncoderConfig]:
    """A HF folder or asset name -> (NNX classifier, its config).

    head: "auto" (from model_type), "bert" or "roberta" (must match the checkpoint family).
    dropout: None keeps the checkpoint's rates; a number replaces all of them.
    token_types: number of token types the model needs (2 for context-aware input); a
    checkpoint with fewer gets its token-type embedding grown.
    """
    from ..assets import resolve
    folder = resolve(path_or_asset, kind="encoder")
    hf = read_hf_config(folder)
    overrides = dict(num_labels=num_labels, dtype=dtype, remat=remat)
    if dropout is not None:
        overrides.update(hidden_dropout=dropout, attention_dropout=dropout,
                         classifier_dropout=dropout)
    cfg = EncoderConfig.from_hf(hf, **overrides)
    if head not in ("auto", cfg.family):
        raise ConfigError(f"model.head: {head!r} does not fit {folder} (a {cfg.model_type} "
                          f"checkpoint needs the {cfg.family!r} head, or 'auto')")
    if token_types is not None and token_types > cfg.type_vocab_size:
        cfg = cfg.replace(type_vocab_size=token_types)
    model, report = model_from_tensors(cfg, read_hf_tensors(folder), seed=seed,
                                       source=str(folder))
    for line in report.grown:
        log.info("grew token-type embedding for context-aware input: %s", line)
    if report.initialized:
        # evaluate / resume restore the trained head over this one right after
        log.info("%s has no classification head for %d labels: initialised a new %s head "
                 "(%s; a checkpoint restored after this replaces it)", folder, cfg.num_labels,
                 cfg.family, ", ".join(report.initialized))
    if report.unexpected:
        log.info("%s: %d checkpoint tensor(s) not used: %s", folder, len(report.unexpected),
                 ", ".join(report.unexpected[:5]) + (" ..." if len(report.unexpected) > 5 else ""))
    log.info("loaded %s %s: %d layers, hidden %d, %d labels", cfg.family, folder,
             cfg.num_layers, cfg.hidden_size, cfg.num_labels)
    return model, cfg
