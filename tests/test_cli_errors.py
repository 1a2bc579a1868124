"""Every command-line failure a user can cause is one line on stderr and a non-zero exit; no
traceback unless ``--debug`` asks for it."""

from __future__ import annotations

import os

import pytest
import torch

from optimlab import _cli_errors, checkpoint, quicktask
from optimlab.cli import main

SECRET = "s3cretPW"


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _checkpoints(tmp_path):
    """name -> a file that is no usable checkpoint for `quicktrain`."""
    files = {}
    files["empty"] = tmp_path / "empty.pt"
    files["empty"].write_bytes(b"")
    files["random"] = tmp_path / "random.pt"
    files["random"].write_bytes(os.urandom(4000))
    good = tmp_path / "good.pt"
    model = quicktask.make_model()
    checkpoint.save(good, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), step=1)
    files["truncated"] = tmp_path / "truncated.pt"
    files["truncated"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["malicious"] = tmp_path / "malicious.pt"
    torch.save({"format": checkpoint.FORMAT, "step": 0, "extra": _Evil(str(tmp_path / "pwned"))}, files["malicious"])
    files["other model"] = tmp_path / "other.pt"
    other = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(other.parameters(), lr=0.1)
    checkpoint.save(files["other model"], model=other, optimizer=opt,
                    scheduler=torch.optim.lr_scheduler.StepLR(opt, 1), step=1)
    files["not a checkpoint"] = tmp_path / "weights.pt"
    torch.save({"weights": torch.zeros(3)}, files["not a checkpoint"])
    files["a folder"] = tmp_path / "folder.pt"
    files["a folder"].mkdir()
    return files


def one_line_failure(capsys, argv, *, debug_raises=True):
    """Run ``optimlab ARGV``: non-zero exit and exactly one line on stderr; return that line."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits itself
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and "warning:" not in line]
    assert code not in (0, None), err
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("optimlab")
    return lines[0]


CHECKPOINT_REASONS = {
    "empty": "not a readable optimlab checkpoint",
    "random": "not a readable optimlab checkpoint",
    "truncated": "not a readable optimlab checkpoint",
    "malicious": "not a readable optimlab checkpoint",
    "other model": "model",
    "not a checkpoint": "not an optimlab checkpoint",
    "a folder": "folder.pt",
}


@pytest.mark.parametrize("kind", list(CHECKPOINT_REASONS))
def test_bad_checkpoint_to_quicktrain(tmp_path, capsys, kind):
    path = _checkpoints(tmp_path)[kind]
    line = one_line_failure(capsys, ["quicktrain", "--steps", "2", "--checkpoint", str(path)])
    assert CHECKPOINT_REASONS[kind] in line
    assert not (tmp_path / "pwned").exists()  # the malicious pickle ran nothing


def test_debug_shows_the_traceback(tmp_path, capsys):
    path = _checkpoints(tmp_path)["empty"]
    with pytest.raises(ValueError, match="not a readable optimlab checkpoint"):
        main(["quicktrain", "--steps", "2", "--checkpoint", str(path), "--debug"])
    with pytest.raises(ValueError, match="not a readable optimlab checkpoint"):
        main(["--debug", "quicktrain", "--steps", "2", "--checkpoint", str(path)])


@pytest.mark.parametrize("argv, expected", [
    (["tune", "--trials", "1", "--storage", "nonsense://:x"], "storage must be a database URL"),
    (["tune", "--trials", "1", "--storage", f"mysql+nosuchdriver://u:{SECRET}@localhost/db"], "u:***@localhost"),
    (["tune", "--trials", "1", "--storage", "sqlite:////no/such/folder/study.db"], "No such file"),
    (["tune", "--trials", "1", "--storage-file", "/no/such/file"], "/no/such/file"),
    (["tune", "--trials", "1", "--storage", "sqlite://", "--storage-file", "x"], "not both"),
])
def test_bad_storage(capsys, argv, expected):
    line = one_line_failure(capsys, argv)
    assert expected in line
    assert SECRET not in line


def test_empty_storage_file(tmp_path, capsys):
    f = tmp_path / "url"
    f.write_text("# only a comment\n\n")
    assert "holds no database URL" in one_line_failure(capsys, ["tune", "--trials", "1", "--storage-file", str(f)])


@pytest.mark.parametrize("argv, expected", [
    (["quicktrain", "--steps", "x"], "--steps"),
    (["quicktrain", "--bogus"], "--bogus"),
    (["compare", "--landscape", "nowhere"], "--landscape"),
    (["sweep", "--num-lr", "0"], "--num-lr"),
    (["nosuchcommand"], "nosuchcommand"),
    (["quicktrain", "--steps", "2", "--optimizer", "nosuch"], "nosuch"),
])
def test_bad_flags(capsys, argv, expected):
    assert expected in one_line_failure(capsys, argv)


def test_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    line = one_line_failure(capsys, ["quicktrain", "--steps", "2", "--out", str(blocker / "model.pt")])
    assert "a-file" in line


def test_unexpected_errors_are_one_line_too(capsys):
    def broken(args):
        raise RuntimeError("something deep\nwith a second line")

    assert _cli_errors.run(broken, None, command="x") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: something deep with a second line" in err and "--debug" in err
    with pytest.raises(RuntimeError):
        _cli_errors.run(broken, None, command="x", debug=True)


def test_storage_url_from_environment_or_file(tmp_path, monkeypatch, capsys):
    from optimlab import tune

    monkeypatch.delenv(tune.STORAGE_ENV, raising=False)
    assert tune.storage_url() == tune.DEFAULT_STORAGE
    monkeypatch.setenv(tune.STORAGE_ENV, f"postgresql://u:{SECRET}@db/optuna")
    assert tune.storage_url() == f"postgresql://u:{SECRET}@db/optuna"
    f = tmp_path / "url"
    f.write_text(f"# the study\nsqlite:///{tmp_path}/s.db\n")
    assert tune.storage_url(file=str(f)) == f"sqlite:///{tmp_path}/s.db"  # the file wins over the environment
    assert tune.storage_url("sqlite:///x.db") == "sqlite:///x.db"  # the flag wins too
    capsys.readouterr()
    tune.storage_url(f"postgresql://u:{SECRET}@db/optuna")
    err = capsys.readouterr().err
    assert "visible to every local user" in err and SECRET not in err
