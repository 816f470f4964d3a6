"""2 CPU processes (gloo) give the same weights as 1 process with the same global batch.

Run: .venv/bin/python -m pytest -q tests/test_distributed.py   (about 10 s)
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from train_helpers import Resolved, tiny_config, write_tiny_dataset
from trmlab.training.loop import Trainer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(data, run_dir):
    # Exploration off: it is seeded per rank (seed + rank), so it legitimately differs between 1 and 2
    # processes; everything else must agree.
    return tiny_config(data, run_dir, epochs=3, checkpoint_every=None, **{"arch.halt_exploration_prob": 0.0})


def _worker(rank: int, world: int, port: int, data: str, run_dir: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer = Trainer(Resolved(_config(data, run_dir)), progress=False, evaluate=lambda t, s: {})
        trainer.run()
        if rank == 0:
            state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
            state.update({f"ema.{k}": v.clone() for k, v in trainer.ema.shadow.items()})
            torch.save(state, out)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one(tmp_path):
    data = write_tiny_dataset(tmp_path / "data", groups=8)
    torch.set_num_threads(1)
    single = Trainer(Resolved(_config(data, tmp_path / "one")), progress=False, evaluate=lambda t, s: {})
    single.run()
    out = tmp_path / "two.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(data), str(tmp_path / "two"), str(out)), nprocs=2, join=True)
    two = torch.load(out, weights_only=True)
    one = {k: v for k, v in single.model.state_dict().items()}
    one.update({f"ema.{k}": v for k, v in single.ema.shadow.items()})
    assert set(one) == set(two)
    assert "puzzle_embedding.weights" in one
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    # Only rank 0 wrote the run directory's checkpoint.
    assert (tmp_path / "two" / "checkpoints" / f"step_{single.total_steps}" / "manifest.json").is_file()
