"""Label processing exactly as the method describes: map off-taxonomy names to the
closest class (taxonomy.SYNONYMS), drop unmappable ones, keep a label when its level
is >= the threshold (0.3), and drop examples with no label left."""
from __future__ import annotations

from dataclasses import dataclass

from emopillars_jax.taxonomy import LABEL_TO_ID, NUM_LABELS, canonical_label, map_scored_labels, \
    normalize_name


@dataclass
class ProcessedLabels:
    all_emotions: list[dict]          # as answered: [{"label", "score"}], names normalised
    all_emotions_mapped: list[dict]   # in the taxonomy, max score per class, score-descending
    labels: list[int]                 # class indices with score >= threshold
    primary_emotion: str | None       # the first answered emotion that survived
    expressiveness: float | None      # its level
    unmapped: list[str]
    targets: list[float]              # 28 soft targets: the kept levels, 0 elsewhere

    @property
    def empty(self) -> bool:
        return not self.labels


def process_labels(pairs: list[tuple[str, float]], threshold: float = 0.3) -> ProcessedLabels:
    mapped = map_scored_labels(pairs)
    kept = {name: score for name, score in mapped.scores.items() if score >= threshold}
    primary = None
    for name, _ in pairs:   # the first answered emotion is the primary one (if it was kept)
        label = canonical_label(name)
        if label in kept:
            primary = label
            break
    targets = [0.0] * NUM_LABELS
    for name, score in kept.items():
        targets[LABEL_TO_ID[name]] = float(score)
    ordered = sorted(mapped.scores.items(), key=lambda kv: (-kv[1], LABEL_TO_ID[kv[0]]))
    return ProcessedLabels(
        all_emotions=[{"label": normalize_name(n), "score": float(s)} for n, s in pairs],
        all_emotions_mapped=[{"label": n, "score": float(s)} for n, s in ordered],
        labels=sorted(LABEL_TO_ID[n] for n in kept),
        primary_emotion=primary,
        expressiveness=float(kept[primary]) if primary else None,
        unmapped=mapped.unmapped,
        targets=targets)
