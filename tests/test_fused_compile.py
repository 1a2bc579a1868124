"""``opt.step()`` inside ``torch.compile``: one ``optimlab::step`` custom op, no graph break in optimlab.

The first test compiles with AOTAutograd (no code generation): about ten seconds on two cores.
The inductor test costs tens of seconds more and runs only with ``OPTIMLAB_SLOW_TESTS=1``.
"""

from __future__ import annotations

import os
import pytest
import torch

import optimlab

from torch._dynamo.utils import counters

def make(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    return model, optimlab.Adam(model.parameters(), lr=0.01)


def train_step(model, opt, x, y):
    opt.zero_grad()
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    return loss


def _compiled_matches_eager(backend, compile_step_only):
    """Five compiled steps (an lr change after the third) against five eager ones: equal bits."""
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    model, opt = make()
    ref_model, ref_opt = make()
    torch._dynamo.reset()
    if compile_step_only:
        step = torch.compile(opt.step, backend=backend)

        def compiled(model, opt, x, y):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            step()
    else:
        compiled = torch.compile(train_step, backend=backend)
    for i in range(5):
        compiled(model, opt, x, y)
        train_step(ref_model, ref_opt, x, y)
        if i == 2:  # a new lr is read when the step runs (no recompile, no stale constant)
            opt.param_groups[0]["lr"] = ref_opt.param_groups[0]["lr"] = 0.003
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert torch.equal(a, b)
    sa, sb = opt.state_dict()["state"], ref_opt.state_dict()["state"]
    for i in sb:
        for k in sb[i]:
            assert torch.equal(sa[i][k], sb[i][k])


def test_compiled_training_step_no_break_inside_optimlab_equals_eager():
    """A whole training step compiled: the graph breaks are torch's own (dynamo skips
    ``Optimizer.zero_grad``; ``backward``), none inside optimlab; the step is one ``optimlab::step``
    in one graph, compiled once however lr changes; AOTAutograd functionalizes it (the parameters
    are declared mutated) and the numbers equal eager's."""
    graphs = []

    def recording(gm, inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend("aot_eager")(gm, inputs)

    counters.clear()
    _compiled_matches_eager(recording, compile_step_only=False)
    breaks = [reason.splitlines()[0] for reason in counters["graph_break"]]
    assert sorted(breaks) == ["Attempted to inline function marked as skipped", "Unsupported Tensor.backward() call"]
    assert "Optimizer.zero_grad" in next(r for r in counters["graph_break"] if "skipped" in r)
    ops = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert ops.count("optimlab.step.default") == 1
    assert len(graphs) == 2  # the forward and the step, each compiled once


@pytest.mark.skipif(os.environ.get("OPTIMLAB_SLOW_TESTS") != "1", reason="inductor: tens of seconds; "
                    "set OPTIMLAB_SLOW_TESTS=1")
def test_inductor_compiled_step_equals_eager():
    _compiled_matches_eager("inductor", compile_step_only=True)
