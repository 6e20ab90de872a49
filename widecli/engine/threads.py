"""Intra-op CPU threads per run: the fast choice on a real, shared machine.

PyTorch's default (one thread per core) is the slow choice for the small models of this paper's
sweeps: OpenMP threads spin at a barrier after every small matmul, and when anything else runs on
the machine (a browser, a second sweep, other users of a cluster node) a thread that loses its core
stalls all the others. Measured on 2 cores (`benchmarks/threads.py`): the quick start's baseline
group takes several times longer with 2 threads beside one busy process than with 1.

`auto` (the default) gives a run one thread when its training step is small (fewer multiply-adds
than SMALL_STEP_MACS, measured as the size where a second thread stops paying on an idle machine)
and otherwise the cores it may use: the process's cores split over the parallel jobs, never more
than the cores other processes leave free, summed over the jobs. `--threads N` or WIDECLI_THREADS
fix it. The choice is recorded in each result.json (`threads`, `threads_rule`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from widecli.config.schema import RunSpec
from widecli.errors import RecipeError
from widecli.methods import distinct_models, plan_weights, trace_meta

# Multiply-adds of one training step's forward (batch x per-example MACs, all stacked runs) below
# which one thread is faster or as fast as two, idle or not (benchmarks/threads.py, 2 cores).
SMALL_STEP_MACS = 2e8


@dataclass
class Settings:
    requested: int | None = None   # --threads / WIDECLI_THREADS; None: auto
    jobs: int = 1                  # runs this machine trains at once for this command
    cap: int | None = None         # cores granted to this run by a scheduler (a Ray task's num_cpus)


_settings = Settings()


def configure(requested: int | None = None, jobs: int = 1, cap: int | None = None) -> None:
    """Set for this process (the CLI once per command; each sweep worker at its start)."""
    env = os.environ.get("WIDECLI_THREADS", "auto").strip()
    if requested is None and env != "auto":
        if not env.isdigit() or int(env) < 1:
            raise RecipeError(f"WIDECLI_THREADS: got {env!r}; expected auto or a positive integer")
        requested = int(env)
    _settings.requested, _settings.jobs, _settings.cap = requested, max(1, jobs), cap


def settings() -> Settings:
    return _settings


def cores() -> int:
    """Cores this process may run on (its CPU affinity: what SLURM or taskset allotted)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def busy_elsewhere(samples: int = 5, interval: float = 0.01) -> int:
    """Cores other processes keep busy now: the kernel's count of runnable tasks (/proc/loadavg,
    instantaneous, median of a few samples) less this process's one reader; the 1-minute load
    average where that file is missing."""
    try:
        counts = []
        for _ in range(samples):
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]))
            time.sleep(interval)
        return max(0, sorted(counts)[len(counts) // 2] - 1)
    except (OSError, ValueError, IndexError):
        return max(0, round(os.getloadavg()[0]))


def step_macs(specs: list[RunSpec], input_shape, num_classes: int) -> float:
    """Multiply-adds of one training step's forward for a (stacked) group, from its plan on the
    meta device (no allocation): every weight layer's output elements x its fan-in."""
    spec = specs[0]
    plan = plan_weights(spec, input_shape, num_classes)
    total = 0

    def count(module, output) -> None:
        nonlocal total
        w = getattr(module, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() >= 2:
            # output elements x fan-in: the last dim of a (stacked) linear weight, in x kh x kw of a conv's
            fan_in = w.shape[-1] if w.dim() <= 3 and not isinstance(module, torch.nn.Conv2d) else w[0].numel()
            total += output.numel() * fan_in

    if not trace_meta(spec, plan, input_shape, num_classes, 1, count):
        total = plan.dense_weights  # no meta kernel: the weights (an MLP's exact figure)
    return float(total) * spec.train.batch_size * len(specs)


def choose(specs: list[RunSpec], input_shape, num_classes: int, device: torch.device) -> tuple[int, str]:
    """(threads, why) for a group about to train on `device`."""
    budget = max(1, cores() // _settings.jobs)
    if _settings.cap:
        budget = min(budget, _settings.cap)
    if _settings.requested:
        return _settings.requested, "requested"
    if device.type == "cuda":
        return min(budget, 4), "auto: CUDA run (threads only feed the GPU)"
    macs = step_macs(specs, input_shape, num_classes)
    if macs < SMALL_STEP_MACS:
        return 1, f"auto: small step ({macs:.2g} < {SMALL_STEP_MACS:.0g} multiply-adds)"
    free = max(1, cores() - busy_elsewhere())
    n = max(1, min(budget, free // _settings.jobs))
    return n, f"auto: {macs:.2g} multiply-adds per step; {free} free core(s) over {_settings.jobs} job(s)"


def apply(specs: list[RunSpec], input_shape, num_classes: int, device: torch.device) -> tuple[int, str]:
    """Set torch's intra-op threads for this group; (threads, why)."""
    n, why = choose(specs, input_shape, num_classes, device)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n, why


def auto_jobs(specs: list[RunSpec], device: torch.device) -> int:
    """`--jobs auto`: one worker process per free core when every run's step is small (each then
    trains with one thread: the cores are used by processes, which never wait on each other), else
    1 (a large run's threads use the cores). On CUDA, 1: the GPU, not the cores, is what runs use."""
    if device.type == "cuda" or not specs:
        return 1
    if any(step_macs([s], shape, classes) >= SMALL_STEP_MACS for s, shape, classes in distinct_models(specs)):
        return 1
    return max(1, min(cores() - busy_elsewhere(), len(specs)))
