"""The SLURM executor: the sweep's unfinished runs as one job array, through submitit.

Assumes what clusters have: a results directory on a file system every node shares, and widecli
installed where the jobs run. Each array task trains one group (one run, or seeds stacked) through
the one run path (execute.run.run_group): it takes the runs' leases, trains with in-run checkpoints
into the shared results directory, and writes the runs. On preemption or timeout SLURM signals the
job; submitit calls `RunTask.checkpoint`, which requeues the same task, and the task resumes from the
run's checkpoint (the interrupted attempt released its leases on the way out). The driver submits,
then follows the jobs; with `--no-wait` it returns after submitting, and running `widecli sweep
RECIPE` again re-attaches: finished runs are skipped and runs leased by running jobs are waited for.
submitit is an optional extra (`pip install 'widecli[slurm]'`); its local cluster runs the same
pickled tasks as subprocesses, which is how the tests run it.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from widecli.config.schema import RunSpec
from widecli.engine import threads as threads_mod
from widecli.engine.device import resolve_device
from widecli.errors import RecipeError, SweepError
from widecli.execute.worklist import is_todo, status_of
from widecli.execute.run import Context, Event, GroupReport, label, run_group_when_free
from widecli.store import lock
from widecli.store.runs import atomic_write

JOBS_FILE = "jobs.json"   # results/.slurm/<recipe>/jobs.json: the last submission, for re-attaching
POLL_S = 2.0


@dataclass
class RunTask:
    """One array task: train a group through the run path. Picklable; requeued on preemption."""

    spec_dicts: list[dict]
    results: str
    device: str = "auto"
    threads: int | None = None   # --threads; None: auto within the task's allotted cores
    provenance: dict | None = None   # the submitting driver's (execute.provenance)

    def __call__(self) -> list[tuple[str, str, str | None]]:
        specs = [with_checkpoints(RunSpec.model_validate(d)) for d in self.spec_dicts]
        device = resolve_device(self.device)
        threads_mod.configure(self.threads, 1)  # the task's CPU affinity is what SLURM allotted
        # A requeued attempt may find its old lease not yet gone: wait for it, then go on.
        return run_group_when_free(specs, self.results, device, provenance=self.provenance).trained

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on preemption/timeout: requeue this same task (it resumes from the
        runs' checkpoints in the shared results directory)."""
        from submitit.helpers import DelayedSubmission  # optional extra: pip install 'widecli[slurm]'

        return DelayedSubmission(self, *args, **kwargs)


def with_checkpoints(spec: RunSpec) -> RunSpec:
    """A spec that saves a resumable checkpoint every epoch unless it says how often (an execution
    key: the run id is unchanged)."""
    if spec.train.checkpoint_every:
        return spec
    return spec.model_copy(update={"train": spec.train.model_copy(update={"checkpoint_every": 1})})


# sbatch options widecli or submitit set themselves: --slurm-option may not give them (the dedicated
# option where there is one).
OWNED = {"mem": "--mem", "account": "--account", "qos": "--qos", "constraint": "--constraint",
         "partition": "--partition", "time": "--time", "cpus-per-task": "--cpus-per-run",
         "gpus-per-node": "--gpus-per-run", "array": "--array-parallelism", "job-name": None, "output": None,
         "error": None, "signal": None, "open-mode": None, "wckey": None}


def check_options(mem: str | None = None, account: str | None = None, qos: str | None = None,
                  constraint: str | None = None, setup: list[str] = (), extra: list[str] = ()) -> dict:
    """The cluster options as submitit's SLURM parameters, checked here (before anything is
    submitted) where their format is known; one-line RecipeError otherwise."""
    out: dict = {}
    if mem is not None:
        if not re.fullmatch(r"\d+[KMGT]?", mem.strip(), re.IGNORECASE):
            raise RecipeError(f"--mem: got {mem!r}; expected a size as sbatch takes it: an integer with an "
                              f"optional unit K, M, G or T (default M), e.g. 16G or 4000M")
        out["mem"] = mem.strip().upper()
    for option, value, pattern, what in (
            ("--account", account, r"[\w.+-]+", "letters, digits, '_', '.', '+' or '-'"),
            ("--qos", qos, r"[\w.+-]+", "letters, digits, '_', '.', '+' or '-'"),
            ("--constraint", constraint, r"[\w.&|()\[\]*:,!-]+",
             "node features joined by & | , with [ ] ( ) * (no spaces), e.g. 'a100&ib'")):
        if value is not None:
            if not re.fullmatch(pattern, value):
                raise RecipeError(f"{option}: got {value!r}; expected {what}")
            out[option.lstrip("-")] = value
    lines = []
    for line in setup:
        if not line.strip() or "\n" in line or "\r" in line:
            raise RecipeError(f"--slurm-setup: got {line!r}; expected one non-empty shell line (give the "
                              f"option once per line, e.g. --slurm-setup 'module load cuda')")
        lines.append(line)
    if lines:
        out["setup"] = lines
    additional = {}
    for item in extra:
        key, eq, value = item.partition("=")
        key = key.strip().lstrip("-").replace("_", "-")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", key) or (eq and not value.strip()) or "\n" in value:
            raise RecipeError(f"--slurm-option: got {item!r}; expected KEY=VALUE (an sbatch long option without "
                              f"its --, e.g. mail-type=END) or KEY alone for a switch (e.g. exclusive)")
        if key in OWNED:
            use = f"use {OWNED[key]}" if OWNED[key] else "widecli (through submitit) sets it"
            raise RecipeError(f"--slurm-option {item!r}: {key} is not an additional option: {use}")
        additional[key] = value.strip() if eq else True
    if additional:
        out["additional_parameters"] = additional
    return out


def time_limit_minutes(text: str) -> int:
    """`--time` [D-]HH:MM:SS (or MM, as sbatch reads a lone number) -> whole minutes, a started
    minute counted; one-line RecipeError otherwise."""
    try:
        days, _, rest = text.rpartition("-")
        parts = [int(p) for p in rest.split(":")]
        if not 1 <= len(parts) <= 3 or any(p < 0 for p in parts):
            raise ValueError
        h, m, s = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
        minutes = int(days or 0) * 1440 + h * 60 + m + (1 if s else 0)
    except ValueError:
        raise RecipeError(f"--time: got {text!r}; expected [D-]HH:MM:SS, e.g. 4:00:00 or 1-12:00:00") from None
    if minutes < 1:
        raise RecipeError(f"--time: got {text!r}; the time limit must be at least one minute")
    return minutes


def _executor(folder: Path, options: dict, name: str):
    try:
        import submitit  # optional extra: pip install 'widecli[slurm]'
    except ImportError:
        raise SweepError("--executor slurm: submitit is not installed; pip install 'widecli[slurm]'") from None
    cluster = options.get("cluster") or "slurm"  # "local": the array tasks as processes on this machine
    try:
        ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    except Exception as e:  # no sbatch on this machine, and no local cluster asked for
        raise SweepError(f"--executor slurm: cannot submit ({str(e).splitlines()[0]}); on a machine "
                         f"without SLURM, --slurm-cluster local runs the jobs here") from None
    params = {"name": name, "timeout_min": options.get("time_min", 240),
              "gpus_per_node": options.get("gpus_per_run", 0), "cpus_per_task": options.get("cpus_per_run", 1)}
    if options.get("partition"):
        params["slurm_partition"] = options["partition"]
    if options.get("array_parallelism"):
        params["slurm_array_parallelism"] = options["array_parallelism"]
    params.update({f"slurm_{k}": v for k, v in (options.get("slurm") or {}).items()})  # check_options
    if cluster == "local":  # submitit's local cluster knows only the generic keys
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    ex.update_parameters(**params)
    return ex


def submit(groups: list[list[RunSpec]], results: Path, options: dict, device: str = "auto",
           threads: int | None = None, provenance: dict | None = None) -> list:
    """Submit one array task per group; returns the submitit jobs (and records their ids)."""
    recipe = groups[0][0].recipe
    folder = Path(results) / ".slurm" / recipe
    ex = _executor(folder, options, f"widecli-{recipe}")
    tasks = [RunTask([s.model_dump(mode="json") for s in g], str(results), device, threads, provenance)
             for g in groups]
    with ex.batch():
        jobs = [ex.submit(t) for t in tasks]
    atomic_write(folder / JOBS_FILE, json.dumps(
        {"submitted": time.time(), "jobs": [{"job_id": j.job_id, "runs": [s.run_id for s in g]}
                                            for j, g in zip(jobs, groups)]}, indent=1).encode())
    return jobs


def execute(groups: list[list[RunSpec]], ctx: Context) -> Iterator[tuple[list[RunSpec], GroupReport]]:
    """Submit the groups as a job array on the shared results directory and follow the jobs."""
    options = ctx.options or {}
    todo, reports = [], []
    for g in groups:
        busy = [s for s in g if lock.lock_owner(ctx.results, s)]          # a running job has it
        done = [s for s in g if not is_todo(status_of(ctx.results, s)[0], ctx.force, ctx.retry_failed)]
        if busy or len(done) == len(g):
            reports.append((g, GroupReport(busy=busy, elsewhere=[s for s in done if s not in busy])))
        else:
            todo.append(g)
    yield from reports
    if not todo:
        return
    device = "auto" if ctx.requested_device == "auto" else ctx.requested_device
    jobs = submit(todo, ctx.results, options, device, ctx.threads, ctx.provenance)
    for job, g in zip(jobs, todo):
        ctx.emit(Event("start", [label(s) for s in g], status=f"job {job.job_id}"))
    if options.get("no_wait"):
        for g in todo:  # followed by the next `widecli sweep RECIPE`, which finds them leased or done
            yield g, GroupReport()
        return
    pending = dict(zip(jobs, todo))
    while pending:
        for job in [j for j in pending if j.done()]:
            g = pending.pop(job)
            try:
                trained = job.result()
            except Exception as e:  # the task failed as a whole (not a failed run: those are recorded)
                why = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                trained = [(s.run_id, "failed", f"job {job.job_id}: {why}") for s in g]
            yield g, GroupReport(trained=trained)
        time.sleep(POLL_S)
