"""Labelled examples -> tokenized arrays -> deterministic, sharded, resumable batches.

Readers turn the synthetic dataset (JSON Lines written by data_gen, or the paper's release:
emopillars_jax/release.py), generic JSON Lines/CSV files (labels as a column of ids/names
or as one 0/1 column per class) and GoEmotions TSV files into `Examples`: one or two text
segments and a target matrix [N, num_labels] (0/1, or the teacher's soft scores).

Input order. The data order is defined by a fixed number of *logical shards* S, not by how
many processes read it: example i belongs to shard i % S, each shard is shuffled per epoch by
(seed, epoch, shard), grouped into length buckets and cut into batches of B / S rows; the
global batch of step t is the concatenation of every shard's t-th batch. Process p of P owns
shards [p*S/P, (p+1)*S/P) and tokenizes only those examples. So a run with S = 2 gives the
same batches on one process or two, and the iterator state is just (epoch, step).
"""
from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .errors import EmoPillarsError, reading_text
from .taxonomy import LABEL_TO_ID, LABELS

log = logging.getLogger(__name__)

# (text_a, text_b or None) lists -> (token ids, token type ids) per example, truncated
EncodeFn = Callable[[list[str], "list[str] | None"], tuple[list[Sequence[int]], list[Sequence[int]]]]


@dataclass
class Examples:
    text_a: list[str]
    text_b: list[str] | None          # second segment (the utterance in contextual mode)
    targets: np.ndarray               # [N, num_labels] float32
    source: str = ""

    def __len__(self) -> int:
        return len(self.text_a)

    def select(self, idx: Sequence[int]) -> "Examples":
        idx = list(idx)
        return Examples([self.text_a[i] for i in idx],
                        None if self.text_b is None else [self.text_b[i] for i in idx],
                        self.targets[idx], self.source)


# ----------------------------------------------------------------------------- readers

def context_segment(context: str, character: str | None) -> str:
    """Segment A of a contextual example: the situation, then who speaks."""
    context = (context or "").strip()
    return f"{context} {character.strip()}:" if character else context


def _label_ids(value, where: str, num_labels: int) -> list[int]:
    """Indices from a list of ints / label names, or a "1,5" / "joy,anger" string."""
    if isinstance(value, str):
        value = [v for v in value.replace(";", ",").replace(" ", ",").split(",") if v]
    if not isinstance(value, list):
        raise EmoPillarsError(f"{where}: expected a list of label ids or names, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            v = int(v)
        if isinstance(v, str):
            if v.strip().lower() not in LABEL_TO_ID:
                raise EmoPillarsError(f"{where}: unknown label name {v!r}")
            v = LABEL_TO_ID[v.strip().lower()]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < num_labels:
            raise EmoPillarsError(f"{where}: expected label ids in 0..{num_labels - 1}, got {v!r}")
        out.append(v)
    return out


def _is_label_name(value) -> bool:
    return isinstance(value, str) and value.strip().lower() in LABEL_TO_ID


def _soft_targets(pairs, where: str, num_labels: int) -> np.ndarray:
    """[[label, score], ...] or [{"label", "score"}, ...] -> a score vector (a label named
    twice keeps its highest score). The release writes some scores as strings ("0.8") and
    pairs either way round; both are read, anything else that is not a number is an error."""
    row = np.zeros(num_labels, np.float32)
    if not isinstance(pairs, list):
        raise EmoPillarsError(f"{where}: expected a list of [label, score] pairs, got {pairs!r}")
    for pair in pairs:
        if isinstance(pair, dict) and {"label", "score"} <= set(pair):
            pair = [pair["label"], pair["score"]]
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise EmoPillarsError(f"{where}: expected [label, score] pairs, got {pair!r}")
        label, score = pair
        if _is_label_name(score) and not _is_label_name(label):   # [score, label]
            label, score = score, label
        (idx,) = _label_ids([label], where, num_labels)
        try:
            if isinstance(score, bool):
                raise TypeError
            score = float(score)
        except (TypeError, ValueError):
            raise EmoPillarsError(f"{where}: expected a numeric score, got {score!r}") from None
        if not 0.0 <= score <= 1.0:
            raise EmoPillarsError(f"{where}: expected a score in [0, 1], got {score}")
        row[idx] = max(row[idx], score)
    return row


def _vector(value, where: str, num_labels: int) -> np.ndarray:
    if isinstance(value, str):   # CSV cell
        value = [v for v in value.replace(";", ",").split(",") if v.strip()]
    try:
        row = np.asarray(value, np.float32)
    except (TypeError, ValueError):
        row = None
    if row is None or row.shape != (num_labels,) or not ((row >= 0) & (row <= 1)).all():
        raise EmoPillarsError(f"{where}: expected {num_labels} scores in [0, 1]")
    return row


def _iter_jsonl(path: Path):
    with path.open(encoding="utf-8") as f, reading_text(path):
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EmoPillarsError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise EmoPillarsError(f"{path}:{n}: expected a JSON object per line")
            yield n, rec


def _iter_csv(path: Path):
    with path.open(encoding="utf-8", newline="") as f, reading_text(path):
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise EmoPillarsError(f"{path}: empty CSV file (expected a header row)")
        yield from enumerate(reader, 2)


def _field(rec: dict, name: str, where: str, kind=str):
    if name not in rec or rec[name] is None:
        raise EmoPillarsError(f"{where}: missing field '{name}'")
    if kind is str and not isinstance(rec[name], str):
        raise EmoPillarsError(f"{where}: field '{name}': expected a string, got {rec[name]!r}")
    return rec[name]


def _optional_field(rec: dict, name: str, where: str) -> str | None:
    if rec.get(name) is not None and not isinstance(rec[name], str):
        raise EmoPillarsError(f"{where}: field '{name}': expected a string, got {rec[name]!r}")
    return rec.get(name)


def _class_columns(header, path: Path, labels_field: str) -> dict[str, int] | None:
    """{column: class id} for a CSV with one 0/1 column per class (names as in LABELS, any
    case) and no labels column; None when the file has a labels column."""
    if labels_field in header:
        return None
    by_name = {h.strip().lower(): h for h in header if isinstance(h, str)}
    missing = [name for name in LABELS if name not in by_name]
    if len(missing) == len(LABELS):
        raise EmoPillarsError(f"{path}: no '{labels_field}' column (expected one, or a 0/1 "
                              "column per class named as the 28 GoEmotions classes)")
    if missing:
        raise EmoPillarsError(f"{path}: no '{labels_field}' column, and no 0/1 column for "
                              f"{len(missing)} of the {len(LABELS)} classes (missing: "
                              f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
    return {by_name[name]: i for i, name in enumerate(LABELS)}


def _binary_cell(rec: dict, column: str, where: str) -> bool:
    value = _field(rec, column, where).strip()
    if value not in ("0", "1", "0.0", "1.0"):
        raise EmoPillarsError(f"{where}: column '{column}': expected 0 or 1, got {value!r}")
    return float(value) == 1.0


def detect_format(path: Path, utterance_field: str = "utterance") -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".tsv":
        return "goemotions"
    if suffix in (".jsonl", ".json"):
        for _, rec in _iter_jsonl(path):
            return "emopillars" if utterance_field in rec else "jsonl"
        return "jsonl"
    raise EmoPillarsError(f"{path}: cannot tell the format from the name; set data.format "
                          "to emopillars, jsonl, csv or goemotions")


def read_examples(path: str | Path, *, format: str = "auto", mode: str = "contextless",
                  targets: str = "binary", num_labels: int, text_field: str = "text",
                  context_field: str = "context", labels_field: str = "labels",
                  character_field: str = "character", utterance_field: str = "utterance",
                  max_examples: int | None = None) -> Examples:
    """Read a labelled file into Examples (see the module doc for the formats).

    emopillars: records of `utterance_field` and `labels` (class ids), soft targets from
    `all_emotions_mapped` ([label, score] pairs) or `targets`; contextual records add
    `context_field` and, optional, `character_field`. jsonl/csv: `text_field` and
    `labels_field` (ids or names), or for a CSV without `labels_field` one 0/1 column per
    class named as in taxonomy.LABELS."""
    path = Path(path)
    if not path.is_file():
        raise EmoPillarsError(f"{path}: data file not found")
    fmt = detect_format(path, utterance_field) if format == "auto" else format
    contextual = mode == "contextual"
    text_a, text_b, rows = [], [], []

    def add(a: str, b: str | None, labels: list[int], soft: np.ndarray | None):
        row = np.zeros(num_labels, np.float32)
        row[labels] = 1.0
        if soft is not None:
            row = soft
        text_a.append(a)
        text_b.append(b)
        rows.append(row)

    if fmt == "emopillars":
        for n, rec in _iter_jsonl(path):
            where = f"{path}:{n}"
            utt = _field(rec, utterance_field, where)
            labels = _label_ids(_field(rec, "labels", where, list), f"{where}: labels", num_labels)
            soft = _vector(rec["targets"], f"{where}: targets", num_labels) \
                if targets == "soft" and rec.get("targets") is not None else \
                _soft_targets(_field(rec, "all_emotions_mapped", where, list),
                              f"{where}: all_emotions_mapped", num_labels) \
                if targets == "soft" else None
            if contextual:
                ctx = _field(rec, context_field, where)
                add(context_segment(ctx, _optional_field(rec, character_field, where)), utt,
                    labels, soft)
            else:
                add(utt, None, labels, soft)
            if max_examples and len(rows) >= max_examples:
                break
    elif fmt in ("jsonl", "csv"):
        records = _iter_jsonl(path) if fmt == "jsonl" else _iter_csv(path)
        columns = None   # CSV: {class column: id} when the labels are 0/1 columns
        for i, (n, rec) in enumerate(records):
            where = f"{path}:{n}"
            if fmt == "csv" and i == 0:
                columns = _class_columns(list(rec), path, labels_field)
                if columns and num_labels != len(LABELS):
                    raise EmoPillarsError(f"{path}: one column per taxonomy class needs "
                                          f"model.num_labels={len(LABELS)}, not {num_labels}")
            text = _field(rec, text_field, where)
            if columns:
                labels = [cls for col, cls in columns.items() if _binary_cell(rec, col, where)]
            else:
                labels = _label_ids(_field(rec, labels_field, where, None),
                                    f"{where}: {labels_field}", num_labels)
            soft = None
            if targets == "soft" and rec.get("targets") is not None:
                soft = _vector(rec["targets"], f"{where}: targets", num_labels)
            if contextual:
                add(context_segment(_field(rec, context_field, where),
                                    _optional_field(rec, character_field, where)),
                    text, labels, soft)
            else:
                add(text, None, labels, soft)
            if max_examples and len(rows) >= max_examples:
                break
    elif fmt == "goemotions":
        if contextual:
            raise EmoPillarsError(f"{path}: GoEmotions has no context; use data.mode=contextless")
        from .benchmarks.adapters import read_goemotions   # the one reader of the TSV format
        for rec in read_goemotions(path):
            add(rec["text"], None, _label_ids(rec["labels"], f"{path}: {rec['id']}", num_labels),
                None)
            if max_examples and len(rows) >= max_examples:
                break
    else:
        raise EmoPillarsError(f"{path}: unknown data format {fmt!r}")
    if not rows:
        raise EmoPillarsError(f"{path}: no examples")
    return Examples(text_a, text_b if contextual else None,
                    np.stack(rows).astype(np.float32), str(path))


# ----------------------------------------------------------------------------- encoding

@dataclass
class Encoded:
    """Tokenized examples, unpadded; `index` maps back to the positions in the source file."""
    ids: list[np.ndarray]
    type_ids: list[np.ndarray]
    targets: np.ndarray
    index: np.ndarray
    lengths: np.ndarray = field(init=False)

    def __post_init__(self):
        self.lengths = np.array([len(x) for x in self.ids], np.int64)

    def __len__(self) -> int:
        return len(self.ids)


def encode(examples: Examples, encode_fn: EncodeFn, index: Sequence[int] | None = None,
           chunk: int = 4096) -> Encoded:
    """Tokenize `examples` (or the subset `index`) in chunks."""
    index = np.arange(len(examples)) if index is None else np.asarray(index, np.int64)
    ids, types = [], []
    for start in range(0, len(index), chunk):
        part = examples.select(index[start:start + chunk])
        i, t = encode_fn(part.text_a, part.text_b)
        ids += [np.asarray(x, np.int32) for x in i]
        types += [np.asarray(x, np.int32) for x in t]
    return Encoded(ids, types, examples.targets[index], index)


def bucket_length(length: int, boundaries: Sequence[int]) -> int:
    """The smallest boundary >= length (the largest boundary if none is)."""
    for b in boundaries:
        if length <= b:
            return b
    return boundaries[-1]


def pad_batch(enc: Encoded, rows: Sequence[int], length: int, pad_id: int,
              batch_rows: int | None = None) -> dict[str, np.ndarray]:
    """Rows of `enc` padded to `length`; extra rows (up to batch_rows) have weight 0."""
    n = batch_rows or len(rows)
    ids = np.full((n, length), pad_id, np.int32)
    types = np.zeros((n, length), np.int32)
    mask = np.zeros((n, length), np.int32)
    targets = np.zeros((n, enc.targets.shape[1]), np.float32)
    weights = np.zeros((n,), np.float32)
    for j, r in enumerate(rows):
        k = min(len(enc.ids[r]), length)
        ids[j, :k] = enc.ids[r][:k]
        types[j, :k] = enc.type_ids[r][:k]
        mask[j, :k] = 1
        targets[j] = enc.targets[r]
        weights[j] = 1.0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
            "targets": targets, "weights": weights}


# ----------------------------------------------------------------------------- training order

def shard_sizes(n: int, num_shards: int) -> list[int]:
    return [len(range(s, n, num_shards)) for s in range(num_shards)]


def shard_epoch_batches(lengths: np.ndarray, rows: int, boundaries: Sequence[int], seed: int,
                        epoch: int, shard: int) -> list[np.ndarray]:
    """One shard's batches (positions into the shard) for one epoch, in training order.

    Shuffle, group by length bucket, cut full batches per bucket; leftovers of all buckets
    form mixed batches; the last partial batch is dropped. Then the batch order is shuffled.
    Every epoch therefore has len(lengths) // rows batches.
    """
    rng = np.random.default_rng([seed, epoch, shard])
    perm = rng.permutation(len(lengths))
    buckets = np.array([bucket_length(int(x), boundaries) for x in lengths[perm]])
    batches, leftover = [], []
    for b in boundaries:
        members = perm[buckets == b]
        full = len(members) // rows * rows
        batches += list(members[:full].reshape(-1, rows))
        leftover += list(members[full:])
    leftover = np.asarray(leftover, np.int64)
    full = len(leftover) // rows * rows
    batches += list(leftover[:full].reshape(-1, rows))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def _allgather_max(values: np.ndarray) -> np.ndarray:
    """Elementwise max of an int vector over all processes (identity on one process)."""
    import jax
    if jax.process_count() == 1:
        return values
    from jax.experimental import multihost_utils
    gathered = multihost_utils.process_allgather(values.astype(np.int32))
    return np.asarray(gathered).reshape(jax.process_count(), -1).max(axis=0)


class TrainLoader:
    """Deterministic, resumable training batches for this process (see the module doc).

    `shards` maps each logical shard this process owns to its Encoded examples; the
    iterator yields process-local batches of global_batch * len(shards) / num_shards rows.
    State: {"epoch", "step"} (step within the epoch), plus checks of seed and layout.
    """

    def __init__(self, shards: dict[int, Encoded], *, total: int, num_shards: int,
                 global_batch: int, seed: int, boundaries: Sequence[int], pad_id: int,
                 agree: Callable[[np.ndarray], np.ndarray] = _allgather_max):
        if global_batch % num_shards:
            raise EmoPillarsError(f"batch_size {global_batch} must be a multiple of the "
                                  f"number of data shards {num_shards}")
        self.shards = dict(sorted(shards.items()))
        self.num_shards, self.global_batch, self.seed = num_shards, global_batch, seed
        self.rows = global_batch // num_shards
        self.boundaries, self.pad_id = list(boundaries), pad_id
        self.steps_per_epoch = min(shard_sizes(total, num_shards)) // self.rows
        if self.steps_per_epoch == 0:
            raise EmoPillarsError(f"training set of {total} examples is smaller than one "
                                  f"batch of {global_batch}; lower batch_size")
        self.agree = agree   # local per-step lengths -> the max over all processes
        self.epoch, self.step = 0, 0
        self._plan_epoch = None

    def _epoch_batches(self, epoch: int) -> dict[int, list[np.ndarray]]:
        return {s: shard_epoch_batches(enc.lengths, self.rows, self.boundaries, self.seed,
                                       epoch, s)[:self.steps_per_epoch]
                for s, enc in self.shards.items()}

    def local_lengths(self, epoch: int) -> np.ndarray:
        """Per step of `epoch`, the bucket length this process's rows need."""
        local = np.zeros(self.steps_per_epoch, np.int64)
        for s, batches in self._epoch_batches(epoch).items():
            lengths = self.shards[s].lengths
            for t, rows in enumerate(batches):
                local[t] = max(local[t], bucket_length(int(lengths[rows].max()), self.boundaries))
        return local

    def _plan(self):
        """This epoch's batches per shard and each step's padded length (agreed globally)."""
        if self._plan_epoch == self.epoch:
            return
        self._batches = self._epoch_batches(self.epoch)
        self._lengths = self.agree(self.local_lengths(self.epoch))
        self._plan_epoch = self.epoch

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "seed": self.seed,
                "num_shards": self.num_shards, "global_batch": self.global_batch}

    def set_state(self, state: dict) -> None:
        for key in ("seed", "num_shards", "global_batch"):
            if state.get(key) != getattr(self, key):
                raise EmoPillarsError(f"checkpointed data iterator has {key}={state.get(key)}, "
                                      f"this run has {getattr(self, key)}: data order would "
                                      "change; keep them equal to resume")
        self.epoch, self.step = int(state["epoch"]), int(state["step"])

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.step >= self.steps_per_epoch:
            self.epoch, self.step = self.epoch + 1, 0
        self._plan()
        length = int(self._lengths[self.step])
        parts = [pad_batch(self.shards[s], self._batches[s][self.step], length, self.pad_id)
                 for s in self.shards]
        self.step += 1
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def eval_batches(enc: Encoded, global_batch: int, boundaries: Sequence[int], pad_id: int,
                 process_index: int = 0, process_count: int = 1):
    """Length-sorted evaluation batches; yields (this process's rows, global positions).

    Every process holds the whole (small) evaluation set and feeds its slice of each
    global batch; positions of padding rows are -1.
    """
    order = np.argsort(enc.lengths, kind="stable")
    per_proc = global_batch // process_count
    for start in range(0, len(order), global_batch):
        rows = order[start:start + global_batch]
        positions = np.full(global_batch, -1, np.int64)
        positions[:len(rows)] = rows
        length = bucket_length(int(enc.lengths[rows].max()), boundaries)
        mine = positions[process_index * per_proc:(process_index + 1) * per_proc]
        batch = pad_batch(enc, [int(r) for r in mine if r >= 0], length, pad_id, per_proc)
        yield batch, positions
