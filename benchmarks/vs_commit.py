"""No-regression check: this checkout's trainer against another git revision's, on the runs of
benchmarks/vs_reference_loop.py (784-h-10 MLP, factors 1 and 4), interleaved.

Ratios against the reference loop move with the machine (the two loops react differently to load),
so a regression is measured against the old code itself: each round trains every configuration
once with each revision, each in a fresh process, alternating; the figure is the best epoch of
each side over the rounds, and new/old < 1 means faster now.

    python benchmarks/vs_commit.py REV [--hidden 64 256 1024] [--factors 1 4] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, torch
sys.path.insert(0, {root!r}); sys.path.insert(0, {root!r} + "/benchmarks")
from common import mnist_shaped, spec, train_time
torch.set_num_threads(1)
try:
    from widecli.engine import threads
    threads.configure(1)
except ImportError:  # a revision from before per-run threads
    pass
data = mnist_shaped(repeat=3)
s = spec(hidden={hidden}, factor={factor}, method={method!r}, epochs={epochs})
t, [o] = train_time([s], data)
print(json.dumps({{"seconds": t, "accuracy": o.final["test_accuracy"], "backend": o.final.get("backend", "dense")}}))
"""


def epoch(root: Path, hidden: int, factor: float, epochs: int) -> dict:
    """The run vs_reference_loop.py trains for (h, factor): final width h, baseline width h / factor."""
    code = CHILD.format(root=str(root), hidden=int(hidden // factor), factor=factor, epochs=epochs,
                        method="sparse" if factor > 1 else "dense")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev", help="the git revision to compare against, e.g. HEAD~3 or a commit id")
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--factors", type=float, nargs="+", default=[1, 4])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    rev = subprocess.run(["git", "rev-parse", "--short", args.rev], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(old), rev], cwd=ROOT, check=True)
        try:
            print(f"# this checkout vs {rev}: 784-h-10 MLP, batch 128, SGD, 1 thread, best epoch of "
                  f"{args.epochs} (first excluded) over {args.rounds} interleaved rounds, fresh process each")
            print(f"{'h':>5} {'factor':>6} {rev + ' s':>10} {'now s':>8} {'now/old':>8} {'backend now':>12}")
            for h in args.hidden:
                for f in args.factors:
                    best = {"old": float("inf"), "new": float("inf")}
                    backend = ""
                    for _ in range(args.rounds):
                        for side, root in (("old", old), ("new", ROOT)):
                            got = epoch(root, h, f, args.epochs)
                            best[side] = min(best[side], got["seconds"])
                            if side == "new":
                                backend = got["backend"]
                    print(f"{h:>5} {f:>6g} {best['old']:>10.4f} {best['new']:>8.4f} "
                          f"{best['new'] / best['old']:>7.2f}x {backend:>12}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
