"""The catalogue: every optimizer declared once and reachable through every surface.

A throw-away algorithm (sign descent with an EWMA, Lion-like) is declared in ONE ``declare`` call
here and must then appear and run as a drop-in class, in the lab engine, ``optimlab compare``,
``/api/meta``, ``optimlab train`` and ``optimlab tune``, with no other file touched.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import stat
import subprocess
import sys
import warnings

import pytest
import torch

import optimlab
from optimlab import catalogue, schedules
from optimlab.algorithms._base import Rule, validator, zeros
from optimlab._checks import check_betas, check_nonnegative
from optimlab.cli import build_parser, main


# --- a throw-away algorithm, declared once -------------------------------------------------------

def _toy_update(param, grad, exp_avg, *, lr, beta1=0.9, beta2=0.99, weight_decay=0.0):
    """Lion's update (Chen et al., 2023): w -= lr * sign(b1*m + (1-b1)*g); m = b2*m + (1-b2)*g."""
    direction = torch.sign(beta1 * exp_avg + (1 - beta1) * grad)
    return {"param": param * (1 - lr * weight_decay) - lr * direction,
            "exp_avg": beta2 * exp_avg + (1 - beta2) * grad}


TOY = Rule("toy-lion", _toy_update, lambda p, g: {"exp_avg": zeros(p)},
           lambda g: {"lr": g["lr"], "beta1": g["betas"][0], "beta2": g["betas"][1], "weight_decay": g["weight_decay"]},
           validator({"lr": check_nonnegative, "betas": check_betas, "weight_decay": check_nonnegative}),
           counts_steps=False)


@pytest.fixture
def toy():
    catalogue.declare(
        catalogue.Algorithm("ToyLion", TOY, "Sign descent with an EWMA (Lion-like), a throw-away declaration.",
                            arguments=(("lr", 1e-4), ("betas", (0.9, 0.99)), ("weight_decay", 0.0))),
        catalogue.Entry("toy-lion", "ToyLion", "Toy Lion", "#123456", "not in the seeds", 1e-3, ("span", 0.002),
                        {"lr": catalogue.Range(1e-5, 1e-1, log=True), "beta1": catalogue.Range(0.5, 0.99)},
                        aliases=("toylion",)))
    yield catalogue.get("toy-lion")
    catalogue.forget("toy-lion")


def _reference(w0, grads, lr, b1, b2):
    w, m = w0.double().clone(), torch.zeros_like(w0, dtype=torch.float64)
    for g in grads:
        g = g.double()
        w = w - lr * torch.sign(b1 * m + (1 - b1) * g)
        m = b2 * m + (1 - b2) * g
    return w


def test_a_declared_algorithm_is_a_drop_in_class_fused_and_eager(toy):
    cls = optimlab.ToyLion
    assert cls is toy.cls and "lr=0.0001" in str(__import__("inspect").signature(cls))
    assert "Sign descent" in cls.__doc__
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(1000, generator=gen)
    grads = [torch.randn(1000, generator=gen) for _ in range(5)]
    from optimlab import kernels

    results = {}
    fused_before = kernels.stats["fused_tensors"]
    for fused in (True, False):
        w = torch.nn.Parameter(w0.clone())
        opt = cls([w], lr=0.01, betas=(0.8, 0.95), fused=fused)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # the op table has sign: no eager fallback
            for g in grads:
                w.grad = g.clone()
                opt.step()
        results[fused] = w.detach().clone()
    assert kernels.stats["fused_tensors"] - fused_before == len(grads)  # the fused run really was fused
    assert torch.equal(results[True], results[False])
    assert torch.allclose(results[True].double(), _reference(w0, grads, 0.01, 0.8, 0.95), atol=1e-6)
    with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0, 1\)"):
        cls([torch.nn.Parameter(w0.clone())], betas=(0.9, 1.5))


def test_a_declared_entry_reaches_every_surface(toy, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from optimlab.lab import engine
    from optimlab.train import train
    from optimlab.web import create_app

    assert catalogue.get("TOYLION") is toy  # case-insensitive alias
    run = engine.run("bowl", "toy-lion", [[1.0, 1.0]], 10, lr=0.05)
    assert torch.isfinite(run.path).all() and run.optimizer is toy
    assert main(["compare", "--landscape", "bowl", "--optimizers", "sgd,Toy-Lion", "--lr", "0.05", "--steps", "10",
                 "--out", str(tmp_path / "cmp")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "cmp" / "results.csv")))
    assert [r["optimizer"] for r in rows] == ["sgd", "toy-lion"]
    with TestClient(create_app()) as client:
        meta = client.get("/api/meta").json()
    info = next(o for o in meta["optimizers"] if o["name"] == "toy-lion")
    assert set(info["knobs"]) == {"beta1", "beta2"} and info["colour"] == "#123456"
    result = train("cancer-logreg", "toy-lion", 1e-3, steps=5, eval_every=5)
    assert result.optimizer == "toy-lion" and result.steps == 5 and len(result.train_loss) == 5
    optuna = pytest.importorskip("optuna")
    study = optuna.create_study()
    from optimlab import tune
    trial = study.ask()
    hp = tune.suggest(trial, "toy-lion")
    assert set(trial.params) == {"lr", "beta1"} and toy.cls([torch.zeros(2, requires_grad=True)], **hp)


# --- every entry through every surface --------------------------------------------------------------

def test_every_entry_is_reachable_everywhere_with_one_colour():
    from fastapi.testclient import TestClient

    from optimlab.lab import engine, plots
    from optimlab.web import create_app

    with TestClient(create_app()) as client:
        meta = client.get("/api/meta").json()
    web = {o["name"]: o for o in meta["optimizers"]}
    assert list(web) == catalogue.lab_names()
    colours = catalogue.colours()
    assert len(set(colours.values())) == len(colours), "two optimizers share a colour"
    assert plots.colors_for(catalogue.names()) == colours
    for entry in catalogue.entries():
        assert re.fullmatch(r"#[0-9A-Fa-f]{6}", entry.colour)
        assert catalogue.get(entry.name.upper()) is entry
        for alias in entry.aliases:
            assert catalogue.get(alias) is entry
        if entry.lab:
            assert web[entry.name]["colour"] == entry.colour and web[entry.name]["label"] == entry.label
            for land in meta["landscapes"]:
                assert land["default_lr"][entry.name] == catalogue.lab_lr(entry, land["name"]) > 0
            run = engine.run("bowl", entry.name, [[1.0, 1.0]], 3)  # the lab
            assert torch.isfinite(run.path).all()
        opt = entry.make([torch.nn.Parameter(torch.ones(3))], lr=0.01)  # train / demo / quicktrain
        assert type(opt) is entry.cls and opt.param_groups[0]["lr"] == 0.01
        if entry.torch is not None:
            name, kwargs = entry.torch
            theirs = getattr(torch.optim, name)([torch.nn.Parameter(torch.ones(3))], lr=0.01, **kwargs)
            ours = {k: v for k, v in opt.defaults.items() if k in theirs.defaults}
            same = {k: theirs.defaults[k] for k in ours}
            if entry.lookahead:  # the look-ahead NAG's drop-in form sets momentum_form only
                assert ours == same
            else:
                assert ours == same, entry.name
        assert set(entry.tune) and "lr" in entry.tune
    assert catalogue.main_names() == ("sgd", "momentum", "nag", "adagrad", "rmsprop", "adam", "nadam")


def test_unknown_names_get_the_closest_one_in_every_command(capsys):
    with pytest.raises(ValueError, match="did you mean 'adam'"):
        catalogue.get("adma")
    for argv in (["compare", "--optimizers", "adma"], ["train", "--task", "digits-mlp", "--optimizer", "adma"],
                 ["quicktrain", "--optimizer", "adma", "--steps", "1"], ["tune", "--optimizer", "adma"]):
        code = None
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own error exit
            code = exc.code
        assert code == 2, argv
        assert "did you mean 'adam'" in capsys.readouterr().err, argv


def test_generated_classes_keep_torch_signatures_and_defaults():
    import inspect

    for spec in catalogue.algorithms():
        if spec.torch is None:
            continue
        theirs = inspect.signature(getattr(torch.optim, spec.torch))
        ours = inspect.signature(spec.cls)
        common = [p for p in ours.parameters.values() if p.name in theirs.parameters]
        assert [(p.name, p.kind, p.default) for p in common] == \
            [(p.name, p.kind, p.default) for p in theirs.parameters.values()], spec.name


# --- the command line ----------------------------------------------------------------------------

def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_has_plain_help():
    for name, sub in _subparsers().items():
        text = sub.format_help()
        assert not re.search(r"``|:(func|mod|class|data):`", text), name
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"optimlab {name} {action.option_strings or action.dest} has no help line"


def test_help_imports_neither_torch_nor_matplotlib():
    code = ("import sys, optimlab.cli as c\n"
            "for argv in ([], *([s] for s in c.build_parser()._subparsers._group_actions[0].choices)):\n"
            "    try:\n        c.main([*argv, '--help'])\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'matplotlib', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_schedule_syntax_is_shared():
    for spec in ("constant", "none", "step", "step:10:0.5", "exponential:0.9", "cosine", "warmup:5",
                 "warmup-cosine:5:0.01", "plateau:2:0.5"):
        schedules.parse(spec)
    assert schedules.factors("step:2:0.5", 4) == [1.0, 1.0, 0.5, 0.5]
    with pytest.raises(ValueError, match="plateau follows a validation metric"):
        schedules.factors("plateau", 10)


# --- files a user can share ---------------------------------------------------------------------

def test_outputs_follow_the_umask(tmp_path):
    from optimlab._atomic import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.txt", lambda tmp: open(tmp, "w").write("x"))
        assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o644
        os.umask(0o077)
        atomic_write(tmp_path / "b.txt", lambda tmp: open(tmp, "w").write("x"))
        assert stat.S_IMODE(os.stat(tmp_path / "b.txt").st_mode) == 0o600
        os.umask(0o022)
        assert main(["compare", "--landscape", "bowl", "--optimizers", "sgd", "--lr", "0.1", "--steps", "5",
                     "--out", str(tmp_path / "cmp")]) == 0
        for f in (tmp_path / "cmp").iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f.name
        json.loads((tmp_path / "cmp" / "results.json").read_text())
    finally:
        os.umask(old)
