"""One rank of the distributed LR-finder test (run twice by tests/test_train_lr_finder.py, gloo on CPU).

    python lr_finder_dist_worker.py RANK WORLD_SIZE INIT_FILE OUT_DIR

Runs the range test on a DistributedDataParallel model, each rank on its half of every batch, and
saves the recorded curve and the suggestions to OUT_DIR/rank{RANK}.json.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lr_finder_problem import BATCH, batch, model  # noqa: E402

from optimlab import SGD  # noqa: E402
from optimlab.train.lr_finder import lr_range_test  # noqa: E402


def main(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        net = DDP(model())
        opt = SGD(net.parameters(), lr=0.1, momentum=0.9)
        step = {"i": 0}
        half = BATCH // world

        def closure():
            x, y = batch(step["i"])
            step["i"] += 1
            x, y = x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half]
            return torch.nn.functional.mse_loss(net(x), y)
        r = lr_range_test(net, opt, closure, start_lr=1e-4, end_lr=100.0, num_steps=60)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(
            {"lrs": r.lrs, "losses": r.losses, "smoothed": r.smoothed, "suggestions": r.suggestions,
             "stopped_early": r.stopped_early, "status": r.status}))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
