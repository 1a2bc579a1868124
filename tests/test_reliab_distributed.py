"""Distributed training with optimlab's optimizers: DDP, ZeroRedundancyOptimizer and FSDP2, on CPU.

One module-scoped spawn of two gloo processes (tests/reliab_dist_worker.py) trains every algorithm
every way; the tests below compare what it saved with single-process, full-batch training.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reliab_configs import CONFIGS

WORLD = 2
MODES = ["ddp", "zero", "fsdp", "ddp_skip", "fsdp_skip"]
WORKER = Path(__file__).with_name("reliab_dist_worker.py")

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with gloo is not available")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(rank), str(WORLD), str(out / "pg"), str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for rank in range(WORLD)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=400)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for rank, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {rank} failed:\n{log[-4000:]}"
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def _check(result, label):
    assert not isinstance(result, str), f"{label} raised:\n{result}"
    return result


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_distributed_matches_single_process_full_batch(results, name, mode):
    reference = _check(results[0][name]["reference"], f"{name}/reference")
    for rank in range(WORLD):
        got = _check(results[rank][name][mode], f"{name}/{mode} on rank {rank}")
        params = {k: v for k, v in got.items() if not k.startswith("__")}
        assert params.keys() == reference.keys()
        for key in reference:
            torch.testing.assert_close(params[key], reference[key], rtol=1e-9, atol=1e-11,
                                       msg=lambda m: f"{name}/{mode} rank {rank} {key}: {m}")
            assert not torch.equal(reference[key], torch.zeros_like(reference[key]))
    # the replicas agree exactly with each other (not just within tolerance of the reference)
    a, b = (results[r][name][mode] for r in range(WORLD))
    assert all(torch.equal(a[k], b[k]) for k in reference)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_zero_consolidated_state_dict_holds_every_parameter(results, name):
    got = _check(results[0][name]["zero"], f"{name}/zero")
    # rank 0 gathered the state of the parameters rank 1's optimizer owns as well as its own
    # (plain SGD keeps no per-parameter state, like torch.optim.SGD without momentum)
    expected = 0 if name == "sgd" else len(results[0][name]["reference"])
    assert int(got["__state_entries__"]) == expected
    for rank in range(WORLD):  # resumed from that checkpoint, every rank continues bit for bit
        assert bool(_check(results[rank][name]["zero"], f"{name}/zero")["__resume_equal__"])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_fsdp2_sharded_checkpoint_resumes_bit_for_bit(results, name):
    """get_state_dict / torch.distributed.checkpoint / set_state_dict with an optimlab optimizer."""
    for rank in range(WORLD):
        got = _check(results[rank][name]["fsdp_dcp_resume"], f"{name}/fsdp_dcp_resume on rank {rank}")
        assert bool(got["__resume_equal__"])


def test_training_moved_the_parameters(results):
    """The comparison is not vacuous: every algorithm changed the initial weights."""
    from reliab_configs import mlp

    init = {k: v.double() for k, v in mlp().state_dict().items()}
    for name in CONFIGS:
        ref = results[0][name]["reference"]
        assert any(not torch.allclose(ref[k], init[k]) for k in init), name
