"""Run identity: a run's id is the first 12 hex of the sha256 of its canonical spec.

Keys at their schema default are left out (as open_lth does), so adding a recipe key whose default
keeps the old behaviour does not change the id of any stored run; execution-only keys (how a run is
executed, not what it computes) are left out too. Same spec, same id, on every machine.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

# Keys that choose *how* a run is executed, not *what* it computes: excluded from the run id, so a
# run trained stacked, with a sparse backend or from another data folder is still the same run.
EXECUTION_KEYS = {
    "data": ("root", "download", "pipeline", "workers"),
    "train": ("stack", "backend", "compile", "checkpoint_every", "gpus", "fused"),
}
SECTIONS = ("data", "model", "sparsity", "train")


def identity(spec: BaseModel) -> dict[str, Any]:
    """The semantic content of a RunSpec (config.schema, which imports this module): what the run id hashes."""
    d = spec.model_dump(mode="json", exclude={"recipe", "axes"})
    for section in SECTIONS:
        fields = type(getattr(spec, section)).model_fields
        for k in list(d[section]):
            f = fields[k]
            if k in EXECUTION_KEYS.get(section, ()) or (
                    not f.is_required() and d[section][k] == _json(f.get_default(call_default_factory=True))):
                del d[section][k]
    return d


def run_id(spec: BaseModel) -> str:
    canon = json.dumps(identity(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:12]


def stack_key(spec: BaseModel) -> str:
    """Runs with equal stack keys differ only in seed and may train as one stacked model."""
    d = identity(spec)
    d.pop("seed")
    return json.dumps(d, sort_keys=True)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))
