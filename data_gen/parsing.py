"""Answer schemas (for grammar-constrained JSON) and robust parsers of both answer modes.

Every parser returns plain Python values or raises ParseError with a short reason; the
stage runner retries and finally records the reason in the rejects file.
"""
from __future__ import annotations

import json
import re

from emopillars_jax.taxonomy import LABELS, NEUTRAL, canonical_label, normalize_name

LEVELS = [round(i / 10, 1) for i in range(11)]
NON_NEUTRAL = [name for name in LABELS if name != NEUTRAL]


class ParseError(ValueError):
    """The model's answer cannot be used (the message is the reason)."""


# ----------------------------------------------------------------------------- schemas

# String bounds (characters): the caps make the grammar close every answer long before
# max_tokens, so a verbose model cannot leave unterminated JSON behind; the minimums stop
# a weak model from answering one-word "utterances".
MIN_CHARS = {"name": 2, "description": 3, "utterance": 12, "context": 20}
MAX_CHARS = {"name": 40, "description": 80, "utterance": 200, "context": 700}


def _str(field: str) -> dict:
    return {"type": "string", "minLength": MIN_CHARS[field], "maxLength": MAX_CHARS[field]}


def _obj(props: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": props, "required": required or list(props)}


def characters_schema(max_characters: int) -> dict:
    item = _obj({"name": _str("name"), "description": _str("description")})
    return _obj({"characters": {"type": "array", "items": item, "minItems": 1,
                                "maxItems": max_characters}})


def utterances_schema(n_emotional: int, n_neutral: int) -> dict:
    item = _obj({"emotion": {"type": "string", "enum": NON_NEUTRAL},
                 "utterance": _str("utterance")})
    return _obj({"emotional": {"type": "array", "items": item, "minItems": n_emotional,
                               "maxItems": n_emotional},
                 "neutral": {"type": "array", "items": _str("utterance"),
                             "minItems": n_neutral, "maxItems": n_neutral}})


def labels_schema() -> dict:
    item = _obj({"emotion": {"type": "string", "enum": list(LABELS)},
                 "level": {"type": "number", "enum": LEVELS}})
    return _obj({"emotions": {"type": "array", "items": item, "minItems": 1, "maxItems": 5}})


def text_schema(field: str) -> dict:
    return _obj({field: _str(field)})


# ----------------------------------------------------------------------------- helpers

_BULLET = re.compile(r"^\s*(?:[-*•·]+|\(?\d{1,2}[.):]|\(?[a-zA-Z][.)])\s*")
_QUOTES = "\"'“”‘’«»`"
_PREAMBLE = re.compile(r"^(?:sure|here(?: is|'s| are)|certainly|of course|okay|ok)\b[^:\n]*:\s*",
                       re.I)


def load_json(text: str) -> dict:
    """The first JSON object in `text` (models sometimes wrap it in prose or fences)."""
    start = text.find("{")
    if start < 0:
        raise ParseError("no JSON object in the answer")
    try:
        # strict=False: the grammar lets raw newlines into strings, which JSON forbids
        obj, _ = json.JSONDecoder(strict=False).raw_decode(text[start:])
    except ValueError as exc:
        raise ParseError(f"invalid JSON ({exc.args[0].split(':')[0]})") from None
    if not isinstance(obj, dict):
        raise ParseError("the JSON answer is not an object")
    return obj


def clean_text(text: str) -> str:
    """Strip preambles, labels like 'Rewritten utterance:', quotes and extra spaces."""
    text = text.strip()
    text = _PREAMBLE.sub("", text, count=1)
    text = re.sub(r"^\s*(?:rewritten utterance|utterance|context|cleaned text|text|answer|"
                  r"explanation)\s*:\s*", "", text, flags=re.I)
    text = " ".join(text.split())
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text.strip(_QUOTES + " ") if text.count('"') == 1 else text


def _lines(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = _BULLET.sub("", line.strip()).strip()
        line = line.replace("**", "").strip()
        if line:
            out.append(line)
    return out


def _require_text(value, what: str, min_words: int = 1) -> str:
    if not isinstance(value, str):
        raise ParseError(f"{what} is not a string")
    value = clean_text(value)
    if len(value.split()) < min_words:
        raise ParseError(f"{what} is empty or too short")
    return value


# ----------------------------------------------------------------------------- stage 1

def parse_characters(text: str, mode: str, max_characters: int) -> list[dict]:
    """-> [{'name', 'description'}], deduplicated by name, at most max_characters."""
    found: list[tuple[str, str]] = []
    if mode == "json":
        items = load_json(text).get("characters")
        if not isinstance(items, list):
            raise ParseError("'characters' is not a list")
        for it in items:
            if isinstance(it, dict):
                found.append((str(it.get("name", "")), str(it.get("description", ""))))
            elif isinstance(it, str):
                found.append((it, ""))
    else:
        for line in _lines(text):
            if line.count(",") >= 2 and not re.search(r"\s[-–—]\s|:", line):
                found.extend((name, "") for name in line.split(","))   # "A, B, C" on one line
                continue
            parts = re.split(r"\s+[-–—]\s+|:\s+|\s+\(", line, maxsplit=1)
            name = parts[0]
            desc = parts[1].rstrip(")") if len(parts) > 1 else ""
            if name.lower().rstrip(":") in ("characters", "main characters", "character"):
                continue
            found.append((name, desc))
    out, seen = [], set()
    for name, desc in found:
        name = clean_text(name).strip(" .:")
        if not name or len(name) > 60 or len(name.split()) > 6:
            continue
        key = name.lower()
        if key in seen:
            continue
        seen.add(key)
        out.append({"name": name, "description": clean_text(desc)})
    if not out:
        raise ParseError("no character names found")
    return out[:max_characters]


# ----------------------------------------------------------------------------- stage 2

_EMO_LINE = re.compile(r"^\(?([A-Za-z][A-Za-z \-]{1,24}?)\)?\s*[:\-–—]\s*(.+)$")


def parse_utterances(text: str, mode: str, n_emotional: int, n_neutral: int) -> list[dict]:
    """-> [{'text', 'kind': 'emotional'|'neutral', 'target_emotion'}], emotional first."""
    emotional: list[tuple[str | None, str]] = []
    neutral: list[str] = []
    if mode == "json":
        obj = load_json(text)
        for it in obj.get("emotional") or []:
            if isinstance(it, dict) and isinstance(it.get("utterance"), str):
                emotional.append((canonical_label(str(it.get("emotion", ""))), it["utterance"]))
        for it in obj.get("neutral") or []:
            if isinstance(it, str):
                neutral.append(it)
    else:
        for line in _lines(text):
            m = _EMO_LINE.match(line)
            label = canonical_label(m.group(1)) if m else None
            if m and label is not None:
                utt = m.group(2)
                (neutral.append(utt) if label == NEUTRAL else emotional.append((label, utt)))
            elif m and normalize_name(m.group(1)) in ("neutral utterances", "emotional utterances"):
                continue
            elif len(line.split()) >= 3 and not line.endswith(":"):
                emotional.append((None, line))   # an utterance without its emotion tag
    out, seen = [], set()
    candidates = [(label, utt, "emotional") for label, utt in emotional[:n_emotional]] + \
        [(NEUTRAL, utt, "neutral") for utt in neutral[:n_neutral]]
    for label, utt, kind in candidates:
        utt = clean_text(utt)
        key = " ".join(utt.lower().split())
        # small models repeat one sentence for several emotions: keep its first occurrence
        if len(utt.split()) >= 2 and key not in seen:
            seen.add(key)
            out.append({"text": utt, "kind": kind, "target_emotion": label})
    if not out:
        raise ParseError("no utterances found")
    return out


# ----------------------------------------------------------------------------- stage 3

_SCORE_LINE = re.compile(
    r"^([A-Za-z][A-Za-z \-]{1,30}?)\s*(?:[:=\-–—(,]|\bis\b|\bat\b)?\s*"
    r"(?:level|expressiveness|intensity|score)?\s*[:=]?\s*(\d+(?:\.\d+)?)\s*(%|/\s*10\b|/\s*100\b)?")


def _level(value: float, unit: str | None) -> float:
    unit = (unit or "").replace(" ", "")
    if unit == "%" or unit == "/100":
        value /= 100
    elif unit == "/10" or (1 < value <= 10):
        value /= 10
    elif value > 10:
        value /= 100
    return round(min(max(value, 0.0), 1.0), 2)


_JSON_PAIR = re.compile(r'"emotion"\s*:\s*"([^"]+)"\s*,\s*"level"\s*:\s*(\d+(?:\.\d+)?)\s*}')
# words the answer formats use as placeholders: weak models copy them ("emotion: 0.5")
TEMPLATE_NAMES = frozenset({"emotion", "emotions", "emotion name", "level", "label", "labels",
                            "name", "score", "expressiveness", "intensity"})


def parse_labels(text: str, mode: str) -> list[tuple[str, float]]:
    """-> [(name as the model wrote it, level 0..1)], in answer order (first = primary).

    An answer none of whose names maps into the taxonomy is unusable (label processing
    would drop every name): ParseError, naming them, so it is retried and then rejected
    rather than stored as an empty labelling. Partly unmapped answers are kept; processing
    drops and reports the unmapped names."""
    pairs = _label_pairs(text, mode)
    if not any(canonical_label(n) for n, _ in pairs):
        names = list(dict.fromkeys(normalize_name(n) for n, _ in pairs))
        if any(n in TEMPLATE_NAMES for n in names):
            shown = list(dict.fromkeys(f"{normalize_name(n)}: {s:g}" for n, s in pairs))
            raise ParseError(f"repeats the answer template ({_few(shown)})")
        raise ParseError(f"no emotion of the taxonomy ({_few(names)})")
    return pairs


def _few(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (f" and {len(names) - k} more" if len(names) > k else "")


def _label_pairs(text: str, mode: str) -> list[tuple[str, float]]:
    """The (name, level) pairs of an answer, at most 5; ParseError when there are none."""
    pairs: list[tuple[str, float]] = []
    if mode == "json":
        try:
            items = load_json(text).get("emotions")
        except ParseError:
            # an answer cut at max_tokens still holds its complete leading pairs
            items = [{"emotion": m.group(1), "level": m.group(2)} for m in _JSON_PAIR.finditer(text)]
            if not items:
                raise
        if not isinstance(items, list):
            raise ParseError("'emotions' is not a list")
        for it in items:
            if isinstance(it, dict) and isinstance(it.get("emotion"), str):
                try:
                    pairs.append((it["emotion"], _level(float(it.get("level")), None)))
                except (TypeError, ValueError):
                    continue
    else:
        for line in _lines(text):
            m = _SCORE_LINE.match(line)
            if m:
                pairs.append((normalize_name(m.group(1)),
                              _level(float(m.group(2)), m.group(3))))
    pairs = [(n, s) for n, s in pairs if normalize_name(n)]
    if not pairs:
        raise ParseError("no 'emotion: level' pairs found")
    return pairs[:5]


# ----------------------------------------------------------------------------- stages 4-6

# weak models sometimes repeat the instructions instead of answering
_ECHO = re.compile(r"rewrite the utterance|remove every clause|explain the situation|"
                   r"answer in json|write only the", re.I)


def parse_text(text: str, mode: str, field: str, min_words: int) -> str:
    value = load_json(text).get(field) if mode == "json" else text
    value = _require_text(value, field, min_words)
    if _ECHO.search(value):
        raise ParseError(f"{field} repeats the instructions")
    return value
