"""2 CPU processes (gloo) give the same weights as 1 process with the same global batch.

Run: .venv/bin/python -m pytest -q tests/test_distributed.py   (about 10 s)
"""

from __future__ import annotations

import datetime
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from train_helpers import Resolved, record_optimizer_inputs, tiny_config, write_tiny_dataset
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


def _clip_config(data, run_dir):
    return tiny_config(data, run_dir, max_steps=6, grad_clip_norm=1e-3, checkpoint_every=None,
                       **{"arch.halt_exploration_prob": 0.0})


def _clip_and_signal_worker(rank: int, world: int, port: int, data: str, run_dir: str, out: str) -> None:
    """Records the clipped gradients; rank 1 alone receives SIGUSR1 after step 2."""
    import signal

    from trmlab.training.signals import TrainingInterrupted

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # A rank that stops alone would leave the other waiting in a collective: fail in a minute, not 30.
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        trainer = Trainer(Resolved(_clip_config(data, run_dir)), progress=False, evaluate=lambda t, s: {})
        seen = record_optimizer_inputs(trainer)["grads"]
        train_step = trainer._train_step

        def step_then_signal(batch):
            metrics = train_step(batch)
            if rank == 1 and trainer.step == 2:
                os.kill(os.getpid(), signal.SIGUSR1)
            return metrics

        trainer._train_step = step_then_signal
        try:
            trainer.run()
            outcome = "finished"
        except TrainingInterrupted as stopped:
            outcome = f"{stopped.step} {stopped.signum}"
        torch.save({"grads": seen, "outcome": outcome}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_clip_after_the_reduction_and_stop_together(tmp_path):
    """(1) Each rank clips the summed gradient: identical on both ranks, of norm grad_clip_norm, equal to the
    single-process clipped gradient (clipping before the reduction gives neither). (2) A signal that reaches
    rank 1 only stops both ranks after the same step, with a checkpoint of that step."""
    import signal

    from trmlab.checkpoints import read_checkpoint

    data = write_tiny_dataset(tmp_path / "data", groups=8)
    torch.set_num_threads(1)
    single = Trainer(Resolved(_clip_config(data, tmp_path / "one")), progress=False, evaluate=lambda t, s: {})
    expected = record_optimizer_inputs(single)["grads"]
    single.run()
    out = tmp_path / "ranks"
    mp.spawn(_clip_and_signal_worker, args=(2, _free_port(), str(data), str(tmp_path / "two"), str(out)),
             nprocs=2, join=True)
    ranks = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]
    # The flag reduced after step 2 is read after step 3: both ranks stop there, with rank 1's signal.
    assert [r["outcome"] for r in ranks] == [f"3 {int(signal.SIGUSR1)}"] * 2
    assert read_checkpoint(tmp_path / "two" / "checkpoints" / "step_3").manifest["step"] == 3
    assert len(ranks[0]["grads"]) == len(ranks[1]["grads"]) == 3
    for step in range(3):
        grads = ranks[0]["grads"][step]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        assert norm.item() == pytest.approx(1e-3, rel=1e-4), f"step {step + 1}"
        for a, b, c in zip(grads, ranks[1]["grads"][step], expected[step]):
            assert torch.equal(a, b)
            torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-10)
