"""Readers and the deterministic, sharded, resumable input pipeline (no JAX devices needed)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_tiny as tt  # noqa: E402

from emopillars_jax import data as D  # noqa: E402
from emopillars_jax.errors import EmoPillarsError  # noqa: E402
from emopillars_jax.taxonomy import LABEL_TO_ID, NUM_LABELS  # noqa: E402

ARGS = dict(num_labels=NUM_LABELS)


def write(path: Path, lines):
    path.write_text("".join((json.dumps(x) if not isinstance(x, str) else x) + "\n"
                            for x in lines))
    return path


def test_emopillars_reader_binary_soft_and_contextual(tmp_path):
    rec = {"utterance": "I did it!", "context": "She won the race.", "character": "Ann",
           "labels": [17, 21], "all_emotions_mapped": [{"label": "joy", "score": 0.9},
                                                       ["pride", 0.6], ["relief", 0.2]]}
    path = write(tmp_path / "train.jsonl", [rec])
    ex = D.read_examples(path, **ARGS)
    assert ex.text_a == ["I did it!"] and ex.text_b is None
    assert set(np.flatnonzero(ex.targets[0])) == {17, 21} and ex.targets[0].max() == 1.0
    soft = D.read_examples(path, targets="soft", **ARGS).targets[0]
    assert soft[LABEL_TO_ID["joy"]] == pytest.approx(0.9)
    assert soft[LABEL_TO_ID["relief"]] == pytest.approx(0.2)
    ctx = D.read_examples(path, mode="contextual", **ARGS)
    assert ctx.text_b == ["I did it!"] and "She won the race." in ctx.text_a[0]
    assert "Ann" in ctx.text_a[0]


def test_generic_jsonl_csv_and_goemotions(tmp_path):
    j = write(tmp_path / "a.jsonl", [{"text": "hi", "labels": ["joy", "love"]},
                                     {"text": "ok", "labels": "27"}])
    ex = D.read_examples(j, **ARGS)
    assert ex.targets[0, [17, 18]].tolist() == [1, 1] and ex.targets[1, 27] == 1
    c = tmp_path / "a.csv"
    c.write_text('text,labels\n"hello, you",3 5\nbye,neutral\n')
    ex = D.read_examples(c, **ARGS)
    assert ex.text_a == ["hello, you", "bye"] and ex.targets[0, [3, 5]].tolist() == [1, 1]
    g = tmp_path / "train.tsv"
    g.write_text("so good\t0,17\teid1\nmeh\t27\teid2\n")
    ex = D.read_examples(g, **ARGS)
    assert ex.targets.sum() == 3 and ex.targets[1, 27] == 1
    assert len(D.read_examples(g, max_examples=1, **ARGS)) == 1


@pytest.mark.parametrize("line, message", [
    ('{"utterance": "x"}', r"bad\.jsonl:1: missing field 'labels'"),
    ('{"utterance": "x", "labels": [40]}', r"bad\.jsonl:1: labels: expected label ids in 0\.\.27"),
    ('{"utterance": "x", "labels": ["bliss"]}', r"unknown label name 'bliss'"),
    ('{"utterance": 3, "labels": [1]}', r"field 'utterance': expected a string"),
    ('{not json', r"bad\.jsonl:1: invalid JSON"),
])
def test_bad_records_are_one_line_errors(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(EmoPillarsError, match=message) as err:
        D.read_examples(path, format="emopillars", **ARGS)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["bin.jsonl", "bin.csv"])
def test_a_binary_file_is_a_one_line_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"text,labels\n\x89PNG\r\n\x1a\n\x00\xff,1\n")
    with pytest.raises(EmoPillarsError, match=rf"{name}: not UTF-8 text"):
        D.read_examples(path, format="csv" if name.endswith("csv") else "jsonl", **ARGS)


def test_soft_scores_are_validated(tmp_path):
    path = write(tmp_path / "s.jsonl", [{"utterance": "x", "labels": [1],
                                         "all_emotions_mapped": [["joy", "high"]]}])
    with pytest.raises(EmoPillarsError, match="expected a numeric score"):
        D.read_examples(path, targets="soft", **ARGS)
    with pytest.raises(EmoPillarsError, match="not found"):
        D.read_examples(tmp_path / "missing.jsonl", **ARGS)


def encoded(n=203, seed=0):
    rng = np.random.default_rng(seed)
    texts = [" ".join(["w"] * int(k)) for k in rng.integers(1, 40, size=n)]
    ex = D.Examples(texts, None, np.eye(NUM_LABELS, dtype=np.float32)[rng.integers(0, 28, n)])
    return ex


def loader(ex, shards, num_shards=2, batch=8, seed=3, **kw):
    enc = {s: D.encode(ex, tt.char_encode, np.arange(s, len(ex), num_shards)) for s in shards}
    return D.TrainLoader(enc, total=len(ex), num_shards=num_shards, global_batch=batch,
                         seed=seed, boundaries=[8, 16, 48], pad_id=0, **kw)


def take(it, n):
    return [next(it) for _ in range(n)]


def test_loader_is_deterministic_bucketed_and_covers_each_epoch_once():
    ex = encoded()
    a, b = loader(ex, [0, 1]), loader(ex, [0, 1])
    spe = a.steps_per_epoch
    assert spe == min(D.shard_sizes(len(ex), 2)) // 4
    batches = take(a, spe)
    for x, y in zip(batches, take(b, spe)):
        assert all(np.array_equal(x[k], y[k]) for k in x)
    lengths = {x["input_ids"].shape[1] for x in batches}
    assert lengths <= {8, 16, 48} and len(lengths) > 1     # buckets, not one padded length
    for x in batches:   # padded to the bucket of the longest row, never beyond the next
        longest = x["attention_mask"].sum(1).max()
        assert x["input_ids"].shape[1] == D.bucket_length(int(longest), [8, 16, 48])
    # within an epoch no example repeats (rows identified by their first tokens + targets)
    seen = [tuple(r) for x in batches for r in np.concatenate(
        [x["input_ids"][:, :3], x["attention_mask"].sum(1, keepdims=True),
         x["targets"].argmax(1)[:, None]], 1)]
    assert all(x["weights"].all() for x in batches)
    assert len(seen) == spe * 8
    # the next epoch is a different order
    nxt = next(a)
    assert a.epoch == 1 and not np.array_equal(nxt["input_ids"][:2], batches[0]["input_ids"][:2])


def test_two_processes_see_the_same_global_batches_as_one():
    """Shards split over 'processes' give the same global batches as one process."""
    ex = encoded()
    procs = {}

    def agree_with(other):   # stands in for the all-gather between two processes
        return lambda local: np.maximum(local, procs[other].local_lengths(procs[1 - other].epoch))
    whole = loader(ex, [0, 1])
    p0 = procs[0] = loader(ex, [0], agree=agree_with(1))
    p1 = procs[1] = loader(ex, [1], agree=agree_with(0))
    for g, x, y in zip(take(whole, 30), take(p0, 30), take(p1, 30)):
        assert x["input_ids"].shape == y["input_ids"].shape      # lengths agree per step
        for k in g:
            assert np.array_equal(g[k], np.concatenate([x[k], y[k]]))


def test_loader_state_resumes_exactly_and_rejects_a_changed_layout():
    ex = encoded()
    a = loader(ex, [0, 1])
    take(a, 17)
    state = a.get_state()
    rest = take(a, 20)
    b = loader(ex, [0, 1])
    b.set_state(json.loads(json.dumps(state)))
    for x, y in zip(rest, take(b, 20)):
        assert all(np.array_equal(x[k], y[k]) for k in x)
    with pytest.raises(EmoPillarsError, match="seed"):
        loader(ex, [0, 1], seed=4).set_state(state)
    with pytest.raises(EmoPillarsError, match="smaller than one batch"):
        loader(encoded(10), [0, 1], batch=16)


def test_eval_batches_cover_every_row_once_with_padding_rows_weighted_zero():
    ex = encoded(37)
    enc = D.encode(ex, tt.char_encode)
    positions, weights = [], 0
    for proc in (0, 1):
        for batch, pos in D.eval_batches(enc, 8, [8, 16, 48], 0, proc, 2):
            assert batch["input_ids"].shape[0] == 4
            weights += batch["weights"].sum()
            if proc == 0:
                positions += [p for p in pos if p >= 0]
    assert sorted(positions) == list(range(37)) and weights == 37
