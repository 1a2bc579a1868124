"""Checkpoints: stop anywhere, resume bit for bit; atomic saves; a SIGKILLed run resumes exactly."""

import io
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from reliab_configs import CONFIGS

from optimlab import _atomic, checkpoint, cli

STEPS = 8
SCHEDULERS = {
    "step": lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5),
    "warmup_cosine": lambda opt: torch.optim.lr_scheduler.SequentialLR(
        opt, [torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3),
              torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)], milestones=[3]),
    "plateau": lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5),
}


def _setup(name, schedule, seed, dtype=torch.float32, **extra):
    cls, kwargs = CONFIGS[name]
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                                torch.nn.Linear(12, 1)).to(dtype)
    opt = cls(model.parameters(), **kwargs, **extra)
    return model, opt, SCHEDULERS[schedule](opt)


def _steps(model, opt, sched, start, stop, dtype=torch.float32):
    """Mini-batches and dropout draw from the global RNG, so resuming needs the RNG state too."""
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(64, 6, generator=gen).to(dtype)
    y = torch.cos(x.sum(1, keepdim=True))
    for _ in range(start, stop):
        idx = torch.randint(0, 64, (16,))
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        sched.step(loss.item()) if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau) else sched.step()


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    return a == b


@pytest.mark.parametrize("schedule", sorted(SCHEDULERS))
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_resume_at_every_step_is_bit_identical(name, schedule, tmp_path):
    torch.manual_seed(123)
    model, opt, sched = _setup(name, schedule, seed=0)
    _steps(model, opt, sched, 0, STEPS)
    for stop in range(STEPS + 1):
        torch.manual_seed(123)
        m1, o1, s1 = _setup(name, schedule, seed=0)
        _steps(m1, o1, s1, 0, stop)
        path = tmp_path / f"ckpt-{stop}.pt"
        checkpoint.save(path, model=m1, optimizer=o1, scheduler=s1, step=stop)
        torch.manual_seed(999)  # a fresh process: other weights, other RNG state
        m2, o2, s2 = _setup(name, schedule, seed=1)
        meta = checkpoint.load(path, model=m2, optimizer=o2, scheduler=s2)
        assert meta["step"] == stop
        _steps(m2, o2, s2, stop, STEPS)
        assert _same(m2.state_dict(), model.state_dict()), f"params differ after resuming at step {stop}"
        assert _same(o2.state_dict(), opt.state_dict()), f"optimizer state differs after resuming at step {stop}"
        assert _same(s2.state_dict(), sched.state_dict()), f"scheduler differs after resuming at step {stop}"


@pytest.mark.parametrize("name", ["adam", "nadam", "rmsprop"])
def test_resume_keeps_float32_state_of_bfloat16_params(name, tmp_path):
    dtype = torch.bfloat16
    torch.manual_seed(5)
    model, opt, sched = _setup(name, "step", seed=0, dtype=dtype, state_dtype=torch.float32)
    _steps(model, opt, sched, 0, STEPS, dtype)
    torch.manual_seed(5)
    m1, o1, s1 = _setup(name, "step", seed=0, dtype=dtype, state_dtype=torch.float32)
    _steps(m1, o1, s1, 0, 3, dtype)
    checkpoint.save(tmp_path / "c.pt", model=m1, optimizer=o1, scheduler=s1, step=3)
    m2, o2, s2 = _setup(name, "step", seed=1, dtype=dtype, state_dtype=torch.float32)
    checkpoint.load(tmp_path / "c.pt", model=m2, optimizer=o2, scheduler=s2)
    assert all(v.dtype == torch.float32 for st in o2.state.values() for k, v in st.items()
               if k in ("exp_avg", "exp_avg_sq", "square_avg"))
    _steps(m2, o2, s2, 3, STEPS, dtype)
    assert _same(m2.state_dict(), model.state_dict())
    assert _same(o2.state_dict(), opt.state_dict())


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_resume_keeps_nadam_mu_product_precision(dtype, tmp_path):
    """torch's load_state_dict would cast NAdam's float32 mu_product to the param dtype."""
    torch.manual_seed(5)
    model, opt, sched = _setup("nadam", "step", seed=0, dtype=dtype)
    _steps(model, opt, sched, 0, STEPS, dtype)
    torch.manual_seed(5)
    m1, o1, s1 = _setup("nadam", "step", seed=0, dtype=dtype)
    _steps(m1, o1, s1, 0, 3, dtype)
    checkpoint.save(tmp_path / "c.pt", model=m1, optimizer=o1, scheduler=s1, step=3)
    m2, o2, s2 = _setup("nadam", "step", seed=1, dtype=dtype)
    checkpoint.load(tmp_path / "c.pt", model=m2, optimizer=o2, scheduler=s2)
    assert all(s["mu_product"].dtype == o1.state[p]["mu_product"].dtype
               for s, p in zip(o2.state.values(), m1.parameters()))
    _steps(m2, o2, s2, 3, STEPS, dtype)
    assert _same(m2.state_dict(), model.state_dict())
    assert _same(o2.state_dict(), opt.state_dict())


def test_state_dict_moves_between_optimlab_and_torch_mid_run():
    """A checkpoint written with optimlab resumes in torch.optim and the other way round."""
    torch.manual_seed(0)
    model, opt, sched = _setup("adam", "step", seed=0)
    _steps(model, opt, sched, 0, 3)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    twin = torch.optim.Adam(model.parameters(), **CONFIGS["adam"][1])
    twin.load_state_dict(torch.load(buf, weights_only=True))
    assert _same(twin.state_dict()["state"], opt.state_dict()["state"])


class _Boom(OSError):
    pass


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = _setup("adam", "step", seed=0)
    _steps(model, opt, sched, 0, 2)
    path = tmp_path / "ckpt.pt"
    checkpoint.save(path, model=model, optimizer=opt, scheduler=sched, step=2)
    good = path.read_bytes()
    _steps(model, opt, sched, 2, 4)

    real_save = torch.save

    def torn_save(obj, f, *args, **kwargs):  # writes half a checkpoint, then the "disk" fails
        tmp = io.BytesIO()
        real_save(obj, tmp, *args, **kwargs)
        f.write(tmp.getvalue()[: len(tmp.getvalue()) // 2])
        raise _Boom("no space left on device")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(_Boom):
        checkpoint.save(path, model=model, optimizer=opt, scheduler=sched, step=4)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # no temporary file left behind
    m2, o2, s2 = _setup("adam", "step", seed=1)
    assert checkpoint.load(path, model=m2, optimizer=o2, scheduler=s2)["step"] == 2


def test_process_dying_mid_write_keeps_previous_checkpoint(tmp_path):
    """os._exit in the middle of the write: no cleanup runs, the target is still the old file."""
    path = tmp_path / "ckpt.pt"
    checkpoint.save(path, extra={"generation": 1})
    code = (
        "import os, sys\n"
        "from optimlab import checkpoint\n"
        "def write(f):\n"
        "    f.write(b'half a checkpoint'); f.flush(); os._exit(3)\n"
        f"checkpoint.atomic_write({str(path)!r}, write)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 3
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1  # the torn write went elsewhere...
    # ...and the resume removes it; a live writer's temporary file (this process's) is kept
    live = tmp_path / f".ckpt.pt.{_atomic._host()}.{os.getpid()}.abcd1234.tmp"
    live.write_bytes(b"being written")
    other_host = tmp_path / ".ckpt.pt.elsewhere.1.abcd1234.tmp"
    other_host.write_bytes(b"another host's writer")
    assert checkpoint.load(path)["extra"] == {"generation": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ckpt.pt", live.name, other_host.name])


def test_next_save_removes_a_killed_writers_temporary_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    stale = tmp_path / f".ckpt.pt.{_atomic._host()}.{writer.pid}.q1w2e3r4.tmp"
    stale.write_bytes(b"half")
    checkpoint.save(path, extra={"generation": 1})
    assert stale.exists()  # its writer is still running
    writer.kill()
    writer.wait()
    checkpoint.save(path, extra={"generation": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_load_rejects_other_files_and_missing_parts(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an optimlab checkpoint"):
        checkpoint.load(tmp_path / "other.pt")
    checkpoint.save(tmp_path / "model-only.pt", model=torch.nn.Linear(2, 1))
    with pytest.raises(ValueError, match="optimizer"):
        checkpoint.load(tmp_path / "model-only.pt", optimizer=torch.optim.SGD(torch.nn.Linear(2, 1).parameters()))


QUICKTRAIN = ["quicktrain", "--optimizer", "nadam", "--set", "lr=0.01", "--steps", "100", "--schedule", "cosine",
              "--seed", "3", "--threads", "1"]


def _quicktrain(*args):
    cmd = [sys.executable, "-m", "optimlab.cli", *QUICKTRAIN, *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_mid_run_then_resume_equals_uninterrupted_run(tmp_path, capsys):
    ckpt = tmp_path / "run.ckpt"
    victim = _quicktrain("--checkpoint", ckpt, "--checkpoint-every", 7, "--pause", 0.1,
                         "--out", tmp_path / "resumed.pt")
    deadline = time.monotonic() + 120
    seen = 0
    for line in victim.stdout:  # wait until the run is well past its first checkpoints
        if line.startswith("step "):
            seen = int(line.split()[1])
            if seen >= 20:
                break
        assert time.monotonic() < deadline, "the training subprocess made no progress"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert 20 <= seen < 100 and ckpt.exists() and not (tmp_path / "resumed.pt").exists()

    resumed = _quicktrain("--checkpoint", ckpt, "--checkpoint-every", 7, "--out", tmp_path / "resumed.pt")
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    first = out.splitlines()[0]
    assert first.startswith("resumed from step ") and 14 <= int(first.split()[-1]) < 100, first
    threads = torch.get_num_threads()
    try:  # the uninterrupted run, here (same command, same single thread as the subprocesses)
        assert cli.main([*QUICKTRAIN, "--out", str(tmp_path / "reference.pt")]) == 0
    finally:
        torch.set_num_threads(threads)
    ref_out = capsys.readouterr().out

    a = torch.load(tmp_path / "resumed.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "reference.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert out.splitlines()[-1] == ref_out.splitlines()[-1]  # same validation loss, printed the same


@pytest.mark.parametrize("argv, word", [(["--set", "lr"], "--set"), (["--optimizer", "lbfgs"], "optimizer"),
                                        (["--set", "lr=-1"], "lr"), (["--steps", "-1"], "steps"),
                                        (["--threads", "0"], "--threads")])
def test_quicktrain_bad_input_is_a_clear_error(argv, word, capsys):
    threads = torch.get_num_threads()
    try:
        assert cli.main(["quicktrain", *argv]) == 2
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert "error" in err and word in err
