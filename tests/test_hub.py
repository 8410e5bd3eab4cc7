"""Hub publishing against a local fake of the Hub's HTTP API, dataset cards, results tables."""
import base64
import json
import os
import socket
import subprocess
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml

from emopillars_jax import cli, hub
from emopillars_jax.errors import EmoPillarsError
from emopillars_jax.taxonomy import LABELS
from _local_http import LocalServer

ROOT = Path(__file__).resolve().parents[1]


class FakeHub(LocalServer):
    """The endpoints huggingface_hub calls for create_repo + upload_folder (regular files):
    POST /api/repos/create, /api/validate-yaml, /api/{type}s/{id}/preupload/{rev},
    /api/{type}s/{id}/commit/{rev} (ndjson with base64 file contents)."""

    def __init__(self, status: int = 200):
        self.created, self.files, self.headers, self.paths = [], {}, [], []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, code, obj):
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?")[0]
                fake.paths.append(path)
                fake.headers.append(dict(self.headers))
                if status != 200:
                    return self.reply(status, {"error": "Invalid credentials in Authorization"})
                if path == "/api/repos/create":
                    req = json.loads(data)
                    fake.created.append(req)
                    url = f"{fake.url}/{req['organization']}/{req['name']}"
                    return self.reply(200, {"url": url})
                if path == "/api/validate-yaml":
                    return self.reply(200, {})
                if "/preupload/" in path:
                    files = json.loads(data)["files"]
                    return self.reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                       "shouldIgnore": False} for f in files]})
                if "/commit/" in path:
                    for line in data.decode().splitlines():
                        item = json.loads(line)
                        if item["key"] == "file":
                            fake.files[item["value"]["path"]] = base64.b64decode(
                                item["value"]["content"])
                    kind, org, name = path.split("/")[2:5]   # /api/{kind}s/{org}/{name}/commit
                    prefix = "" if kind == "models" else f"/{kind}"
                    return self.reply(200, {"commitUrl": f"{fake.url}{prefix}/{org}/{name}"
                                                         f"/commit/{'a' * 40}",
                                            "commitOid": "a" * 40})
                self.reply(404, {"error": f"fake hub has no {path}"})

        self.serve(Handler)


@pytest.fixture
def fake_hub():
    server = FakeHub()
    yield server
    server.close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def model_folder(tmp_path: Path) -> Path:
    d = tmp_path / "exported"
    d.mkdir(parents=True)
    (d / "config.json").write_text('{"model_type": "bert"}')
    (d / "model.safetensors").write_bytes(os.urandom(5000))
    (d / "tokenizer.json").write_text('{"version": "1.0"}')
    (d / "README.md").write_text("---\nlicense: apache-2.0\n---\n# model\n")
    (d / ".git").mkdir()
    (d / ".git" / "HEAD").write_text("ref")   # ignored like upload_folder ignores it
    return d


def dataset_folder(tmp_path: Path, mixed: bool = False) -> Path:
    """The layout `emopillars generate` writes: OUT/dataset/<config>/<split>.jsonl and
    OUT/manifest.json with the provenance."""
    d = tmp_path / "gen" / "dataset"
    rows = [{"plot_id": "p1", "utterance": "I did it!", "labels": [17, 21], "primary_emotion":
             "joy", "all_emotions_mapped": [{"label": "joy", "score": 0.9},
                                            {"label": "pride", "score": 0.7}],
             "expressiveness": 0.9},
            {"plot_id": "p2", "utterance": "Leave me.", "labels": [2], "primary_emotion":
             "anger", "all_emotions_mapped": [{"label": "anger", "score": 0.8}],
             "expressiveness": 1}]
    if mixed:
        rows[0]["all_emotions"] = [["joy", 0.9]]
    for config in ("contextless", "contextual"):
        for split, recs in (("train", rows), ("validation", rows[:1]), ("test", rows[1:])):
            path = d / config / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            extra = {"context": "Because."} if config == "contextual" else {}
            path.write_text("".join(json.dumps({**r, **extra}) + "\n" for r in recs))
    (d.parent / "manifest.json").write_text(json.dumps(
        {"provenance": {"model_sha256": "ab" * 32, "seed": 0}, "versions": {"jax": "0.10.2"},
         "config": {"huge": "not in the card"}}))
    return d


# --- results table ------------------------------------------------------------------------
def test_results_table_has_metric_threshold_and_per_class_f1():
    text = hub.render_results_table({
        "metric": "macro_f1", "value": 0.512345, "value_std": 0.01, "threshold": 0.36,
        "micro_f1": 0.6, "per_class_f1": {"joy": 0.7, "anger": 0.25},
        "support": {"joy": 10, "anger": 4}, "per_class_thresholds": {"joy": 0.3, "anger": 0.4},
        "checkpoint": "latest", "checkpoint_step": 4068})
    assert "| checkpoint | latest (step 4068) |" in text
    assert "| metric | macro_f1 |" in text and "| value | 0.5123 ± 0.0100 |" in text
    assert "| threshold | 0.3600 |" in text and "| micro_f1 | 0.6000 |" in text
    assert "| class | F1 | support | threshold |" in text
    assert "| anger | 0.2500 | 4 | 0.4000 |" in text
    argmax = hub.render_results_table({"metric": "macro_f1", "value": 0.5, "threshold": None,
                                       "decision": "argmax"})
    assert "most probable class" in argmax and "| class |" not in argmax


def test_results_section_is_replaced_not_duplicated(tmp_path):
    folder = model_folder(tmp_path)
    hub.add_results_section(folder, {"metric": "macro_f1", "value": 0.4}, "GoEmotions dev")
    hub.add_results_section(folder, {"metric": "macro_f1", "value": 0.5}, "GoEmotions dev")
    hub.add_results_section(folder, {"metric": "emocontext_f1", "value": 0.7}, "EmoContext dev")
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlicense: apache-2.0") and card.count("## GoEmotions dev") == 1
    assert "| value | 0.5000 |" in card and "0.4000" not in card
    assert card.index("## GoEmotions dev") < card.index("## EmoContext dev")


# --- dataset card -------------------------------------------------------------------------
def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_dataset_card_loads_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets", reason="datasets is in the dev extra")
    folder = dataset_folder(tmp_path)
    card = hub.dataset_card(folder)
    meta = front_matter(card)
    assert [c["config_name"] for c in meta["configs"]] == ["contextless", "contextual"]
    assert meta["configs"][0]["data_files"] == [
        {"split": "train", "path": "contextless/train.jsonl"},
        {"split": "validation", "path": "contextless/validation.jsonl"},
        {"split": "test", "path": "contextless/test.jsonl"}]
    assert '"model_sha256"' in card and '"jax": "0.10.2"' in card and "huge" not in card
    assert "| 17 | joy | a feeling of pleasure and happiness | 1 | 1 |" in card
    info = meta["dataset_info"][1]
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == \
        {"train": 2, "validation": 1, "test": 1}
    features = datasets.Features._from_yaml_list(info["features"])
    assert features["labels"].feature.names == list(LABELS)
    assert features["expressiveness"].dtype == "float64"
    # the card is enough for `datasets` to load the folder with those types
    hub.write_dataset_card(folder)
    ds = datasets.load_dataset(str(folder), "contextual", split="train")
    assert ds.features["labels"].feature.names == list(LABELS) and ds[0]["labels"] == [17, 21]
    assert ds[0]["context"] == "Because." and ds[1]["all_emotions_mapped"][0]["score"] == 0.8


def test_dataset_card_declares_no_types_for_mixed_columns(tmp_path):
    meta_card = hub.dataset_card(dataset_folder(tmp_path, mixed=True))
    assert "`all_emotions` mixes value types" in meta_card
    assert "features" not in front_matter(meta_card)["dataset_info"][0]
    with pytest.raises(EmoPillarsError, match="no JSON Lines files"):
        hub.dataset_card(tmp_path / "empty")


# --- publish ------------------------------------------------------------------------------
def test_dry_run_lists_files_and_sizes_without_network(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    folder = model_folder(tmp_path)
    assert cli.main(["publish", str(folder), "--repo-id", "me/minilm-emo", "--dry-run",
                     "--private"]) == 0
    out = capsys.readouterr().out
    assert "would upload 4 file(s)" in out and "private model repo me/minilm-emo" in out
    assert "5,000  model.safetensors" in out and ".git" not in out
    data = dataset_folder(tmp_path)
    plan = hub.publish(data, "me/emo-data", repo_type="dataset", dry_run=True,
                       log=lambda m: None)["files"]
    assert "README.md" in dict(plan) and not (data / "README.md").exists()


def test_publish_model_uploads_every_file(tmp_path, fake_hub):
    folder = model_folder(tmp_path)
    out = hub.publish(folder, "me/minilm-emo", private=True, token="hf_test",
                      endpoint=fake_hub.url, log=lambda m: None)
    assert fake_hub.created == [{"name": "minilm-emo", "organization": "me", "type": "model",
                                 "visibility": "private"}]
    assert set(fake_hub.files) == {"config.json", "model.safetensors", "tokenizer.json",
                                   "README.md"}
    for name, content in fake_hub.files.items():
        assert content == (folder / name).read_bytes()
    assert fake_hub.headers[0]["authorization"] == "Bearer hf_test"
    assert out["url"].endswith("/me/minilm-emo") and out["commit"] == "a" * 40


def test_publish_cli_dataset_with_env_token_and_endpoint(tmp_path, fake_hub):
    folder = dataset_folder(tmp_path)
    env = {**os.environ, "HF_TOKEN": "hf_env", "HF_ENDPOINT": fake_hub.url,
           "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run([sys.executable, "-m", "emopillars_jax.cli", "publish", str(folder),
                           "--repo-id", "me/emo-data", "--repo-type", "dataset"],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "/api/datasets/me/emo-data/commit/main" in fake_hub.paths
    assert fake_hub.created[0]["type"] == "dataset" and "visibility" not in fake_hub.created[0]
    assert fake_hub.headers[0]["authorization"] == "Bearer hf_env"
    assert set(fake_hub.files) == {"README.md"} | {f"{c}/{s}.jsonl" for c in ("contextless",
                                   "contextual") for s in ("train", "validation", "test")}
    card = fake_hub.files["README.md"].decode()
    assert front_matter(card)["configs"][0]["config_name"] == "contextless"


def test_publish_without_token_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=closed_port_url())
    proc = subprocess.run([sys.executable, "-m", "emopillars_jax.cli", "publish",
                           str(model_folder(tmp_path)), "--repo-id", "me/m"],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "no Hugging Face token" in proc.stderr


def test_publish_without_network_is_one_line(tmp_path):
    with pytest.raises(EmoPillarsError, match=r"^cannot reach the Hub at http://127\.0\.0\.1"):
        hub.publish(model_folder(tmp_path), "me/m", token="hf_x", endpoint=closed_port_url(),
                    log=lambda m: None)


def test_publish_reports_the_hubs_refusal(tmp_path):
    server = FakeHub(status=401)
    try:
        with pytest.raises(EmoPillarsError, match=r"refused model repo me/m: HTTP 401.*hf auth"):
            hub.publish(model_folder(tmp_path), "me/m", token="bad", endpoint=server.url,
                        log=lambda m: None)
    finally:
        server.close()


def test_publish_checks_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmoPillarsError, match="no config.json.*no \\*.safetensors.*"
                                              "no tokenizer files"):
        hub.publish(tmp_path / "empty", "me/m", dry_run=True)
    with pytest.raises(EmoPillarsError, match="expected user/name"):
        hub.publish(model_folder(tmp_path), "just-a-name", dry_run=True)
    with pytest.raises(EmoPillarsError, match="--repo-id 'me/na me': Repo id must use"):
        hub.publish(model_folder(tmp_path / "a"), "me/na me", dry_run=True)
    no_tokenizer = model_folder(tmp_path / "b")
    (no_tokenizer / "tokenizer.json").unlink()
    with pytest.raises(EmoPillarsError, match=r"exported: no tokenizer files \(expected one "
                                              "of tokenizer.json, vocab.txt"):
        hub.publish(no_tokenizer, "me/m", dry_run=True)
    # a generation run folder: only its dataset/, never the intermediate stages
    data = dataset_folder(tmp_path / "c")
    (data.parent / "stages").mkdir()
    (data.parent / "stages" / "labels.jsonl").write_text('{"utterance_id": "u1"}\n')
    with pytest.raises(EmoPillarsError, match=f"a generation run folder, not its dataset; "
                                              f"publish {data} instead"):
        hub.publish(data.parent, "me/d", repo_type="dataset", dry_run=True)
    (data / "contextless" / "train.jsonl").write_bytes(b'{"utterance": "\xd0\xff"}\n')
    with pytest.raises(EmoPillarsError, match=r"contextless/train.jsonl: not UTF-8 text"):
        hub.publish(data, "me/d", repo_type="dataset", dry_run=True)
