"""The paper's released data as a source: its readers (fixtures written here) and
`emopillars data download emopillars` against a local fake of the Hub's download API."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import numpy as np
import pytest

from emopillars_jax import data as D
from emopillars_jax import release
from emopillars_jax.errors import EmoPillarsError
from emopillars_jax.taxonomy import LABEL_TO_ID, LABELS, NUM_LABELS
from _local_http import LocalServer

ROOT = Path(__file__).resolve().parents[1]
ARGS = dict(num_labels=NUM_LABELS)


def write_jsonl(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n"
                            for r in records), encoding="utf-8")
    return path


def one_line_error(match: str, fn, *args, **kwargs) -> str:
    with pytest.raises(EmoPillarsError, match=match) as err:
        fn(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


# --- readers -----------------------------------------------------------------------------
def release_record(**over):
    """A context-less record shaped like the release's: scores as numbers and as strings,
    one pair score-first, and the fields the reader does not use."""
    rec = {"plot_id": 17, "utterance": "You came all this way for me?",
           "primary_emotion": "surprise", "labels": [LABEL_TO_ID["surprise"],
                                                     LABEL_TO_ID["gratitude"]],
           "all_emotions_mapped": [["surprise", 0.9], ["gratitude", "0.7"], ["0.2", "joy"],
                                   ["caring", "0"]],
           "raw_emotion_explication": "surprise: 0.9, gratitude: 0.7", "expressiveness": 0.8}
    rec.update(over)
    return rec


def test_release_contextless_jsonl_binary_and_soft(tmp_path):
    path = write_jsonl(tmp_path / "contextless" / "train.jsonl",
                       [release_record(), release_record(utterance="Fine.", labels=[27],
                                                         all_emotions_mapped=[["neutral", 1]])])
    ex = D.read_examples(path, **ARGS)   # auto: a .jsonl with `utterance` is the emopillars format
    assert ex.text_a == ["You came all this way for me?", "Fine."] and ex.text_b is None
    assert set(np.flatnonzero(ex.targets[0])) == {LABEL_TO_ID["surprise"],
                                                  LABEL_TO_ID["gratitude"]}
    soft = D.read_examples(path, targets="soft", **ARGS).targets
    expected = {"surprise": 0.9, "gratitude": 0.7, "joy": 0.2, "caring": 0.0}
    for name, score in expected.items():
        assert soft[0, LABEL_TO_ID[name]] == pytest.approx(score)
    assert np.count_nonzero(soft[0]) == 3 and soft[1, LABEL_TO_ID["neutral"]] == 1.0


def test_release_contextual_field_names_are_configurable(tmp_path):
    rec = {"situation": "Her brother had sold the farm without a word.", "speaker": "Ada",
           "rewritten": "So that is how it is.", "utterance": "How could you sell it?",
           "labels": [LABEL_TO_ID["anger"]]}
    path = write_jsonl(tmp_path / "contextual.jsonl", [rec])
    ex = D.read_examples(path, mode="contextual", context_field="situation",
                         character_field="speaker", utterance_field="rewritten", **ARGS)
    assert ex.text_b == ["So that is how it is."]
    assert ex.text_a == [D.context_segment(rec["situation"], "Ada")]
    # the defaults: context, character, utterance (as data_gen writes them); no character is
    # allowed, a character that is not a string is not
    default = write_jsonl(tmp_path / "default.jsonl", [
        {"context": "The storm hit.", "utterance": "Hold on!", "labels": [14]}])
    ex = D.read_examples(default, mode="contextual", **ARGS)
    assert ex.text_a == ["The storm hit."] and ex.text_b == ["Hold on!"]
    bad = write_jsonl(tmp_path / "bad.jsonl", [
        {"context": "The storm hit.", "character": 7, "utterance": "Hold on!", "labels": [14]}])
    one_line_error(r"bad\.jsonl:1: field 'character': expected a string, got 7",
                   D.read_examples, bad, mode="contextual", **ARGS)
    one_line_error(r"contextual\.jsonl:1: missing field 'context'",
                   D.read_examples, path, mode="contextual", **ARGS)


def test_processed_copy_reads_as_before(tmp_path):
    path = write_jsonl(tmp_path / "validation.jsonl", [
        {"utterance": "What a lovely surprise!", "labels": [0, 17, 26]},
        {"utterance": "Leave me alone.", "labels": [2]}])
    ex = D.read_examples(path, **ARGS)
    assert ex.targets.sum() == 4 and ex.targets[0, [0, 17, 26]].tolist() == [1, 1, 1]
    one_line_error(r"validation\.jsonl:1: missing field 'all_emotions_mapped'",
                   D.read_examples, path, targets="soft", **ARGS)


def binary_csv(path: Path, rows, header=None) -> Path:
    header = header or ["id", "Text"] + [n.capitalize() for n in LABELS]
    path.write_text("\n".join([",".join(header)] + [",".join(r) for r in rows]) + "\n",
                    encoding="utf-8")
    return path


def cells(*on, value="1"):
    return [value if n in on else "0" for n in LABELS]


def test_text_plus_28_binary_columns_csv(tmp_path):
    path = binary_csv(tmp_path / "b.csv", [["a1", "thanks a lot", *cells("gratitude", "joy")],
                                           ["a2", "hmm", *cells("neutral")],
                                           ["a3", "nothing set", *cells()]])
    ex = D.read_examples(path, text_field="Text", **ARGS)
    assert ex.text_a == ["thanks a lot", "hmm", "nothing set"]
    assert set(np.flatnonzero(ex.targets[0])) == {LABEL_TO_ID["gratitude"], LABEL_TO_ID["joy"]}
    assert np.flatnonzero(ex.targets[1]).tolist() == [LABEL_TO_ID["neutral"]]
    assert ex.targets[2].sum() == 0
    # a labels column wins: the generic CSV reader, unchanged
    generic = tmp_path / "g.csv"
    generic.write_text("text,labels,joy\nyay,joy,0\n")
    assert np.flatnonzero(D.read_examples(generic, **ARGS).targets[0]).tolist() == [17]


@pytest.mark.parametrize("row, message", [
    (["a1", "ok", *cells("joy", value="2")], r"b\.csv:3: column 'Joy': expected 0 or 1, got '2'"),
    (["a1", "ok", *cells("joy", value="yes")], r"b\.csv:3: column 'Joy': expected 0 or 1"),
    (["a1", "ok", *cells()[:-1]], r"b\.csv:3: missing field 'Neutral'"),
])
def test_bad_binary_cells_name_file_line_and_column(tmp_path, row, message):
    path = binary_csv(tmp_path / "b.csv", [["a0", "fine", *cells("joy")], row])
    one_line_error(message, D.read_examples, path, text_field="Text", **ARGS)


def test_csv_without_labels_or_all_class_columns(tmp_path):
    partial = binary_csv(tmp_path / "p.csv", [["a", "x", *cells()[:-2]]],
                         header=["id", "text"] + list(LABELS[:-2]))
    one_line_error(r"p\.csv: no 'labels' column, and no 0/1 column for 2 of the 28 classes "
                   r"\(missing: surprise, neutral\)", D.read_examples, partial, **ARGS)
    none = tmp_path / "n.csv"
    none.write_text("text,score\nhi,3\n")
    one_line_error(r"n\.csv: no 'labels' column \(expected one, or a 0/1 column per class",
                   D.read_examples, none, **ARGS)


@pytest.mark.parametrize("over, message", [
    ({"utterance": ["not", "a", "string"]}, r"r\.jsonl:2: field 'utterance': expected a string"),
    ({"labels": "surprise;bliss"}, r"r\.jsonl:2: labels: unknown label name 'bliss'"),
    ({"labels": 5}, r"r\.jsonl:2: labels: expected a list of label ids or names, got 5"),
    ({"utterance": None}, r"r\.jsonl:2: missing field 'utterance'"),
    ({"all_emotions_mapped": [["joy", "high"]]},
     r"r\.jsonl:2: all_emotions_mapped: expected a numeric score, got 'high'"),
    ({"all_emotions_mapped": [["joy", True]]},
     r"r\.jsonl:2: all_emotions_mapped: expected a numeric score, got True"),
    ({"all_emotions_mapped": [["joy", "1.5"]]},
     r"r\.jsonl:2: all_emotions_mapped: expected a score in \[0, 1\], got 1\.5"),
    ({"all_emotions_mapped": [["joy", "nan"]]}, r"r\.jsonl:2: all_emotions_mapped: expected a score"),
    ({"all_emotions_mapped": [["bliss", 0.5]]},
     r"r\.jsonl:2: all_emotions_mapped: unknown label name 'bliss'"),
    ({"all_emotions_mapped": [["joy", 0.5, 0.1]]},
     r"r\.jsonl:2: all_emotions_mapped: expected \[label, score\] pairs"),
    ({"all_emotions_mapped": "joy 0.5"},
     r"r\.jsonl:2: all_emotions_mapped: expected a list of \[label, score\] pairs"),
])
def test_malformed_release_rows_name_file_line_and_field(tmp_path, over, message):
    path = write_jsonl(tmp_path / "r.jsonl", [release_record(), release_record(**over)])
    one_line_error(message, D.read_examples, path, targets="soft", **ARGS)


def test_utterance_field_also_picks_the_format(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"rewritten": "Well then.", "labels": [27]}])
    ex = D.read_examples(path, utterance_field="rewritten", **ARGS)
    assert ex.text_a == ["Well then."]


def test_data_config_has_the_field_names():
    from emopillars_jax.train_config import DataConfig
    d = DataConfig(character_field="speaker", utterance_field="rewritten")
    assert (d.context_field, d.character_field, d.utterance_field) == (
        "context", "speaker", "rewritten")
    assert DataConfig().character_field == "character"


# --- download ----------------------------------------------------------------------------
REPO = "someone/TinyRelease"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
FILES = {
    "README.md": b"---\nlicense: cc-by-4.0\n---\n# Tiny release\n",
    "contextless/train.jsonl": (json.dumps(release_record()) + "\n").encode(),
    "contextual/validation.jsonl": (json.dumps({"context": "It rained.", "character": "Bo",
                                                "utterance": "Oh.", "labels": [9]}) + "\n"
                                    ).encode(),
}


class FakeDatasetHub(LocalServer):
    """What snapshot_download calls for one public dataset repo of regular (non-LFS) files:
    GET /api/datasets/{id}/revision/{rev} (the commit sha), GET /api/datasets/{id}/tree/{sha}
    (the recursive listing), HEAD and GET /datasets/{id}/resolve/{sha}/{path}."""

    def __init__(self, repo_id=REPO, files=FILES, commit=COMMIT, refs=("main", "v1")):
        self.requests = []
        fake = self

        def blob_id(content: bytes) -> str:   # git's blob sha1, the Hub's ETag of a file
            return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def send(self, code, body=b"", headers=(), head=False):
                self.send_response(code)
                for k, v in {"Content-Length": str(len(body)), **dict(headers)}.items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def error(self, code, error_code, head=False):
                self.send(code, json.dumps({"error": error_code}).encode(),
                          {"X-Error-Code": error_code, "Content-Type": "application/json"},
                          head)

            def route(self, head):
                path = urllib.parse.unquote(self.path.split("?")[0])
                fake.requests.append((self.command, path))
                api = f"/api/datasets/{repo_id}/"
                resolve = f"/datasets/{repo_id}/resolve/{commit}/"
                if not (path.startswith(api) or path.startswith(resolve)):
                    return self.error(404, "RepoNotFound", head)
                if path.startswith(api + "revision/"):
                    rev = path[len(api + "revision/"):]
                    if rev not in (*refs, commit):
                        return self.error(404, "RevisionNotFound", head)
                    info = {"id": repo_id, "sha": commit, "private": False}
                    return self.send(200, json.dumps(info).encode(),
                                     {"Content-Type": "application/json"}, head)
                if path == api + f"tree/{commit}":
                    listing = [{"type": "file", "path": p, "size": len(c), "oid": blob_id(c)}
                               for p, c in files.items()]
                    listing += [{"type": "directory", "path": d, "oid": "f" * 40}
                                for d in sorted({p.split("/")[0] for p in files if "/" in p})]
                    return self.send(200, json.dumps(listing).encode(),
                                     {"Content-Type": "application/json"}, head)
                name = path[len(resolve):]
                if path.startswith(resolve) and name in files:
                    return self.send(200, files[name], {"X-Repo-Commit": commit,
                                                        "ETag": f'"{blob_id(files[name])}"'}, head)
                self.error(404, "EntryNotFound", head)

            def do_GET(self):
                self.route(head=False)

            def do_HEAD(self):
                self.route(head=True)

        self.serve(Handler)


@pytest.fixture
def fake_hub():
    server = FakeDatasetHub()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def isolated_hub(tmp_path, monkeypatch):
    """huggingface_hub read HF_HOME / HF_HUB_OFFLINE at import: point its cache into tmp_path
    and let it make requests (always to an explicit local endpoint in these tests)."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def quiet(_msg):
    pass


def test_download_writes_the_files_and_a_manifest(tmp_path, fake_hub):
    out = tmp_path / "data" / "emopillars"
    manifest = release.download_release(out, endpoint=fake_hub.url, repo_id=REPO, log=quiet)
    for name, content in FILES.items():
        assert (out / name).read_bytes() == content
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["repo_id"] == REPO and manifest["requested_revision"] == "main"
    assert manifest["commit"] == COMMIT and manifest["endpoint"] == fake_hub.url
    assert [f["path"] for f in manifest["files"]] == sorted(FILES)
    for f in manifest["files"]:
        assert f["size"] == len(FILES[f["path"]])
        assert f["sha256"] == hashlib.sha256(FILES[f["path"]]).hexdigest()
    assert manifest["downloaded_at"].startswith("20")
    # what the revision resolved to is what was downloaded
    assert ("GET", f"/api/datasets/{REPO}/revision/main") in fake_hub.requests
    assert ("GET", f"/datasets/{REPO}/resolve/{COMMIT}/README.md") in fake_hub.requests
    # and the readers take the downloaded files as they are
    ex = D.read_examples(out / "contextless" / "train.jsonl", targets="soft", **ARGS)
    assert ex.targets[0, LABEL_TO_ID["gratitude"]] == pytest.approx(0.7)
    ctx = D.read_examples(out / "contextual" / "validation.jsonl", mode="contextual", **ARGS)
    assert ctx.text_a == ["It rained. Bo:"] and ctx.text_b == ["Oh."]


def test_download_of_a_tag_records_both_names(tmp_path, fake_hub):
    manifest = release.download_release(tmp_path / "r", revision="v1", endpoint=fake_hub.url,
                                        repo_id=REPO, log=quiet)
    assert (manifest["requested_revision"], manifest["commit"]) == ("v1", COMMIT)
    one_line_error(rf"dataset repo {REPO} at {fake_hub.url} has no revision 'v9'",
                   release.download_release, tmp_path / "s", revision="v9",
                   endpoint=fake_hub.url, repo_id=REPO, log=quiet)


def test_download_without_network_is_one_line_and_creates_nothing(tmp_path):
    url = closed_port_url()
    one_line_error(rf"^cannot reach the Hub at {url}: .*no network\?",
                   release.download_release, tmp_path / "out", endpoint=url, log=quiet)
    assert not (tmp_path / "out").exists()


def test_unknown_repo_is_one_line(tmp_path, fake_hub):
    message = one_line_error(r"cannot read dataset repo someone/Missing at http://127\.0\.0\.1"
                             r":\d+: HTTP 404: not found, or private",
                             release.download_release, tmp_path / "out",
                             endpoint=fake_hub.url, repo_id="someone/Missing", log=quiet)
    assert "HF_TOKEN" in message and not (tmp_path / "out").exists()


def test_out_must_be_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    one_line_error(r"--out .*f: not a folder", release.download_release, tmp_path / "f",
                   endpoint=closed_port_url(), log=quiet)


def cli_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {**env, "HF_HOME": str(tmp_path / "hf"), **extra}


def test_cli_download_emopillars(tmp_path, fake_hub):
    out = tmp_path / "release"
    proc = subprocess.run([sys.executable, "-m", "emopillars_jax.cli", "data", "download",
                           "emopillars", "--endpoint", fake_hub.url, "--out", str(out)],
                          capture_output=True, text=True, env=cli_env(tmp_path), cwd=ROOT)
    # the real repo id is asked for; the fake serves only REPO, so this is its 404
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert f"cannot read dataset repo {release.RELEASE_REPO_ID}" in proc.stderr
    assert ("GET", f"/api/datasets/{release.RELEASE_REPO_ID}/revision/main") in fake_hub.requests

    served = FakeDatasetHub(repo_id=release.RELEASE_REPO_ID)
    try:
        proc = subprocess.run([sys.executable, "-m", "emopillars_jax.cli", "data", "download",
                               "emopillars", "--endpoint", served.url, "--out", str(out),
                               "--revision", "v1"],
                              capture_output=True, text=True, env=cli_env(tmp_path), cwd=ROOT)
    finally:
        served.close()
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["commit"] == COMMIT and manifest["requested_revision"] == "v1"
    assert (out / "contextless" / "train.jsonl").read_bytes() == FILES["contextless/train.jsonl"]
    assert f"commit {COMMIT[:12]}" in proc.stdout


def test_cli_offline_mode_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "emopillars_jax.cli", "data", "download",
                           "emopillars", "--endpoint", closed_port_url(),
                           "--out", str(tmp_path / "o")],
                          capture_output=True, text=True,
                          env=cli_env(tmp_path, HF_HUB_OFFLINE="1"), cwd=ROOT)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "HF_HUB_OFFLINE is set" in proc.stderr and not (tmp_path / "o").exists()


def test_cli_prepare_emopillars_says_what_to_do(capsys):
    from emopillars_jax import cli
    assert cli.main(["data", "prepare", "emopillars"]) == 1
    assert "needs no preparation" in capsys.readouterr().err
