"""Readers of the downstream benchmarks' own files -> training records.

Every reader returns a list of records
    {"id": str, "text": str, "labels": [int, ...], "label_names": [str, ...]}
plus "context" (and "speaker") for the conversational benchmarks. `labels` index either
the 28-class taxonomy head (label_space="taxonomy", through taxonomy.BENCHMARK_LABEL_MAPS)
or the benchmark's own classes in that map's key order (label_space="native", a new head
of the benchmark's size). `label_names` keeps the benchmark's original names.

A malformed row stops with EmoPillarsError naming the file and line: a benchmark file
that does not parse is a wrong file, and silently skipping rows would change the scores.
"""
from __future__ import annotations

import csv
import io
import random
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterable

from ..errors import EmoPillarsError
from ..taxonomy import BENCHMARK_LABEL_MAPS, LABELS, benchmark_label_map, canonical_label

LABEL_SPACES = ("taxonomy", "native")
Record = dict


def _err(path, line: int | None, message: str) -> EmoPillarsError:
    where = f"{path}:{line}" if line is not None else str(path)
    return EmoPillarsError(f"{where}: {message}")


def class_names(benchmark: str, label_space: str = "taxonomy") -> list[str]:
    """Names of the head's classes, in index order, for a benchmark and label space."""
    if label_space not in LABEL_SPACES:
        raise EmoPillarsError(f"label_space {label_space!r}: expected one of {list(LABEL_SPACES)}")
    if label_space == "taxonomy":
        return list(LABELS)
    if benchmark not in BENCHMARK_LABEL_MAPS:
        raise EmoPillarsError(f"no label map for benchmark {benchmark!r}: expected one of "
                              f"{sorted(BENCHMARK_LABEL_MAPS)}")
    return list(BENCHMARK_LABEL_MAPS[benchmark])


def label_encoder(benchmark: str, label_space: str = "taxonomy"):
    """A function (names, path, line) -> sorted unique head indices; unknown name -> error."""
    if label_space == "taxonomy":
        mapping = benchmark_label_map(benchmark)
    else:
        mapping = {name: i for i, name in enumerate(class_names(benchmark, label_space))}

    def encode(names: Iterable[str], path, line: int | None) -> list[int]:
        ids = set()
        for name in names:
            key = name.strip().lower()
            if key not in mapping:
                raise _err(path, line, f"unknown {benchmark} label {name!r}: expected one of "
                                       f"{sorted(mapping)}")
            ids.add(mapping[key])
        return sorted(ids)
    return encode


# --- text clean-up ---------------------------------------------------------------------
# Runs of characters that cp1252 can encode, two or more long: UTF-8 bytes that were
# decoded as cp1252 look like this ('â€™' for '’', 'Ã©' for 'é').
_CP1252_RUN = re.compile("[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d"
                         "\u017e\u0192\u02c6\u02dc\u2013\u2014\u2018\u2019\u201a\u201c\u201d"
                         "\u201e\u2020\u2021\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]+")
_C1 = re.compile("[\u0080-\u009f]")   # cp1252 bytes read as latin-1 (e.g. '\x92' for '’')


def _redecode(match: re.Match) -> str:
    run = match.group()
    try:
        return run.encode("cp1252").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return run   # not mojibake after all: keep it


def _c1_to_cp1252(match: re.Match) -> str:
    return bytes([ord(match.group())]).decode("cp1252", errors="replace").replace("\ufffd", "")


def fix_mojibake(text: str) -> str:
    """Undo the two common encoding slips in these corpora; clean text passes unchanged."""
    text = _CP1252_RUN.sub(_redecode, text)
    return _C1.sub(_c1_to_cp1252, text)


def read_text(path: Path) -> str:
    """UTF-8 (BOM tolerated), else cp1252, else latin-1 (never fails): then mojibake fix."""
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "cp1252", "latin-1"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes any bytes")


def _lines(path: Path) -> list[str]:
    return read_text(path).replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise EmoPillarsError(f"{path}: file not found")
    return path


# --- GoEmotions ------------------------------------------------------------------------
def goemotions_label_names(folder: Path) -> list[str] | None:
    """The names in labels.txt / emotions.txt beside the TSVs (None when neither is there)."""
    for name in ("labels.txt", "emotions.txt"):
        path = folder / name
        if path.is_file():
            names = [n.strip() for n in _lines(path) if n.strip()]
            for i, n in enumerate(names):
                if canonical_label(n) != n:
                    raise _err(path, i + 1, f"{n!r} is not a GoEmotions class name")
            return names
    return None


def read_goemotions(path, label_space: str = "taxonomy", label_names: list[str] | None = None
                    ) -> list[Record]:
    """Official GoEmotions TSV: `text<TAB>comma-separated ids<TAB>comment id`, no header.

    Ids index labels.txt (or emotions.txt) beside the file when present, else the taxonomy
    (which has the same order).
    """
    path = _existing(path)
    names = label_names or goemotions_label_names(path.parent) or list(LABELS)
    encode = label_encoder("goemotions", label_space)
    records = []
    for lineno, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise _err(path, lineno, f"expected 3 tab-separated fields (text, label ids, "
                                     f"comment id), got {len(fields)}")
        text, ids, comment_id = fields
        try:
            ids = [int(i) for i in ids.split(",")]
        except ValueError:
            raise _err(path, lineno, f"label ids {ids!r}: expected comma-separated integers"
                       ) from None
        bad = [i for i in ids if not 0 <= i < len(names)]
        if bad:
            raise _err(path, lineno, f"label id {bad[0]} out of range 0..{len(names) - 1}")
        label_names_ = [names[i] for i in ids]
        records.append({"id": comment_id.strip(), "text": text,
                        "labels": encode(label_names_, path, lineno),
                        "label_names": label_names_})
    return records


def read_goemotions_tfds(split: str, data_dir: str | None = None,
                         label_space: str = "taxonomy") -> list[Record]:
    """GoEmotions through tensorflow-datasets' `goemotions` builder (optional extra).

    Uses `tfds.data_source` (array_record; no TensorFlow needed to read) on an already
    prepared builder, e.g. after `tfds build goemotions` or
    `tfds.builder("goemotions").download_and_prepare()`.
    Splits: train, validation, test.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise EmoPillarsError("reading GoEmotions through tensorflow-datasets needs the "
                              "optional extra: pip install 'emopillars[tfds]' (or use the "
                              "official TSVs: `emopillars data download goemotions`)") from None
    try:
        source = tfds.data_source("goemotions", split=split, data_dir=data_dir)
    except Exception as exc:  # tfds raises many types for a missing or unprepared builder
        raise EmoPillarsError(f"tensorflow-datasets goemotions split {split!r}: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                              ) from None
    encode = label_encoder("goemotions", label_space)
    records = []
    for i in range(len(source)):
        example = source[i]
        text = example["comment_text"]
        text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
        names = [name for name in LABELS if bool(example[name])]
        records.append({"id": f"{split}-{i}", "text": text,
                        "labels": encode(names, f"tfds goemotions/{split}", i),
                        "label_names": names})
    return records


# --- ISEAR -----------------------------------------------------------------------------
# In the ISEAR export 'á' (and the stray '|') mark the original text's line breaks, and
# quotes inside a text were written as \" or a lone backslash.
_ISEAR_BREAK = re.compile(r"\s*\u00e1?\s*\|\s*|\s*\u00e1(?=\s|$)")


def clean_isear_text(text: str) -> str:
    text = re.sub(r'\\"?', '"', fix_mojibake(text))
    text = re.sub(r"\s+", " ", _ISEAR_BREAK.sub(" ", text)).strip()
    if text.endswith('"') and text.count('"') % 2:
        text = text[:-1].rstrip()   # the closing quote of the original CSV field
    return text


def read_isear(path, label_space: str = "taxonomy", text_column: str = "SIT",
               label_column: str = "Field1") -> list[Record]:
    """ISEAR `|`-separated CSV with a header; text in SIT, label in Field1.

    About 2% of texts contain a stray `|`. The columns left of the text are taken from
    the start of the row and those right of it from the end, so the text keeps its `|`.
    """
    path = _existing(path)
    lines = _lines(path)
    header = lines[0].split("|") if lines else []
    if text_column not in header or label_column not in header:
        raise _err(path, 1, f"header must name the columns {text_column!r} and "
                            f"{label_column!r}, got {header[:6]}...")
    t, lab = header.index(text_column), header.index(label_column)
    if lab > t:
        raise _err(path, 1, f"expected {label_column!r} before {text_column!r} in the header")
    n_right = len(header) - t - 1
    encode = label_encoder("isear", label_space)
    id_col = header.index("MYKEY") if "MYKEY" in header else None
    records = []
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < len(header):
            raise _err(path, lineno, f"expected {len(header)} '|'-separated fields as in the "
                                     f"header, got {len(fields)}")
        text = "|".join(fields[t:len(fields) - n_right])
        label = fields[lab].strip()
        text = clean_isear_text(text)
        if not text:
            raise _err(path, lineno, f"empty text in column {text_column!r}")
        records.append({"id": fields[id_col] if id_col is not None else str(lineno),
                        "text": text, "labels": encode([label], path, lineno),
                        "label_names": [label.lower()]})
    return records


def _indices_by_first_label(records: list[Record]) -> dict[str, list[int]]:
    """Record indices per first original label: the strata of the splits below."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        by_class[(rec.get("label_names") or [""])[0]].append(i)
    return by_class


def cv_folds(records: list[Record], k: int = 5, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Deterministic stratified k-fold split: [(train indices, test indices)] * k.

    Stratified by the first original label; each class is shuffled with `seed` and dealt
    round-robin, so fold sizes differ by at most one per class.
    """
    if k < 2 or k > len(records):
        raise EmoPillarsError(f"cross-validation folds: expected 2 <= k <= {len(records)}, got {k}")
    by_class = _indices_by_first_label(records)
    rng = random.Random(seed)
    fold_of = [0] * len(records)
    offset = 0
    for name in sorted(by_class):
        idx = by_class[name]
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            fold_of[i] = (offset + j) % k
        offset += len(idx)   # continue dealing where the last class stopped: balanced sizes
    return [([i for i in range(len(records)) if fold_of[i] != f],
             [i for i in range(len(records)) if fold_of[i] == f]) for f in range(k)]


def holdout_split(records: list[Record], fraction: float,
                  seed: int = 0) -> tuple[list[int], list[int]]:
    """Deterministic stratified hold-out: (kept indices, held-out indices).

    Each class (first original label) gives round(fraction * its size) records, at least
    one when it has two or more, chosen by a `seed`-shuffle; file order is kept.
    """
    if not 0 < fraction < 1:
        raise EmoPillarsError(f"hold-out fraction: expected a number in (0, 1), got {fraction}")
    by_class = _indices_by_first_label(records)
    rng = random.Random(seed)
    held = set()
    for name in sorted(by_class):
        idx = by_class[name]
        rng.shuffle(idx)
        take = max(round(fraction * len(idx)), 1 if len(idx) >= 2 else 0)
        held.update(idx[:take])
    return ([i for i in range(len(records)) if i not in held],
            [i for i in range(len(records)) if i in held])


# --- EmoContext ------------------------------------------------------------------------
EMOCONTEXT_COLUMNS = ["id", "turn1", "turn2", "turn3", "label"]


def read_emocontext(path, label_space: str = "taxonomy", context_separator: str = "\n"
                    ) -> list[Record]:
    """SemEval-2019 Task 3 TSV with header `id turn1 turn2 turn3 label` (label optional).

    Turns 1-2 become the context, turn 3 the utterance whose emotion is labelled.
    """
    path = _existing(path)
    lines = _lines(path)
    header = [h.strip() for h in lines[0].split("\t")] if lines else []
    if header not in (EMOCONTEXT_COLUMNS, EMOCONTEXT_COLUMNS[:4]):
        raise _err(path, 1, f"expected the header {' '.join(EMOCONTEXT_COLUMNS)} "
                            f"(tab-separated), got {' '.join(header)!r}")
    encode = label_encoder("emocontext", label_space)
    records = []
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise _err(path, lineno, f"expected {len(header)} tab-separated fields "
                                     f"({' '.join(header)}), got {len(fields)}")
        turns = [fix_mojibake(f.strip()) for f in fields[1:4]]
        names = [fields[4].strip().lower()] if len(fields) == 5 else []
        records.append({"id": fields[0].strip(), "text": turns[2],
                        "context": context_separator.join(turns[:2]),
                        "labels": encode(names, path, lineno), "label_names": names})
    return records


# --- conversational CSVs: MELD and IEMOCAP (bring your own) ----------------------------
def _with_context(rows: list[dict], context_turns: int, separator: str) -> list[Record]:
    """Give each utterance the previous `context_turns` turns of its dialogue as context."""
    history: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        past = history[row["dialogue"]]
        row["context"] = separator.join(past[-context_turns:]) if context_turns else ""
        past.append(f"{row['speaker']}: {row['text']}" if row["speaker"] else row["text"])
        del row["dialogue"]
    return rows


def read_conversation_csv(path, benchmark: str, columns: dict[str, str],
                          label_space: str = "taxonomy", context_turns: int = 2,
                          separator: str = "\n", skip_labels: Iterable[str] = ()
                          ) -> list[Record]:
    """A CSV with one utterance per row; `columns` maps our fields (text, speaker, label,
    dialogue, turn) to the file's column names. Rows are ordered by (dialogue, turn).
    Rows labelled with a `skip_labels` name still give context to later turns, then go."""
    skip = set(skip_labels)
    path = _existing(path)
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    missing = [c for c in columns.values() if c not in (reader.fieldnames or [])]
    if missing:
        raise _err(path, 1, f"missing column(s) {missing}: expected the columns "
                            f"{list(columns.values())}, got {reader.fieldnames}")
    encode = label_encoder(benchmark, label_space)
    rows = []
    for row in reader:
        lineno = reader.line_num
        if None in row or any(row[c] is None for c in columns.values()):
            raise _err(path, lineno, f"expected {len(reader.fieldnames)} comma-separated "
                                     f"fields as in the header")
        text = fix_mojibake(row[columns["text"]]).strip()
        name = row[columns["label"]].strip().lower()
        try:
            turn = int(row[columns["turn"]])
        except ValueError:
            raise _err(path, lineno, f"column {columns['turn']!r}: expected an integer, "
                                     f"got {row[columns['turn']]!r}") from None
        dialogue = row[columns["dialogue"]].strip()
        rows.append({"id": f"{dialogue}_{turn}", "dialogue": dialogue, "turn": turn,
                     "speaker": fix_mojibake(row[columns["speaker"]]).strip(), "text": text,
                     "labels": [] if name in skip else encode([name], path, lineno),
                     "label_names": [name]})
    rows.sort(key=lambda r: (r["dialogue"].zfill(12), r["turn"]))
    return [{k: v for k, v in r.items() if k != "turn"}
            for r in _with_context(rows, context_turns, separator)
            if r["label_names"][0] not in skip]


MELD_COLUMNS = {"text": "Utterance", "speaker": "Speaker", "label": "Emotion",
                "dialogue": "Dialogue_ID", "turn": "Utterance_ID"}
IEMOCAP_CSV_COLUMNS = {"text": "text", "speaker": "speaker", "label": "emotion",
                       "dialogue": "dialogue_id", "turn": "utterance_id"}


def read_meld(path, label_space: str = "taxonomy", context_turns: int = 2) -> list[Record]:
    """MELD `*_sent_emo.csv` (Utterance, Speaker, Emotion, Sentiment, Dialogue_ID,
    Utterance_ID, ...); the previous `context_turns` turns of the dialogue become context."""
    return read_conversation_csv(path, "meld", MELD_COLUMNS, label_space, context_turns)


# IEMOCAP release: SessionN/dialog/transcriptions/<dialog>.txt holds lines
#   Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
# and SessionN/dialog/EmoEvaluation/<dialog>.txt holds, per utterance, the summary line
#   [6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]
_IEMO_TRANSCRIPT = re.compile(r"^(Ses\w+?_[MF]\d+)\s+\[([\d.]+)-[\d.]+\]:\s?(.*)$")
_IEMO_LABEL = re.compile(r"^\[[\d.]+ - [\d.]+\]\t(Ses\w+)\t(\w+)\t\[")
IEMOCAP_SKIP = ("xxx", "oth")   # no majority / "other": left out, as is customary


def read_iemocap(root, label_space: str = "taxonomy", context_turns: int = 2,
                 keep_labels: Iterable[str] | None = None) -> list[Record]:
    """IEMOCAP, bring your own copy (its licence does not allow redistribution).

    `root` is either the IEMOCAP_full_release folder (or one SessionN folder inside it)
    read from dialog/transcriptions and dialog/EmoEvaluation, or a CSV with the columns
    dialogue_id, utterance_id, speaker, text, emotion (IEMOCAP codes: neu, hap, exc, ang,
    sad, fru, sur, fea, dis). Utterances labelled xxx/oth are left out; `keep_labels`
    keeps only the listed codes (e.g. the 4-way setup: neu hap exc ang sad).
    """
    root = Path(root)
    keep = set(keep_labels) if keep_labels is not None else None
    if root.is_file():
        records = read_conversation_csv(root, "iemocap", IEMOCAP_CSV_COLUMNS, label_space,
                                        context_turns, skip_labels=IEMOCAP_SKIP)
    else:
        records = _read_iemocap_release(root, label_space, context_turns)
    return [r for r in records if keep is None or r["label_names"][0] in keep]


def _read_iemocap_release(root: Path, label_space: str, context_turns: int) -> list[Record]:
    sessions = sorted(root.glob("Session*")) if not root.name.startswith("Session") else [root]
    if not sessions:
        raise EmoPillarsError(f"{root}: expected an IEMOCAP_full_release folder with Session1.."
                              f"Session5 (or a CSV file with dialogue_id, utterance_id, "
                              f"speaker, text, emotion)")
    encode = label_encoder("iemocap", label_space)
    rows = []
    for session in sessions:
        transcripts = sorted((session / "dialog" / "transcriptions").glob("*.txt"))
        if not transcripts:
            raise EmoPillarsError(f"{session}: no dialog/transcriptions/*.txt files")
        for tpath in transcripts:
            lpath = session / "dialog" / "EmoEvaluation" / tpath.name
            if not lpath.is_file():
                raise EmoPillarsError(f"{lpath}: labels file for {tpath.name} not found")
            labels = {}
            for lineno, line in enumerate(_lines(lpath), 1):
                m = _IEMO_LABEL.match(line)
                if m:
                    labels[m.group(1)] = (m.group(2).lower(), lineno)
            utterances = []
            for lineno, line in enumerate(_lines(tpath), 1):
                if not line.strip() or not line.startswith("Ses"):
                    continue   # other speakers' lines (e.g. M/F overlap notes) carry no id
                m = _IEMO_TRANSCRIPT.match(line.strip())
                if not m:
                    if re.match(r"^Ses\w+_[MF]\d+\s", line):
                        raise _err(tpath, lineno, "expected `<utterance id> [start-end]: text`")
                    continue   # e.g. Ses01F_impro01_MXX0 lines without timings
                utt_id, start, text = m.groups()
                utterances.append((float(start), utt_id, text.strip(), lineno))
            for start, utt_id, text, lineno in sorted(utterances):
                if utt_id not in labels:
                    raise _err(tpath, lineno, f"utterance {utt_id} has no label in {lpath}")
                name, label_line = labels[utt_id]
                rows.append({"id": utt_id, "dialogue": tpath.stem, "session": session.name,
                             "speaker": utt_id.rsplit("_", 1)[1][0], "text": text,
                             "code": name, "where": (lpath, label_line)})
    out = []
    for row in rows:
        lpath, line = row.pop("where")
        name = row.pop("code")
        row["label_names"] = [name]
        row["labels"] = [] if name in IEMOCAP_SKIP else encode([name], lpath, line)
        out.append(row)
    # context is taken from every turn (also the skipped ones); then drop xxx/oth
    out = _with_context(out, context_turns, "\n")
    return [r for r in out if r["label_names"][0] not in IEMOCAP_SKIP]
