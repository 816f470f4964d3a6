"""N training steps of the official trainer and of trmlab's, side by side in one process, on the same batches.

    python benchmarks/trace_vs_official.py --official /tmp/official --steps 50              # exploration off
    python benchmarks/trace_vs_official.py --official /tmp/official --steps 50 --exploration aligned

``--official`` is a checkout of SamsungSAILMontreal/TinyRecursiveModels kept outside this repository (its
code needs ``pydantic`` and ``einops`` in the environment; nothing of it is copied here). Its trainer module
(``pretrain.py``) is imported with its logging and config imports stubbed (``wandb``, ``coolname``,
``hydra``, ``omegaconf``, ``argdantic``) and the CUDA-only ``adam_atan2`` extension replaced by
:class:`KernelAdamATan2`, a line-for-line CPU port of the extension's kernel; ``.cuda()`` and
``torch.device("cuda")`` act on the CPU; ``DISABLE_COMPILE`` is set (trmlab runs eagerly too).

Both sides start from the official model's initial weights (its ``init_train_state`` after
``torch.manual_seed(seed)``, as its launcher does; loaded into trmlab's model through the checkpoint key
map), except that the Q-head bias starts at ``--q-bias`` (0: rows halt at different ACT steps from the first
batch on; with the official -5 no row halts before ``halt_max_steps`` within 50 steps, and exploration could
change nothing). They train on the official loader's batches: its ``PuzzleDataset`` over a small synthetic
dataset that trmlab builds in a temporary directory (numpy's global RNG, which the loader draws from, seeded
with ``seed``). Per step: the official ``pretrain.train_batch`` (forward through its loss head, backward, the
sign-SGD on the puzzle table, AdamATan2, the cosine schedule) and ``EMAHelper.update``; then trmlab's
``Trainer._train_step`` (the loop's own step) on the same batch. It prints per step the differences of the
loss terms and metrics (normalised as the official trainer logs them) and of the weights, and at the end
max |Δ| of the weights, the EMA weights, the optimizer states and the puzzle-embedding table.

Halting exploration draws random numbers every ACT step: officially from torch's global generator, in trmlab
from its own (seeded ``seed + rank``). ``--exploration off`` sets ``halt_exploration_prob`` to 0 (the draws
still happen and change nothing); ``aligned`` keeps 0.1 and gives trmlab's generator the global generator's
state at the first step, so both draw the same numbers (each side draws ``rand`` then ``randint`` per ACT
step, nothing else draws from these generators, and the global state is restored around trmlab's step);
``own`` leaves trmlab's generator as ``trmlab train`` seeds it.

``--adam-rounding torch`` swaps the port's kernel arithmetic for torch's (``lerp_`` for the moments, a
product then a subtraction for the update): what differs then is not the optimizer's elementwise rounding.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from trmlab.config.loader import Entry, resolve
from trmlab.config.official import read_official_all_config
from trmlab.interop.official_keys import strip_official
from trmlab.training.ema import EMA
from trmlab.training.loop import Trainer

ARCH = dict(name="recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",
            loss=dict(name="losses@ACTLossHead", loss_type="stablemax_cross_entropy"),
            H_cycles=2, H_layers=0, L_cycles=2, L_layers=2, hidden_size=64, num_heads=2, expansion=4,
            puzzle_emb_ndim=64, puzzle_emb_len=4, pos_encodings="rope", halt_max_steps=4,
            halt_exploration_prob=0.1, forward_dtype="float32", mlp_t=False, no_ACT_continue=True)
# Training settings (official all_config.yaml keys). lr, warmup and min_ratio make the schedule move within 50
# steps; epochs make the official estimate (the schedule's length) a little above 50 on the dataset below.
TRAINING = dict(global_batch_size=16, epochs=8, eval_interval=4, lr=1e-3, lr_min_ratio=0.1,
                lr_warmup_steps=10, weight_decay=0.1, beta1=0.9, beta2=0.95, puzzle_emb_lr=1e-2,
                puzzle_emb_weight_decay=0.1, ema=True, ema_rate=0.999)
# What each side's loss head returns for one step: the loss, then its metric sums (official names).
METRICS = ("loss", "lm_loss", "q_halt_loss", "count", "accuracy", "exact_accuracy", "q_halt_accuracy",
           "steps")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, type=Path,
                        help="checkout of the official TinyRecursiveModels repository")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--exploration", choices=("off", "aligned", "own"), default="off")
    parser.add_argument("--exploration-prob", type=float, default=ARCH["halt_exploration_prob"],
                        help="halt_exploration_prob when exploration is on")
    parser.add_argument("--adam-rounding", choices=("kernel", "torch"), default="kernel")
    parser.add_argument("--q-bias", type=float, default=0.0,
                        help="initial Q-head bias of both models (the official initialisation: -5)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--data", type=Path, default=None,
                        help="an official-layout dataset to train on (default: a synthetic one, built here)")
    return parser.parse_args(argv)


# -- the adam_atan2 CUDA kernel, ported to the CPU -----------------------------------------------------------


def _f32(value: float) -> torch.Tensor:
    """A host double rounded to fp32: the kernel's ``static_cast<opmath_t>`` of its per-tensor constants."""
    return torch.tensor(value, dtype=torch.float32)


class FmaCounter:
    """Counts the elements where emulating an fp32 FMA through float64 needed a tie correction."""

    ties = 0


def fma32(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """fp32 ``fma(a, b, c)`` (one rounding of a·b + c) on the CPU, where torch has no fused op: the product of
    two fp32 values is exact in float64, the float64 sum is rounded once, then to fp32. That double rounding
    differs from one rounding only when the float64 sum is inexact and lands exactly halfway between two fp32
    values; there the sum is moved one float64 step towards its exact value first (and counted)."""
    a64, b64, c64 = a.double(), b.double(), c.double()
    product = a64 * b64
    total = product + c64
    bv = total - product  # TwoSum: total + error == product + c exactly
    error = (product - (total - bv)) + (c64 - bv)
    nearest = total.float()
    gap = total - nearest.double()
    toward = torch.where(gap > 0, torch.full_like(nearest, math.inf), torch.full_like(nearest, -math.inf))
    neighbour = torch.nextafter(nearest, toward).double()
    tie = (error != 0) & (gap != 0) & (2 * gap == neighbour - nearest.double())
    if bool(tie.any()):
        FmaCounter.ties += int(tie.sum())
        infinity = torch.full_like(total, math.inf)
        total = torch.where(tie, torch.nextafter(total, torch.where(error > 0, infinity, -infinity)), total)
    return total.float()


def kernel_lerp(v0: torch.Tensor, v1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The kernel's ``lerp``: ``fma(t, v1, fma(-t, v0, v0))``."""
    return fma32(t, v1, fma32(-t, v0, v0))


class KernelAdamATan2(torch.optim.Optimizer):
    """The ``adam-atan2`` package's optimizer (``adam_atan2.AdamATan2``), its CUDA kernel ported to the CPU.

    The Python side as in the package: state ``step`` (fp32 scalar), ``exp_avg``, ``exp_avg_sq``; parameters
    without a gradient skipped; every step count of a group incremented first. The kernel per tensor: host
    constants in double, each cast to fp32 (``step_size = lr / (1 − β1^t)``, ``wd_alpha = 1 − lr·wd``,
    ``sqrt(1 − β2^t)``, ``1 − β1``, ``1 − β2``); per element in fp32::

        param *= wd_alpha
        exp_avg = lerp(exp_avg, grad, 1 − β1);   exp_avg_sq = lerp(exp_avg_sq, grad·grad, 1 − β2)
        denom = sqrt(exp_avg_sq) / sqrt(1 − β2^t)
        param -= step_size · atan2(exp_avg, denom)

    with the kernel's ``lerp(v0, v1, t) = fma(t, v1, fma(−t, v0, v0))``, and the last line one FMA, as nvcc
    compiles ``a -= b * c`` by default (the package builds with ``-O2`` and no ``-fmad=false``). atan2, sqrt
    and the division are torch's CPU functions (the GPU's atan2f may differ in the last bit: not reproducible
    on a CPU). ``rounding="torch"`` instead uses torch's ``lerp_`` and a separate product and subtraction.
    """

    rounding = "kernel"

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 weight_decay: float = 1e-2) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self) -> None:  # type: ignore[override]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if params:
                torch._foreach_add_([self.state[p]["step"] for p in params], 1)
            for p in params:
                self._kernel(p, group)

    def _kernel(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[param]
        lr, weight_decay = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        step = float(state["step"])
        bias_correction1 = 1 - math.pow(beta1, step)
        bias_correction2 = 1 - math.pow(beta2, step)
        step_size, wd_alpha = _f32(lr / bias_correction1), _f32(1 - lr * weight_decay)
        bias_correction2_sqrt = _f32(math.sqrt(bias_correction2))
        mbeta1, mbeta2 = _f32(1 - beta1), _f32(1 - beta2)
        grad, exp_avg, exp_avg_sq = param.grad, state["exp_avg"], state["exp_avg_sq"]

        value = param * wd_alpha
        if self.rounding == "kernel":
            exp_avg.copy_(kernel_lerp(exp_avg, grad, mbeta1))
            exp_avg_sq.copy_(kernel_lerp(exp_avg_sq, grad * grad, mbeta2))
            denom = torch.sqrt(exp_avg_sq) / bias_correction2_sqrt
            value = fma32(-step_size, torch.atan2(exp_avg, denom), value)
        else:
            exp_avg.lerp_(grad, mbeta1)
            exp_avg_sq.lerp_(grad * grad, mbeta2)
            denom = torch.sqrt(exp_avg_sq) / bias_correction2_sqrt
            value = value - step_size * torch.atan2(exp_avg, denom)
        param.copy_(value)


# -- importing the official trainer on the CPU ---------------------------------------------------------------


def _stub_modules() -> None:
    """What pretrain.py imports for logging, config and the CUDA optimizer, as CPU stand-ins."""
    adam = types.ModuleType("adam_atan2")
    adam.AdamATan2 = KernelAdamATan2
    hydra = types.ModuleType("hydra")
    hydra.main = lambda **_kwargs: (lambda function: function)
    omegaconf = types.ModuleType("omegaconf")
    omegaconf.DictConfig = dict
    argdantic = types.ModuleType("argdantic")
    argdantic.ArgParser = object
    logging = (types.ModuleType("wandb"), types.ModuleType("coolname"))
    for module in (adam, hydra, omegaconf, argdantic, *logging):
        sys.modules[module.__name__] = module


class _CpuTorch(types.ModuleType):
    """pretrain.py's ``torch``: everything torch's, except that ``torch.device(...)`` is the CPU."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    def device(*_args: Any, **_kwargs: Any) -> torch.device:
        return torch.device("cpu")


@contextlib.contextmanager
def cuda_on_cpu() -> Iterator[None]:
    """``Tensor.cuda()`` returns the tensor itself (the official step moves every batch with it)."""
    saved = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = saved


def import_official(path: Path) -> tuple[Any, Any, Any]:
    """The official ``pretrain``, ``puzzle_dataset`` and ``models.ema`` modules, importable on the CPU."""
    _stub_modules()
    os.environ["DISABLE_COMPILE"] = "1"
    sys.path.insert(0, str(path.resolve()))
    import importlib

    pretrain = importlib.import_module("pretrain")
    pretrain.torch = _CpuTorch("torch")
    return pretrain, importlib.import_module("puzzle_dataset"), importlib.import_module("models.ema")


# -- the run ------------------------------------------------------------------------------------------------


def build_dataset(root: Path) -> Path:
    from trmlab.data.synthetic import build_synthetic

    build_synthetic(root / "synthetic", seed=0, families=["gravity", "colour_permutation", "translation"],
                    train_tasks=8, eval_tasks=2, canvas=6, num_aug=3, log=lambda _message: None)
    return root / "synthetic" / "trm"


def official_batches(puzzle_dataset: Any, settings: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """The first ``count`` batches the official loader yields, one ``iter`` per iteration as its launcher
    (the loader's numpy draws seeded with the run's seed); each with its ``global_batch_size``."""
    np.random.seed(settings["seed"])
    dataset = puzzle_dataset.PuzzleDataset(puzzle_dataset.PuzzleDatasetConfig(
        seed=settings["seed"], dataset_paths=settings["data_paths"], rank=0, num_replicas=1,
        test_set_mode=False, epochs_per_iter=settings["eval_interval"],
        global_batch_size=settings["global_batch_size"]), split="train")
    batches: list[dict[str, Any]] = []
    for _iteration in range(settings["epochs"] // settings["eval_interval"]):
        for _set_name, batch, global_batch_size in dataset:
            batches.append({"batch": batch, "global_batch_size": global_batch_size})
            if len(batches) == count:
                return batches
    raise SystemExit(f"the official loader yields only {len(batches)} batches; lower --steps")


class Official:
    """The official train state, EMA and the parameter names of both (official checkpoint keys)."""

    def __init__(self, pretrain: Any, ema_module: Any, settings: dict[str, Any], metadata: Any,
                 q_bias: float) -> None:
        self.pretrain = pretrain
        self.config = pretrain.PretrainConfig(**settings)
        torch.manual_seed(settings["seed"])  # as the official launcher, before the model is built
        with contextlib.redirect_stdout(io.StringIO()):  # create_model prints the model
            self.state = pretrain.init_train_state(self.config, metadata, rank=0, world_size=1)
        with torch.no_grad():
            self.state.model.model.inner.q_head.bias.fill_(q_bias)
        self.ema = None
        if settings["ema"]:
            self.ema = ema_module.EMAHelper(mu=settings["ema_rate"])
            self.ema.register(self.state.model)
        inner = self.state.model.model.inner
        self.key_of = {id(t): k for k, t in inner.state_dict(keep_vars=True).items()}

    def step(self, item: dict[str, Any]) -> tuple[float, dict[str, float]]:
        """One official step; its lr and the loss head's loss and metric sums (before any normalisation)."""
        seen: dict[str, float] = {}

        def record(_module: Any, _args: Any, output: tuple) -> None:
            _, loss, metrics, _, _ = output
            seen.update({k: float(v) for k, v in metrics.items()}, loss=float(loss.detach()))

        hook = self.state.model.register_forward_hook(record)
        try:
            with cuda_on_cpu():
                logged = self.pretrain.train_batch(self.config, self.state, item["batch"],
                                                   item["global_batch_size"], rank=0, world_size=1)
        finally:
            hook.remove()
        if self.ema is not None:
            self.ema.update(self.state.model)
        return float(logged["train/lr"]), seen

    def weights(self) -> dict[str, torch.Tensor]:
        return strip_official(self.state.model.model.inner.state_dict(), "official weights")

    def ema_weights(self) -> dict[str, torch.Tensor]:
        params = dict(self.state.model.named_parameters())
        shadow = {self.key_of[id(params[name])]: value for name, value in self.ema.shadow.items()}
        return strip_official(shadow, "official EMA")

    def adam_state(self) -> dict[str, torch.Tensor]:
        adam = self.state.optimizers[-1]
        out = {}
        for param, state in adam.state.items():
            for name, value in state.items():
                out[f"{self.key_of[id(param)]}|{name}"] = value
        return out


def trmlab_trainer(settings: dict[str, Any], official: Official, run_dir: Path) -> Trainer:
    """trmlab's Trainer for the same official config (read through ``read_official_all_config``), holding the
    official initial weights, with a fresh EMA of them."""
    import yaml

    path = run_dir.parent / "all_config.yaml"
    path.write_text(yaml.safe_dump(settings))
    resolved, unknown = read_official_all_config(path)
    if unknown:
        raise SystemExit(f"official settings trmlab does not map: {unknown}")
    extra = {"run_dir": str(run_dir), "device": "cpu", "compile": False, "checkpoint_every": None}
    resolved = resolve([[Entry(k, v, "trace_vs_official") for k, v in extra.items()]], start=resolved)
    trainer = Trainer(resolved, progress=False, evaluate=lambda _trainer, _step: {})
    trainer.model.load_state_dict(official.weights(), strict=True)
    if trainer.ema is not None:
        trainer.ema = EMA(trainer.model, trainer.config.ema_rate)
    return trainer


def trmlab_step(trainer: Trainer, item: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """One trmlab step (``Trainer._train_step``); its lr and its loss function's loss and metric sums."""
    seen: dict[str, float] = {}
    loss_fn = trainer.loss_fn

    def record(outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, metrics = loss_fn(outputs)
        seen.update({k: float(v) for k, v in metrics.items()}, loss=float(loss.detach()))
        return loss, metrics

    rng = torch.get_rng_state()  # trmlab draws from its own generator; keep the official global stream whole
    trainer.loss_fn = record
    try:
        trainer._train_step(item["batch"])
    finally:
        trainer.loss_fn = loss_fn
        torch.set_rng_state(rng)
    return trainer.adam.param_groups[0]["lr"], seen


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], what: str) -> tuple[float, str]:
    if a.keys() != b.keys():
        raise SystemExit(f"{what}: different tensors: {sorted(a.keys() ^ b.keys())[:5]}")
    worst = max(a, key=lambda k: float((a[k].double() - b[k].double()).abs().max()))
    return float((a[worst].double() - b[worst].double()).abs().max()), worst


def trmlab_adam_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    from trmlab.interop.official_keys import canonical_to_official

    names = {id(p): canonical_to_official(n) for n, p in trainer.model.named_parameters()}
    return {f"{names[id(p)]}|{k}": v for p, state in trainer.adam.state.items() for k, v in state.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Print the per-step table and the final differences; return them (for the test)."""
    torch.set_num_threads(args.threads)
    pretrain, puzzle_dataset, ema_module = import_official(args.official)
    KernelAdamATan2.rounding = args.adam_rounding
    FmaCounter.ties = 0
    with tempfile.TemporaryDirectory(prefix="trace-vs-official-") as tmp:
        data = args.data or build_dataset(Path(tmp))
        exploration = 0.0 if args.exploration == "off" else args.exploration_prob
        arch = dict(ARCH, halt_exploration_prob=exploration)
        settings = dict(TRAINING, arch=arch, data_paths=[str(data)], seed=args.seed)
        batches = official_batches(puzzle_dataset, settings, args.steps)
        metadata = puzzle_dataset.PuzzleDataset(puzzle_dataset.PuzzleDatasetConfig(
            seed=args.seed, dataset_paths=[str(data)], rank=0, num_replicas=1, test_set_mode=False,
            epochs_per_iter=settings["eval_interval"], global_batch_size=settings["global_batch_size"]),
            split="train").metadata
        official = Official(pretrain, ema_module, settings, metadata, args.q_bias)
        official_rng = torch.get_rng_state()  # the official draws continue from here
        trainer = trmlab_trainer(settings, official, Path(tmp) / "run")
        torch.set_rng_state(official_rng)  # building trmlab's trainer reseeded the global generator
        if args.exploration == "aligned":
            trainer.exploration.set_state(official_rng.clone())
        if trainer.schedule_steps != official.state.total_steps:
            raise SystemExit(f"schedule lengths differ: official {official.state.total_steps}, trmlab "
                             f"{trainer.schedule_steps}")
        print(f"trace: {args.steps} steps, hidden {arch['hidden_size']}, {arch['num_heads']} heads, "
              f"H{arch['H_cycles']} L{arch['L_cycles']}, {arch['L_layers']} layers, seq "
              f"{metadata.seq_len} + {arch['puzzle_emb_len']}, halt_max_steps {arch['halt_max_steps']}, "
              f"global batch {settings['global_batch_size']}, Q-head bias {args.q_bias:g} at start, "
              f"EMA {settings['ema']}, exploration "
              f"{args.exploration} (prob {exploration}), adam rounding {args.adam_rounding}, "
              f"schedule {official.state.total_steps} steps; CPU fp32, {torch.get_num_threads()} thread(s), "
              f"torch {torch.__version__}")
        print("| step | lr | halted rows official / trmlab | " + " | ".join(f"Δ {m}" for m in METRICS)
              + " | max Δ weights |")
        print("|---" * (len(METRICS) + 4) + "|")
        rows = []
        for step, item in enumerate(batches, start=1):
            lr, theirs = official.step(item)
            our_lr, ours = trmlab_step(trainer, item)
            deltas = {m: abs(theirs[m] - ours[m]) for m in METRICS}
            deltas["lr"] = abs(lr - our_lr)
            weights = max_difference(official.weights(), trainer.model.state_dict(), "weights")[0]
            rows.append(dict(deltas, weights=weights))
            lr_note = "" if deltas["lr"] == 0 else f" (Δ {deltas['lr']:.3g})"
            print(f"| {step} | {lr:.6g}{lr_note} | {int(theirs['count'])} / {int(ours['count'])} | "
                  + " | ".join(f"{deltas[m]:.3g}" for m in METRICS) + f" | {weights:.3g} |", flush=True)
        final = {
            "weights": max_difference(official.weights(), trainer.model.state_dict(), "weights"),
            "puzzle table": max_difference({"t": official.weights()["puzzle_embedding.weights"]},
                                           {"t": trainer.model.puzzle_embedding.weights}, "table"),
            "optimizer states": max_difference(official.adam_state(), trmlab_adam_state(trainer),
                                               "AdamATan2"),
        }
        if official.ema is not None:
            final["EMA weights"] = max_difference(official.ema_weights(), dict(trainer.ema.shadow), "EMA")
        print(f"after {args.steps} steps, max |official - trmlab|:")
        for name, (value, where) in final.items():
            print(f"  {name}: {value:.3g}" + (f" ({where})" if value else ""))
        if args.adam_rounding == "kernel":
            print(f"  (fp32 FMA emulation: {FmaCounter.ties} double-rounding ties corrected)")
        return {"steps": rows, "final": {k: v[0] for k, v in final.items()}}


def main(argv: list[str] | None = None) -> None:
    run(parse_args(argv))


if __name__ == "__main__":
    main()
