"""The six synthesis stages. Each stage turns input items into LLM requests and parses
the answers into one output record per input item (keyed by the item's stable id), so
a record is written whole or not at all and a resumed run skips finished keys."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

from emopillars_jax.taxonomy import NEUTRAL, prompt_label_list

from . import parsing, prompts
from .config import GenerateConfig
from .corpus import Plot


def stable_hash(*parts) -> int:
    """A 64-bit hash that is the same in every process and Python version."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def unit_interval(*parts) -> float:
    return stable_hash(*parts) / 2.0 ** 64


def wants_context(utterance_id: str, seed: int, fraction: float) -> bool:
    """Deterministic ~`fraction` selection of utterances that get a context."""
    return unit_interval("context", seed, utterance_id) < fraction


@dataclass
class Stage:
    name: str           # file name stem and decoding key
    key: str            # the input item's id field (also the output record's key)
    build: Callable     # (item, cfg) -> (messages, schema or None)
    parse: Callable     # (text, item, cfg) -> dict of output fields (raises ParseError)


def _fields(item: dict) -> dict:
    return {"title": item.get("title", ""), "plot": item.get("plot", ""),
            "character": item.get("character", ""),
            "description": item.get("description") or "a character of the story"}


# 1. characters ------------------------------------------------------------------------
def _build_characters(item, cfg: GenerateConfig):
    msgs = prompts.render("characters", cfg.answer_mode, max_characters=cfg.max_characters,
                          **_fields(item))
    return msgs, parsing.characters_schema(cfg.max_characters) if cfg.answer_mode == "json" \
        else None


def _parse_characters(text, item, cfg: GenerateConfig):
    chars = parsing.parse_characters(text, cfg.answer_mode, cfg.max_characters)
    return {"title": item["title"], "characters": [{"character_id": f"{item['plot_id']}-c{j:02d}", **c}
                           for j, c in enumerate(chars)]}


# 2. utterances ------------------------------------------------------------------------
def _build_utterances(item, cfg: GenerateConfig):
    msgs = prompts.render("utterances", cfg.answer_mode, emotion_list=prompt_label_list(),
                          n_emotional=cfg.utterances_non_neutral,
                          n_neutral=cfg.utterances_neutral, **_fields(item))
    schema = parsing.utterances_schema(cfg.utterances_non_neutral, cfg.utterances_neutral) \
        if cfg.answer_mode == "json" else None
    return msgs, schema


def _parse_utterances(text, item, cfg: GenerateConfig):
    utts = parsing.parse_utterances(text, cfg.answer_mode, cfg.utterances_non_neutral,
                                    cfg.utterances_neutral)
    return {"utterances": [{"utterance_id": f"{item['character_id']}-u{k:02d}", **u}
                           for k, u in enumerate(utts)]}


# 3. soft labels -----------------------------------------------------------------------
def _build_labels(item, cfg: GenerateConfig):
    msgs = prompts.render("labels", cfg.answer_mode, emotion_list=prompt_label_list(),
                          utterance=item["utterance"], **_fields(item))
    return msgs, parsing.labels_schema() if cfg.answer_mode == "json" else None


def _parse_labels(text, item, cfg: GenerateConfig):
    return {"emotions": [[n, s] for n, s in parsing.parse_labels(text, cfg.answer_mode)]}


# 4. context ---------------------------------------------------------------------------
def _build_context(item, cfg: GenerateConfig):
    emotions = ", ".join(item["emotions_used"]) or NEUTRAL
    msgs = prompts.render("context", cfg.answer_mode, utterance=item["utterance"],
                          emotions=emotions, **_fields(item))
    return msgs, parsing.text_schema("context") if cfg.answer_mode == "json" else None


def _parse_context(text, item, cfg: GenerateConfig):
    return {"context": parsing.parse_text(text, cfg.answer_mode, "context", 5)}


# 5. context cleaning ------------------------------------------------------------------
def _build_cleaning(item, cfg: GenerateConfig):
    msgs = prompts.render("cleaning", cfg.answer_mode, context=item["context"], **_fields(item))
    return msgs, parsing.text_schema("context") if cfg.answer_mode == "json" else None


def _parse_cleaning(text, item, cfg: GenerateConfig):
    return {"context_clean": parsing.parse_text(text, cfg.answer_mode, "context", 3)}


# 6. rewriting -------------------------------------------------------------------------
def _build_rewriting(item, cfg: GenerateConfig):
    msgs = prompts.render("rewriting", cfg.answer_mode, context=item["context_clean"],
                          utterance=item["utterance"], **_fields(item))
    return msgs, parsing.text_schema("utterance") if cfg.answer_mode == "json" else None


def _parse_rewriting(text, item, cfg: GenerateConfig):
    return {"rewritten": parsing.parse_text(text, cfg.answer_mode, "utterance", 2)}


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("characters", "plot_id", _build_characters, _parse_characters),
    Stage("utterances", "character_id", _build_utterances, _parse_utterances),
    Stage("labels", "utterance_id", _build_labels, _parse_labels),
    Stage("context", "utterance_id", _build_context, _parse_context),
    Stage("cleaning", "utterance_id", _build_cleaning, _parse_cleaning),
    Stage("rewriting", "utterance_id", _build_rewriting, _parse_rewriting),
)}
assert tuple(STAGES) == prompts.STAGES


# Items of each stage, derived from the previous stages' records (deterministic order).
def plot_items(plots: list[Plot]) -> list[dict]:
    return [{"plot_id": p.plot_id, "title": p.title, "plot": p.text} for p in plots]


def character_items(plots: list[dict], characters) -> list[dict]:
    out = []
    for p in plots:
        rec = characters.get(p["plot_id"])
        for c in (rec or {}).get("characters", []):
            out.append({**p, "character_id": c["character_id"], "character": c["name"],
                        "description": c["description"]})
    return out


def utterance_items(chars: list[dict], utterances) -> list[dict]:
    out = []
    for c in chars:
        rec = utterances.get(c["character_id"])
        for u in (rec or {}).get("utterances", []):
            out.append({**c, "utterance_id": u["utterance_id"], "utterance": u["text"],
                        "kind": u["kind"], "target_emotion": u["target_emotion"]})
    return out


def context_items(utts: list[dict], labels, cfg: GenerateConfig) -> list[dict]:
    """Utterances selected for a context that kept at least one label after processing."""
    from .labels import process_labels
    out = []
    for u in utts:
        rec = labels.get(u["utterance_id"])
        if rec is None or not wants_context(u["utterance_id"], cfg.seed, cfg.context_fraction):
            continue
        processed = process_labels([tuple(p) for p in rec["emotions"]], cfg.label_threshold)
        if processed.empty:
            continue
        used = [d["label"] for d in processed.all_emotions_mapped
                if d["score"] >= cfg.label_threshold]
        out.append({**u, "emotions_used": used})
    return out


def chained_items(items: list[dict], store, field: str) -> list[dict]:
    """Items whose previous-stage record exists, extended with that record's `field`."""
    out = []
    for it in items:
        rec = store.get(it["utterance_id"])
        if rec is not None:
            out.append({**it, field: rec[field]})
    return out
