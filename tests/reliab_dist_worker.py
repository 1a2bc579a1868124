"""One rank of the distributed tests (run twice by tests/test_reliab_distributed.py, gloo on CPU).

    python reliab_dist_worker.py RANK WORLD_SIZE INIT_FILE OUT_DIR

For every algorithm in reliab_configs.CONFIGS it trains the same MLP four ways and saves the final
parameters to OUT_DIR/rank{RANK}.pt:

- ``reference``: one process, full batch (every rank computes it alone, no communication);
- ``ddp``: DistributedDataParallel, each rank half of the batch;
- ``zero``: DDP + torch.distributed.optim.ZeroRedundancyOptimizer wrapping the optimlab optimizer
  (plus the size of its consolidated state_dict, and whether resuming every rank from rank 0's
  consolidated checkpoint continues bit for bit);
- ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``) on CPU, parameters as sharded DTensors;
- ``fsdp_dcp_resume``: FSDP2 saved with torch.distributed.checkpoint and resumed (bit for bit?);
- ``ddp_skip`` / ``fsdp_skip``: like ddp / fsdp with ``nonfinite="skip"`` and one extra step whose
  gradient is NaN on rank 1 only; every rank must skip it, so the result equals ``reference``.

A failure of one mode is recorded as its error text, so the test can say exactly what broke.
"""

import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reliab_configs import CONFIGS, data, mlp  # noqa: E402

from optimlab import checkpoint  # noqa: E402

STEPS = 5
DTYPE = torch.float64  # the equivalence is algorithmic; float64 keeps summation-order noise negligible


def _params(model):
    out = {}
    for name, p in model.named_parameters():
        p = p.detach()
        if hasattr(p, "full_tensor"):  # an FSDP2 DTensor shard: gather the whole parameter
            p = p.full_tensor()
        out[name.removeprefix("module.")] = p.clone()
    return out


def _train(model, opt, x, y, steps, nan_step=None, rank=0):
    for step in range(steps):
        opt.zero_grad()
        xb = x.clone()
        if step == nan_step and rank == 1:
            xb[0, 0] = float("nan")
        torch.nn.functional.mse_loss(model(xb), y).backward()
        opt.step()


def _fsdp_model():
    from torch.distributed.fsdp import fully_shard

    model = mlp(dtype=DTYPE)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    return model


def run(rank, world, out_dir):
    x, y = data(n=8 * world, dtype=DTYPE)
    lo, hi = rank * 8, (rank + 1) * 8
    results = {}
    for name, (cls, kwargs) in CONFIGS.items():
        res = results[name] = {}

        def attempt(mode, fn):
            try:
                res[mode] = fn()
            except Exception:  # noqa: BLE001 - reported to the test as text
                res[mode] = "".join(traceback.format_exc())
            dist.barrier()

        def reference():
            model = mlp(dtype=DTYPE)
            _train(model, cls(model.parameters(), **kwargs), x, y, STEPS)
            return _params(model)

        def ddp(skip=False):
            model = DDP(mlp(dtype=DTYPE))
            opt = cls(model.parameters(), **kwargs, **({"nonfinite": "skip"} if skip else {}))
            _train(model, opt, x[lo:hi], y[lo:hi], STEPS + skip, nan_step=2 if skip else None, rank=rank)
            return _params(model)

        def zero():
            from torch.distributed.optim import ZeroRedundancyOptimizer

            model = DDP(mlp(dtype=DTYPE))
            opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=cls, **kwargs)
            _train(model, opt, x[lo:hi], y[lo:hi], STEPS)
            assert all(isinstance(o, cls) for o in [opt.optim]), type(opt.optim)
            opt.consolidate_state_dict(to=0)
            out = _params(model)
            path = out_dir / f"zero-{name}.pt"
            if rank == 0:
                state = opt.state_dict()
                out["__state_entries__"] = torch.tensor(len(state["state"]))
                checkpoint.save(path, model=model.module, optimizer=opt, step=STEPS)
            dist.barrier()
            # resume on every rank from rank 0's consolidated checkpoint; 2 more steps both ways
            model2 = DDP(mlp(seed=5, dtype=DTYPE))
            opt2 = ZeroRedundancyOptimizer(model2.parameters(), optimizer_class=cls, **kwargs)
            checkpoint.load(path, model=model2.module, optimizer=opt2)
            _train(model, opt, x[lo:hi], y[lo:hi], 2)
            _train(model2, opt2, x[lo:hi], y[lo:hi], 2)
            a, b = _params(model), _params(model2)
            out["__resume_equal__"] = torch.tensor(all(torch.equal(a[k], b[k]) for k in a))
            return out

        def fsdp(skip=False):
            model = _fsdp_model()
            assert all(type(p).__name__ == "DTensor" for p in model.parameters())
            opt = cls(model.parameters(), **kwargs, **({"nonfinite": "skip"} if skip else {}))
            _train(model, opt, x[lo:hi], y[lo:hi], STEPS + skip, nan_step=2 if skip else None, rank=rank)
            return _params(model)

        def fsdp_dcp_resume():
            """FSDP2 checkpoint with torch.distributed.checkpoint (sharded), resumed bit for bit."""
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

            model = _fsdp_model()
            opt = cls(model.parameters(), **kwargs)
            _train(model, opt, x[lo:hi], y[lo:hi], STEPS)
            msd, osd = get_state_dict(model, opt)
            path = out_dir / f"dcp-{name}"
            dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(path))
            model2 = _fsdp_model()
            opt2 = cls(model2.parameters(), **kwargs)
            msd2, osd2 = get_state_dict(model2, opt2)
            loaded = {"model": msd2, "optim": osd2}
            dcp.load(loaded, checkpoint_id=str(path))
            set_state_dict(model2, opt2, model_state_dict=loaded["model"], optim_state_dict=loaded["optim"])
            _train(model, opt, x[lo:hi], y[lo:hi], 2)
            _train(model2, opt2, x[lo:hi], y[lo:hi], 2)
            a, b = _params(model), _params(model2)
            return {"__resume_equal__": torch.tensor(all(torch.equal(a[k], b[k]) for k in a))}

        attempt("reference", reference)
        attempt("ddp", ddp)
        attempt("zero", zero)
        attempt("fsdp", fsdp)
        attempt("ddp_skip", lambda: ddp(skip=True))
        attempt("fsdp_skip", lambda: fsdp(skip=True))
        attempt("fsdp_dcp_resume", fsdp_dcp_resume)
    return results


def main():
    rank, world, init_file, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = run(rank, world, out_dir)
    finally:
        dist.destroy_process_group()
    torch.save(results, out_dir / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
