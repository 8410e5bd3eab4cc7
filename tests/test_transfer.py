"""`emopillars transfer`: the (b) vs baseline table on hand-made results, and the whole runner
on a tiny GoEmotions release with real parts (the packaged MiniLM as baseline and, exported
with its fresh 28-class head, as the student; a few real training steps)."""
import json
from pathlib import Path

import pytest

from emopillars_jax import taxonomy as tx
from emopillars_jax.benchmarks import transfer as T
from emopillars_jax.config import load_config
from emopillars_jax.errors import EmoPillarsError

ROOT = Path(__file__).resolve().parents[1]


def result(value, metric="macro_f1", n=10, **extra):
    return {"value": value, "metric": metric, "n_examples": n, "checkpoint_step": 7, **extra}


def test_pair_row_means_sds_and_paired_difference():
    seeds = [{"finetuned": result(0.30), "baseline": result(0.10)},
             {"finetuned": result(0.34), "baseline": result(0.12)},
             {"finetuned": result(0.32), "baseline": result(0.14)}]
    row = T._pair_row("goemotions", seeds)
    assert row["finetuned"]["mean"] == pytest.approx(0.32)
    assert row["finetuned"]["sd"] == pytest.approx(0.02)      # sample sd of .30 .34 .32
    assert row["baseline"]["mean"] == pytest.approx(0.12)
    assert row["diff"]["values"] == pytest.approx([0.20, 0.22, 0.18])
    assert row["diff"]["mean"] == pytest.approx(0.20) and row["diff"]["sd"] == pytest.approx(0.02)
    assert row["clear_gain"] is True and row["spread_over"] == "3 seeds"
    # a gain inside twice the seeds' spread is not a clear one
    close = [{"finetuned": result(v + d), "baseline": result(v)}
             for v, d in ((0.1, 0.05), (0.3, -0.01), (0.2, 0.02))]
    assert T._pair_row("goemotions", close)["clear_gain"] is False


def test_pair_row_of_a_cross_validated_run_spreads_over_folds():
    cv = {"finetuned": result(0.70, folds=5, value_std=0.01),
          "baseline": result(0.65, folds=5, value_std=0.02)}
    row = T._pair_row("isear", [cv])
    assert row["spread_over"] == "5 folds"
    assert row["diff"]["mean"] == pytest.approx(0.05)
    assert row["baseline"]["sd"] == 0.02 and "clear_gain" not in row


def test_budget_gives_small_sets_the_minimum_steps():
    assert T.budget_overrides(500, 3, 32, 600) == ["max_steps=600", "checkpoint.every_steps=600"]
    # more data than the minimum needs: the recipe's epochs
    assert T.budget_overrides(10000, 3, 32, 600)[0] == "max_steps=936"


def test_markdown_says_split_size_and_spread():
    row = T._pair_row("goemotions", [{"finetuned": result(0.3, n=5426),
                                       "baseline": result(0.1, n=5426)}] * 2)
    row["n_train"] = 500
    text = T.transfer_markdown({"student": "s", "curve": [row], "benchmarks": {},
                                "zero_shot": {"examples": 5426, "own_threshold": 0.35,
                                              "macro_f1": 0.2, "swept_threshold": 0.2,
                                              "macro_f1_swept": 0.25}})
    assert "| 500 | 7 | 0.300 | 0.100 | +0.200 | yes | 2 seeds |" in text
    assert "Dev examples: 5,426." in text
    assert "0.200 at the student's threshold 0.35" in text and "optimistic" in text


def test_transfer_needs_an_exported_student(tmp_path):
    with pytest.raises(EmoPillarsError, match="not an exported model folder"):
        T.run_transfer(T.TransferConfig(student=str(tmp_path)))


def goemotions_release(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "labels.txt").write_text("\n".join(tx.LABELS))
    train = ["I love this so much\t18,17", "What is going on?\t6", "meh, whatever\t27",
             "Thanks a lot!\t15", "This is terrible\t9", "Haha that is funny\t1",
             "I am so scared\t14", "Go away\t2", "Wow, really?\t26", "I miss her\t25",
             "Great job!\t0", "Sorry about that\t24"]
    (folder / "train.tsv").write_text("".join(f"{t}\tid{i}\n" for i, t in enumerate(train)))
    (folder / "dev.tsv").write_text("So happy for you\t17\td1\nWhy would you do that\t7,10\td2\n"
                                    "I am afraid\t14\td3\nthank you\t15\td4\n")
    return folder


def test_transfer_runs_the_learning_curve_with_real_parts(tmp_path, monkeypatch):
    from emopillars_jax.assets import resolve
    from emopillars_jax.export import export_model
    from emopillars_jax.models import load_encoder
    monkeypatch.chdir(ROOT)          # the runner reads configs/finetune_goemotions.yaml
    student = export_model(load_encoder("minilm-l6", seed=1)[0], tmp_path / "student",
                           tokenizer_folder=resolve("minilm-l6"))
    source = goemotions_release(tmp_path / "goemotions")
    cfg = load_config(T.TransferConfig, ROOT / "configs" / "transfer.yaml", [
        f"out_dir={tmp_path / 'transfer'}", f"student={student}", "benchmarks=[goemotions]",
        f"sources={{goemotions: {source}}}", "seeds=[0, 1]",
        "goemotions.sizes=[8, all]", "goemotions.min_steps=3",
        "overrides={goemotions: [batch_size=4, epochs=1, data.max_length=16, "
        "'data.bucket_boundaries=[16]', progress=false, checkpoint.async_save=false]}"])
    out = T.run_transfer(cfg, log=lambda m: None)
    small, full = out["curve"]
    assert (small["n_train"], small["seeds"], full["n_train"], full["seeds"]) == (8, 2, 12, 1)
    assert small["baseline"]["steps"] == 3          # min_steps over 1 epoch of 2 steps
    assert full["baseline"]["steps"] == 3           # all 12: the recipe's 1 epoch of 3 steps
    for row in out["curve"]:
        assert row["baseline"]["n_dev"] == 4
        assert row["diff"]["mean"] == pytest.approx(row["finetuned"]["mean"]
                                                    - row["baseline"]["mean"])
    # each seed draws its own sample, the same for both variants
    runs = tmp_path / "transfer" / "goemotions" / "n8"
    samples = [(runs / f"seed{s}" / "data" / f"train_n8_seed{s}.jsonl").read_text()
               for s in (0, 1)]
    assert samples[0] != samples[1] and all(s.count("\n") == 8 for s in samples)
    trained = json.loads((runs / "seed1" / "finetuned" / "main" / "results.json").read_text())
    assert trained["model"] == str(student) and trained["checkpoint_step"] == 3
    z = out["zero_shot"]
    assert z["examples"] == 4 and 0 <= z["macro_f1"] <= z["macro_f1_swept"] <= 1
    assert z["own_threshold"] == 0.5        # an untrained export keeps the default
    md = (tmp_path / "transfer" / "transfer.md").read_text()
    assert "| 8 | 3 |" in md and "| 12 | 3 |" in md and "2 seeds" in md
    assert (tmp_path / "transfer" / "learning_curve.png").stat().st_size > 5000
    # a re-run finds every run finished and trains nothing
    again = T.run_transfer(cfg, train_fn=lambda *a, **k: pytest.fail("retrained"),
                           log=lambda m: None)
    assert again["curve"] == out["curve"]
