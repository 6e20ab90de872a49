"""Issue 29, done when: for each mask family a short training run of the quick start (sparse,
factor 4) ends with every layer's kept connections equal to its planned allocation and no nonzero
weight outside the mask; SET/RigL changed the mask (the moved fraction recorded); N:M masks satisfy
the pattern; result.json carries the compute fields; a resumed RigL run equals an uninterrupted one.

Allocations are recomputed here from `sparsity.rules.allocate` and masks recounted from model.pt,
independently of the numbers the run wrote."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import CPU

from widecli.errors import RecipeError
from widecli.recipes import load_recipe, make_spec
from widecli.sparsity.families import nm_satisfied
from widecli.sparsity.masks import make_masks
from widecli.sparsity.rules import allocate
from widecli.store import runs as store

QUICKSTART = Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml"
FAMILIES = ["random", "snip", "synflow", "set", "rigl", '"2:4"']


def quickstart(data_root, mask: str, *extra: str, seeds=(0,)):
    """The quick start at factor 4, sparse, on 512 MNIST-1D examples for 3 epochs (12 steps)."""
    dynamic = mask in ("set", "rigl")
    r = load_recipe(QUICKSTART, [f"data.root={data_root}", "data.subset=512", "train.epochs=3",
                                 f"sparsity.mask={mask}", f"seeds={list(seeds)}",
                                 *(["sparsity.update_every=2"] if dynamic else []), *extra])
    return [make_spec(r, 4.0, "sparse", s) for s in r.seeds]


def planned(spec) -> dict[str, int]:
    """The leveling rule's allocation at factor 4, from the rule itself: 40-128-32-10."""
    shapes = {"fc1": (128, 40), "fc2": (32, 128), "out": (10, 32)}
    return allocate(spec.sparsity.rule, shapes, 40 * 32 + 32 * 32 + 32 * 10)


def count(mask: torch.Tensor) -> int:
    return sum(1 for v in mask.flatten().tolist() if v)


@pytest.mark.parametrize("mask", FAMILIES, ids=lambda m: m.strip('"'))
def test_every_family_trains_at_exactly_the_planned_allocation(tmp_path, data_root, run_stored, mask):
    [spec] = quickstart(data_root, mask)
    [(run, path)] = run_stored([spec], tmp_path, CPU)
    result = store.read_result(path)
    want = planned(spec)
    assert run.status == "ok" and sum(want.values()) == 2624
    for name, kept in want.items():
        m = run.masks[name][0]
        assert count(m) == kept == result["masks"][name]["kept"], name
        w = run.state[f"{name}.weight"][0]
        assert count((w != 0) & ~m) == 0, name          # no nonzero weight outside the mask
    family = spec.sparsity.mask
    if family in ("set", "rigl"):
        start = make_masks({"fc1": (128, 40), "fc2": (32, 128), "out": (10, 32)}, want, spec.seed)
        for name in ("fc1", "fc2"):
            moved = count(run.masks[name][0] & ~start[name]) / want[name]
            assert moved > 0 and result["masks"][name]["moved"] == pytest.approx(moved), name
        assert result["final"]["mask_updates"] == 4                 # steps 2, 4, 6, 8 of 12 (end: 9)
        assert result["final"]["backend"] == "dense" and result["final"]["fused_step"]
    else:
        assert all("moved" not in x for x in result["masks"].values())
    if family == "2:4":
        assert all(nm_satisfied(run.masks[n][0], 2, 4) for n in want)
    # compute: an MLP's forward multiply-accumulates per example are its weights (kept / all)
    w = result["weights"]
    assert w["macs_nonzero"] == 2624 and w["macs_dense"] == 40 * 128 + 128 * 32 + 32 * 10
    assert result["final"]["epoch_seconds"] > 0


def test_masks_that_change_differ_by_seed_and_stack_like_solo_runs(tmp_path, data_root, run_stored):
    specs = quickstart(data_root, "rigl", seeds=(0, 1))
    stacked = run_stored(specs, tmp_path / "k2", CPU)
    assert [r.final["stacked_with"] for r, _ in stacked] == [2, 2]
    for spec, (together, _) in zip(specs, stacked, strict=True):
        [(alone, _)] = run_stored([spec], tmp_path / f"solo{spec.seed}", CPU)
        assert all(torch.equal(together.masks[n], alone.masks[n]) for n in alone.masks)
        assert together.final["test_accuracy"] == pytest.approx(alone.final["test_accuracy"], abs=2e-3)
    assert not torch.equal(stacked[0][0].masks["fc1"], stacked[1][0].masks["fc1"])


class Stop(BaseException):
    pass


def test_a_rigl_run_resumed_after_a_mask_update_equals_an_uninterrupted_one(tmp_path, data_root, run_stored):
    [spec] = quickstart(data_root, "rigl", "train.checkpoint_every=1")
    [(whole, _)] = run_stored([spec], tmp_path / "a", CPU)

    def stop_after_2(epoch, epochs, rows):
        if epoch == 2:   # 8 steps done: the masks changed at steps 2, 4, 6 and 8
            raise Stop
    with pytest.raises(Stop):
        run_stored([spec], tmp_path / "b", CPU, on_epoch=stop_after_2)
    saved = torch.load(store.run_dir(tmp_path / "b", spec) / store.CHECKPOINT, weights_only=False)
    assert saved["dynamic"]["updates"] == 4
    assert not torch.equal(saved["masks"]["fc1"], saved["dynamic"]["initial"]["fc1"])
    [(resumed, path)] = run_stored([spec], tmp_path / "b", CPU)
    assert all(torch.equal(whole.masks[n], resumed.masks[n]) for n in whole.masks)
    assert all(torch.equal(t, resumed.state[n]) for n, t in whole.state.items())
    assert [r["test_loss"] for r in resumed.metrics] == [r["test_loss"] for r in whole.metrics]
    assert store.read_result(path)["masks"] == store.read_result(store.run_dir(tmp_path / "a", spec))["masks"]


def test_dynamic_masks_refuse_the_csr_backend_in_one_line(data_root):
    with pytest.raises(RecipeError) as e:
        quickstart(data_root, "rigl", "train.backend=sparse")
    msg = str(e.value)
    assert "train.backend" in msg and "sparsity.mask" in msg and "rigl" in msg and "\n" not in msg
    assert msg.startswith("--set train.backend=sparse: ")   # names where the bad value came from


def test_static_families_may_train_as_csr(tmp_path, data_root, run_stored):
    [spec] = quickstart(data_root, "snip", "train.backend=sparse")
    [(run, path)] = run_stored([spec], tmp_path, CPU)
    assert run.final["backend"] == "sparse"
    assert {n: x["kept"] for n, x in store.read_result(path)["masks"].items()} == planned(spec)


def test_the_guard_fails_a_run_whose_mask_breaks_the_budget(tmp_path, data_root, monkeypatch):
    """A family that keeps one weight too many is caught at the end of training, not stored as ok."""
    from widecli.engine.loop import fit
    from widecli.execute.run import dataset
    from widecli.sparsity import families

    def greedy(self, shapes, counts, specs, *a, **k):
        return [make_masks(shapes, {n: min(c + 1, math.prod(shapes[n])) for n, c in counts.items()}, s.seed)
                for s in specs]
    monkeypatch.setattr(families.MaskFamily, "initial", greedy)
    [spec] = quickstart(data_root, "random")
    with pytest.raises(RuntimeError, match="budget is broken"):
        fit([spec], dataset(spec, CPU), CPU)


@pytest.mark.parametrize("mask", ["set", "rigl"])
def test_counts_hold_at_every_step(data_root, monkeypatch, mask):
    """After every training step (mask updates included) each layer keeps its allocation and no
    weight outside the mask is nonzero."""
    from widecli.engine import steps
    from widecli.engine.loop import fit
    from widecli.execute.run import dataset

    [spec] = quickstart(data_root, mask)
    want, seen = planned(spec), []
    inner_call = steps.MaskUpdateStep.__call__

    def checked(self, x, y, global_batch):
        out = inner_call(self, x, y, global_batch)
        for name, module in self.updater.layers:
            m = self.updater.masks[name][0]
            seen.append(count(m) == want[name] and not bool(((module.weight[0] != 0) & ~m).any()))
        return out
    monkeypatch.setattr(steps.MaskUpdateStep, "__call__", checked)
    [outcome] = fit([spec], dataset(spec, CPU), CPU)
    assert len(seen) == 12 * 3 and all(seen) and outcome.final["mask_updates"] == 4
