import subprocess
import sys

from emopillars_jax import cli


def test_help_lists_every_subcommand():
    out = subprocess.run([sys.executable, "-m", "emopillars_jax.cli", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for name in ("generate", "stats", "train", "evaluate", "export", "publish",
                 "predict", "demo"):
        assert name in out


def test_unbuilt_command_says_so_and_fails(capsys, monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "evaluate", (None, "x"))
    assert cli.main(["evaluate"]) == 2
    assert "not built yet" in capsys.readouterr().err


def test_user_errors_are_one_line(capsys):
    assert cli.main(["assets", "path", "/definitely/not/here"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "neither a known asset" in err


def test_os_errors_are_one_line_naming_the_path(tmp_path, capsys):
    """An output folder that is a file: the error names it instead of a traceback."""
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    data = tmp_path / "train.jsonl"
    data.write_text('{"text": "so happy", "labels": ["joy"]}\n')
    assert cli.main(["train", f"data.train={data}", "data.dev=null", "data.test=null",
                     f"out_dir={a_file / 'run'}", "max_steps=1", "batch_size=1",
                     "progress=false"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(a_file) in err and "Not a directory" in err
