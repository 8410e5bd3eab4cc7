import json

import pytest

from data_gen.corpus import EMBEDDED, load_corpus, shard_plots
from emopillars_jax.errors import EmoPillarsError


def test_embedded_corpus_is_large_enough_and_well_formed():
    plots = load_corpus("embedded")
    assert len(plots) >= 30
    assert len({p.plot_id for p in plots}) == len(plots)
    for p in plots:
        assert 150 <= len(p.text.split()) <= 400, p.plot_id
        assert p.title and p.plot_id.startswith("pd-")
    # ids are stable: they are stored in the file, not derived from order
    first = json.loads(EMBEDDED.read_text().splitlines()[0])
    assert plots[0].plot_id == first["plot_id"]


def test_wikiplots_format(tmp_path):
    (tmp_path / "plots").write_text("A girl meets a wolf.\nShe runs.\n<EOS>\nA king dies.\n<EOS>\n")
    (tmp_path / "titles").write_text("Red\nLear\n")
    plots = load_corpus(str(tmp_path / "plots"))
    assert [(p.plot_id, p.title) for p in plots] == [("0", "Red"), ("1", "Lear")]
    assert plots[0].text == "A girl meets a wolf. She runs."
    (tmp_path / "titles").write_text("Red\n")
    with pytest.raises(EmoPillarsError, match="2 plots but 1 titles"):
        load_corpus(str(tmp_path / "plots"))
    (tmp_path / "titles").write_bytes(b"Red\n\xff\xd8\xff\xe0\n")
    with pytest.raises(EmoPillarsError, match=r"titles: not UTF-8 text"):
        load_corpus(str(tmp_path / "plots"))
    (tmp_path / "titles").unlink()
    with pytest.raises(EmoPillarsError, match="titles file"):
        load_corpus(str(tmp_path / "plots"))


def test_jsonl_and_folder_formats(tmp_path):
    f = tmp_path / "c.jsonl"
    f.write_text('{"plot_id": 7, "title": "T", "plot": "Some   text here."}\n\n')
    (p,) = load_corpus(str(f))
    assert (p.plot_id, p.title, p.text) == ("7", "T", "Some text here.")
    f.write_text('{"plot_id": 1, "title": "T"}\n')
    with pytest.raises(EmoPillarsError, match=r"c\.jsonl:1: missing field 'plot'"):
        load_corpus(str(f))
    f.write_text('{"plot_id": 1, "plot": "x"}\n{"plot_id": 1, "plot": "y"}\n')
    with pytest.raises(EmoPillarsError, match="duplicate plot_id '1'"):
        load_corpus(str(f))
    f.write_text('{"plot_id": 1, "plot": "x"\n')
    with pytest.raises(EmoPillarsError, match=r"c\.jsonl:1: invalid JSON"):
        load_corpus(str(f))
    f.write_bytes(b'{"plot_id": 1, "plot": "x"}\n\x00\xff\xfe\n')
    with pytest.raises(EmoPillarsError, match=r"c\.jsonl: not UTF-8 text"):
        load_corpus(str(f))
    f.write_text("\n")
    with pytest.raises(EmoPillarsError, match="corpus is empty"):
        load_corpus(str(f))
    d = tmp_path / "tales"
    d.mkdir()
    with pytest.raises(EmoPillarsError, match="no .txt files"):
        load_corpus(str(d))
    (d / "b_tale.txt").write_text("Second.")
    (d / "a_tale.txt").write_text("First.")
    assert [(p.plot_id, p.title) for p in load_corpus(str(d))] == \
        [("a_tale", "a tale"), ("b_tale", "b tale")]
    with pytest.raises(EmoPillarsError, match="not found"):
        load_corpus(str(tmp_path / "nope"))


def test_shards_partition_plots():
    plots = load_corpus("embedded")
    shards = [shard_plots(plots, i, 4) for i in range(4)]
    ids = [p.plot_id for s in shards for p in s]
    assert sorted(ids) == sorted(p.plot_id for p in plots) and len(set(ids)) == len(ids)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(EmoPillarsError, match="0 <= shard < num_shards"):
        shard_plots(plots, 4, 4)
