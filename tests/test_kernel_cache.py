"""The kernel disk cache: nothing another user planted is loaded, a damaged file is rebuilt, an
unusable cache falls back (private folder, then eager), concurrent processes compile once.

Every case checks the numbers against ``torch.optim.Adam`` and the counters of :mod:`.kernels.cpu`.
A library planted by an attacker runs its constructor when loaded; the planted ones here write a
marker file from their constructor, so "never loaded" is observed, not assumed (and a control
case shows the marker does appear when such a file is loaded).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import torch

import optimlab
from optimlab import kernels
from optimlab.kernels import cpu

pytestmark = pytest.mark.skipif(cpu.compiler() is None, reason="no C compiler")

FOREIGN_UID = 54321


@pytest.fixture
def fresh(monkeypatch):
    """A process that has loaded no kernel yet (the disk cache is what is being tested)."""
    monkeypatch.setattr(cpu, "_loaded", {})
    monkeypatch.setattr(cpu, "_by_structure", {})
    monkeypatch.setattr(cpu, "_warned", set())
    monkeypatch.setattr(kernels, "_refused", set())
    monkeypatch.delenv("OPTIMLAB_FUSED", raising=False)
    return monkeypatch


def adam_steps(name="Adam", steps=3):
    """Three fused steps; returns (ours, torch.optim's) parameters."""
    g = torch.Generator().manual_seed(1)
    start = torch.randn(1000, generator=g)
    grads = [torch.randn(1000, generator=g) for _ in range(steps)]
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    o = getattr(optimlab, name)([ours], lr=0.01)
    t = getattr(torch.optim, name)([theirs], lr=0.01)
    for grad in grads:
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        o.step()
        t.step()
    return ours.detach(), theirs.detach()


def check_numbers(name="Adam"):
    before = kernels.stats["fused_tensors"]
    ours, theirs = adam_steps(name)
    torch.testing.assert_close(ours, theirs)
    return kernels.stats["fused_tensors"] > before


def our_warnings(record):
    return [str(w.message) for w in record if "optimlab" in str(w.message)]


def kernel_files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in folder.glob("optimlab_*.so")}


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    """A trusted cache holding the Adam and the SGD kernel: {name: path of the .so}."""
    folder = tmp_path_factory.mktemp("golden") / "kernels"
    found = {}
    with pytest.MonkeyPatch.context() as mp:
        for name in ("Adam", "SGD"):
            mp.setattr(cpu, "_loaded", {})
            mp.setattr(cpu, "_by_structure", {})
            mp.setenv("OPTIMLAB_CACHE_DIR", str(folder))
            before = set(kernel_files(folder))
            assert check_numbers(name)
            (stem,) = set(kernel_files(folder)) - before
            found[name] = kernel_files(folder)[stem]
    return found


def plant(folder: Path, key_stem: str, marker: Path, tmp_path: Path) -> Path:
    """An evil ``optimlab_KEY.so`` (right name, right key symbol, a matching digest) whose
    constructor writes ``marker`` and whose ``run`` does nothing."""
    source = tmp_path / "evil.c"
    source.write_text(
        "#include <stdio.h>\n#include <stdint.h>\n"
        f'__attribute__((constructor)) static void evil(void) {{ FILE *f = fopen("{marker}", "w"); '
        "if (f) fclose(f); }\n"
        "void run(int64_t nt, const int64_t *s, void *const *p, const double *x, int t) { }\n"
        f'const char {cpu.KEY_SYMBOL}[] = "{key_stem.removeprefix("optimlab_")}";\n')
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{key_stem}.so"
    subprocess.run([cpu.compiler(), "-shared", "-fPIC", str(source), "-o", str(target)], check=True)
    target.with_suffix(".sha256").write_text(hashlib.sha256(target.read_bytes()).hexdigest() + "\n")
    return target


def test_planted_library_loads_in_a_trusted_folder_control(fresh, golden, tmp_path):
    """Control: the planted file is a working attack when the folder is this user's own (the
    marker appears and the step does nothing), so the refusals below are real."""
    marker = tmp_path / "ran"
    folder = tmp_path / "mine"
    plant(folder, golden["Adam"].stem, marker, tmp_path)
    os.chmod(folder, 0o700)
    fresh.setenv("OPTIMLAB_CACHE_DIR", str(folder))
    ours, theirs = adam_steps()
    assert marker.exists()
    assert not torch.allclose(ours, theirs)


@pytest.mark.parametrize("how", ["group-writable folder", "world-writable folder", "foreign-owned folder",
                                 "folder is a symlink", "foreign-owned file"])
def test_planted_library_is_never_loaded(fresh, golden, tmp_path, how):
    marker = tmp_path / "ran"
    shared = tmp_path / "shared"
    planted = plant(shared, golden["Adam"].stem, marker, tmp_path)
    cache = shared
    if how == "group-writable folder":
        os.chmod(shared, 0o770)
    elif how == "world-writable folder":
        os.chmod(shared, 0o777)
    elif how == "foreign-owned folder":
        os.chmod(shared, 0o700)
        os.chown(shared, FOREIGN_UID, FOREIGN_UID)
    elif how == "folder is a symlink":
        os.chmod(shared, 0o700)
        cache = tmp_path / "link"
        cache.symlink_to(shared)
    else:  # the folder is trusted; the file in it is not this user's
        os.chmod(shared, 0o700)
        os.chown(planted, FOREIGN_UID, FOREIGN_UID)
    fresh.setenv("OPTIMLAB_CACHE_DIR", str(cache))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert check_numbers()  # fused, from a kernel built privately (or rebuilt in place)
    assert not marker.exists()
    if how == "foreign-owned file":
        assert kernels.stats["rejected"] >= 1
        assert planted.stat().st_uid == os.geteuid()  # replaced by this user's build
    else:
        assert len(our_warnings(record)) == 1 and "refused" in our_warnings(record)[0]
        assert hashlib.sha256(planted.read_bytes()).hexdigest() == planted.with_suffix(".sha256").read_text().strip()


def damage(how: str, target: Path, golden: dict[str, Path]) -> None:
    data = golden["Adam"].read_bytes()
    if how == "empty":
        target.write_bytes(b"")
    elif how == "truncated":
        target.write_bytes(data[: len(data) // 2])
    elif how == "random":
        target.write_bytes(os.urandom(len(data)))
    elif how == "one flipped byte":
        target.write_bytes(data[:2000] + bytes([data[2000] ^ 0x40]) + data[2001:])
    elif how == "wrong kernel":  # SGD's library under Adam's name (its digest left as it was)
        shutil.copy(golden["SGD"], target)
    elif how == "wrong kernel with its digest":  # both copied: only the key symbol tells
        shutil.copy(golden["SGD"], target)
        shutil.copy(golden["SGD"].with_suffix(".sha256"), target.with_suffix(".sha256"))
    elif how == "no digest":
        target.with_suffix(".sha256").unlink()
    os.chmod(target, 0o600)


@pytest.mark.parametrize("how", ["empty", "truncated", "random", "one flipped byte", "wrong kernel",
                                 "wrong kernel with its digest", "no digest"])
def test_damaged_cache_file_is_rebuilt(fresh, golden, tmp_path, how):
    cache = tmp_path / "kernels"
    cache.mkdir(mode=0o700)
    target = cache / golden["Adam"].name
    shutil.copy(golden["Adam"], target)
    shutil.copy(golden["Adam"].with_suffix(".sha256"), target.with_suffix(".sha256"))
    damage(how, target, golden)
    fresh.setenv("OPTIMLAB_CACHE_DIR", str(cache))
    before = dict(kernels.stats)
    assert check_numbers()
    assert kernels.stats["rejected"] - before["rejected"] == 1
    assert kernels.stats["built"] - before["built"] == 1
    # the repaired file is good: a fresh process state loads it without building
    fresh.setattr(cpu, "_loaded", {})
    fresh.setattr(cpu, "_by_structure", {})
    before = dict(kernels.stats)
    assert check_numbers()
    assert (kernels.stats["built"], kernels.stats["rejected"]) == (before["built"], before["rejected"])


def test_unwritable_cache_falls_back_with_one_warning(fresh, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    fresh.setenv("OPTIMLAB_CACHE_DIR", str(blocker / "kernels"))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert check_numbers()  # fused: built in the private folder
        assert check_numbers("SGD")
    assert len(our_warnings(record)) == 1, our_warnings(record)
    assert str(blocker / "kernels") in our_warnings(record)[0]


def test_no_usable_folder_at_all_runs_eagerly(fresh, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    fresh.setenv("OPTIMLAB_CACHE_DIR", str(blocker / "kernels"))
    fresh.setattr(cpu, "_private", [])

    def no_temp(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    fresh.setattr(cpu.tempfile, "mkdtemp", no_temp)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert not check_numbers()  # eager, and the same numbers
    messages = our_warnings(record)
    assert any("running eagerly" in m for m in messages), messages


def _build_in_child(cache: str, call: tuple, barrier, results) -> None:
    # no torch operation in the forked child (its thread pools do not survive fork): only the cache
    cpu._loaded.clear()
    cpu._by_structure.clear()
    os.environ["OPTIMLAB_CACHE_DIR"] = cache
    built = cpu.stats["built"]
    barrier.wait()
    cpu.kernel_for(*call)
    results.put(cpu.stats["built"] - built)


def test_eight_processes_building_at_once_compile_once(fresh, tmp_path):
    calls = []
    real = cpu.kernel_for
    fresh.setattr(cpu, "kernel_for", lambda *args: calls.append(args) or real(*args))
    fresh.setenv("OPTIMLAB_CACHE_DIR", str(tmp_path / "elsewhere"))
    adam_steps(steps=1)  # the arguments of Adam's kernel request
    fresh.setattr(cpu, "kernel_for", real)
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    cache = tmp_path / "kernels"
    procs = [ctx.Process(target=_build_in_child, args=(str(cache), calls[0], barrier, results))
             for _ in range(8)]
    for p in procs:
        p.start()
    try:
        built = [results.get(timeout=120) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert sum(built) == 1, built
    assert len(list(cache.glob("optimlab_*.so"))) == 1
    assert not list(cache.glob(".build-*"))
    # and the one build is the right kernel: this process loads it, no build, correct numbers
    fresh.setattr(cpu, "_loaded", {})
    fresh.setattr(cpu, "_by_structure", {})
    fresh.setenv("OPTIMLAB_CACHE_DIR", str(cache))
    before = kernels.stats["built"]
    assert check_numbers()
    assert kernels.stats["built"] == before
