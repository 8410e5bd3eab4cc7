"""The one place that knows the emotion label set.

The 28 GoEmotions classes in their standard order (index 27 = neutral), a short
definition of each (used in generation prompts and model cards), the synonym map
that folds off-taxonomy names an LLM may answer with into the closest class, and
the label maps of the downstream benchmarks into the 28-class head.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

LABELS: tuple[str, ...] = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring",
    "confusion", "curiosity", "desire", "disappointment", "disapproval", "disgust",
    "embarrassment", "excitement", "fear", "gratitude", "grief", "joy", "love",
    "nervousness", "optimism", "pride", "realization", "relief", "remorse",
    "sadness", "surprise", "neutral",
)
NUM_LABELS = len(LABELS)
LABEL_TO_ID: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
NEUTRAL = "neutral"
NEUTRAL_ID = LABEL_TO_ID[NEUTRAL]

# Written for this project; short enough to fit all 28 into a prompt.
DEFINITIONS: dict[str, str] = {
    "admiration": "finding someone or something impressive or worthy of respect",
    "amusement": "finding something funny or being entertained",
    "anger": "a strong feeling of displeasure or hostility",
    "annoyance": "mild anger or irritation",
    "approval": "having or expressing a favourable opinion",
    "caring": "displaying kindness and concern for others",
    "confusion": "a lack of understanding or uncertainty",
    "curiosity": "a strong desire to know or learn something",
    "desire": "a strong wish for something or for something to happen",
    "disappointment": "sadness caused by unfulfilled hopes or expectations",
    "disapproval": "having or expressing an unfavourable opinion",
    "disgust": "revulsion or strong disapproval aroused by something unpleasant",
    "embarrassment": "self-consciousness, shame or awkwardness",
    "excitement": "feeling great enthusiasm and eagerness",
    "fear": "being afraid or worried",
    "gratitude": "feeling thankful and appreciative",
    "grief": "intense sorrow, especially caused by someone's death",
    "joy": "a feeling of pleasure and happiness",
    "love": "a strong positive emotion of regard and affection",
    "nervousness": "apprehension, worry or anxiety",
    "optimism": "hopefulness and confidence about the future",
    "pride": "pleasure or satisfaction from one's own or a close one's achievement",
    "realization": "becoming aware of something",
    "relief": "reassurance and relaxation after anxiety or distress ends",
    "remorse": "regret or guilt for a wrong one has done",
    "sadness": "emotional pain or sorrow",
    "surprise": "being astonished by something unexpected",
    "neutral": "no particular emotion is expressed",
}

# Off-taxonomy names an LLM commonly answers with -> closest class.
# Names not listed here (and not in LABELS) are dropped and reported.
SYNONYMS: dict[str, str] = {
    # fear / nervousness family
    "anxiety": "nervousness", "anxious": "nervousness", "worry": "nervousness",
    "worried": "nervousness", "apprehension": "nervousness", "unease": "nervousness",
    "uneasiness": "nervousness", "tension": "nervousness", "stress": "nervousness",
    "insecurity": "nervousness", "panic": "fear", "terror": "fear", "dread": "fear",
    "horror": "fear", "fright": "fear", "afraid": "fear", "scared": "fear",
    # anger family
    "indignation": "anger", "rage": "anger", "fury": "anger", "outrage": "anger",
    "resentment": "anger", "hostility": "anger", "hatred": "anger", "hate": "anger",
    "wrath": "anger", "frustration": "annoyance", "irritation": "annoyance",
    "exasperation": "annoyance", "impatience": "annoyance", "jealousy": "annoyance",
    "envy": "annoyance", "contempt": "disgust", "revulsion": "disgust",
    "defiance": "disapproval", "disdain": "disapproval", "skepticism": "disapproval",
    "scepticism": "disapproval", "suspicion": "disapproval", "distrust": "disapproval",
    # sadness family
    "sorrow": "sadness", "melancholy": "sadness", "despair": "sadness",
    "loneliness": "sadness", "hopelessness": "sadness", "longing": "desire",
    "yearning": "desire", "nostalgia": "sadness", "heartbreak": "grief",
    "mourning": "grief", "regret": "remorse", "guilt": "remorse", "repentance": "remorse",
    "shame": "embarrassment", "humiliation": "embarrassment", "awkwardness": "embarrassment",
    "self-consciousness": "embarrassment", "disillusionment": "disappointment",
    "discouragement": "disappointment", "dismay": "disappointment",
    # joy family
    "happiness": "joy", "delight": "joy", "elation": "joy", "contentment": "joy",
    "satisfaction": "joy", "bliss": "joy", "cheerfulness": "joy", "glee": "joy",
    "enthusiasm": "excitement", "eagerness": "excitement", "anticipation": "excitement",
    "thrill": "excitement", "hope": "optimism", "hopefulness": "optimism",
    "confidence": "optimism", "determination": "optimism", "resolve": "optimism",
    "trust": "approval", "acceptance": "approval", "agreement": "approval",
    "respect": "admiration", "awe": "admiration", "reverence": "admiration",
    "wonder": "surprise", "astonishment": "surprise", "amazement": "surprise",
    "shock": "surprise", "affection": "love", "tenderness": "love", "adoration": "love",
    "compassion": "caring", "sympathy": "caring", "empathy": "caring", "concern": "caring",
    "protectiveness": "caring", "kindness": "caring", "pity": "caring",
    "thankfulness": "gratitude", "appreciation": "gratitude", "humor": "amusement",
    "humour": "amusement", "playfulness": "amusement", "triumph": "pride",
    "accomplishment": "pride", "smugness": "pride", "arrogance": "pride",
    "interest": "curiosity", "intrigue": "curiosity", "fascination": "curiosity",
    "bewilderment": "confusion", "perplexity": "confusion", "puzzlement": "confusion",
    "doubt": "confusion", "uncertainty": "confusion", "understanding": "realization",
    "insight": "realization", "epiphany": "realization", "recognition": "realization",
    "calm": "relief", "calmness": "relief", "serenity": "relief", "reassurance": "relief",
    "lust": "desire", "greed": "desire", "ambition": "desire", "craving": "desire",
    "indifference": "neutral", "none": "neutral", "no emotion": "neutral",
}

# Downstream benchmark label names -> the 28-class head (one place, beside the taxonomy).
# Key order is each benchmark's own class order (its "native" head when not mapped).
BENCHMARK_LABEL_MAPS: dict[str, dict[str, str]] = {
    "goemotions": {name: name for name in LABELS},
    "isear": {"joy": "joy", "fear": "fear", "anger": "anger", "sadness": "sadness",
              "disgust": "disgust", "shame": "embarrassment", "guilt": "remorse"},
    "emocontext": {"happy": "joy", "sad": "sadness", "angry": "anger", "others": "neutral"},
    "meld": {"neutral": "neutral", "joy": "joy", "surprise": "surprise", "anger": "anger",
             "sadness": "sadness", "disgust": "disgust", "fear": "fear"},
    "iemocap": {"neu": "neutral", "hap": "joy", "exc": "excitement", "ang": "anger",
                "sad": "sadness", "fru": "annoyance", "sur": "surprise", "fea": "fear",
                "dis": "disgust"},
}

_SPACES = re.compile(r"[\s_]+")


def normalize_name(name: str) -> str:
    """Lower-case, trim, collapse spaces/underscores, strip surrounding punctuation."""
    return _SPACES.sub(" ", str(name).strip().lower()).strip(" .,:;!?\"'*()[]-")


def canonical_label(name: str) -> str | None:
    """The taxonomy class for ``name`` (a class or a known synonym), else None."""
    key = normalize_name(name)
    if key in LABEL_TO_ID:
        return key
    if key in SYNONYMS:
        return SYNONYMS[key]
    # simple inflections: "angry" is not handled, but "fears"/"sadnesses" are
    if key.endswith("s") and key[:-1] in LABEL_TO_ID:
        return key[:-1]
    return None


@dataclass
class MappedLabels:
    """Result of mapping LLM (name, score) answers into the taxonomy."""
    scores: dict[str, float] = field(default_factory=dict)  # class -> max score
    unmapped: list[str] = field(default_factory=list)        # names we could not map

    def label_ids(self, threshold: float) -> list[int]:
        return sorted(LABEL_TO_ID[n] for n, s in self.scores.items() if s >= threshold)


def map_scored_labels(pairs: list[tuple[str, float]]) -> MappedLabels:
    """Map (name, score) pairs into the taxonomy, keeping the max score per class."""
    out = MappedLabels()
    for name, score in pairs:
        label = canonical_label(name)
        if label is None:
            out.unmapped.append(normalize_name(name))
            continue
        out.scores[label] = max(float(score), out.scores.get(label, float("-inf")))
    return out


def label_id(name: str) -> int:
    """Index of a taxonomy class or synonym; ValueError naming the input otherwise."""
    label = canonical_label(name)
    if label is None:
        raise ValueError(f"unknown emotion label {name!r}: expected one of the 28 GoEmotions "
                         "classes or a known synonym")
    return LABEL_TO_ID[label]


def benchmark_label_map(benchmark: str) -> dict[str, int]:
    """A benchmark's label names -> 28-class head indices."""
    try:
        mapping = BENCHMARK_LABEL_MAPS[benchmark]
    except KeyError:
        raise ValueError(f"no label map for benchmark {benchmark!r}: expected one of "
                         f"{sorted(BENCHMARK_LABEL_MAPS)}") from None
    return {src: LABEL_TO_ID[dst] for src, dst in mapping.items()}


def multi_hot(label_ids: list[int], num_labels: int = NUM_LABELS) -> list[float]:
    vec = [0.0] * num_labels
    for i in label_ids:
        vec[i] = 1.0
    return vec


def prompt_label_list() -> str:
    """The closed label list with definitions, one per line, for LLM prompts."""
    return "\n".join(f"- {name}: {DEFINITIONS[name]}" for name in LABELS)
