"""Reading W&B offline logs back (no W&B server, no network): what an export actually recorded."""

from __future__ import annotations

import json
import struct


def wandb_records(path):
    """The records of a W&B offline log: a 7-byte header, then LevelDB log blocks of 32 KiB whose
    records are checksum(4) length(2) type(1) + payload (types 1 full, 2 first, 3 middle, 4 last)."""
    raw, pos, block, part = path.read_bytes(), 7, 32768, b""
    while pos + 7 <= len(raw):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        data, pos = raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield data
        elif kind in (2, 3):
            part = (part if kind == 3 else b"") + data
        elif kind == 4:
            yield part + data


def read_wandb(log) -> tuple[dict, dict, list[dict], dict]:
    """(run record fields, config, history rows, run summary) of one offline .wandb log."""
    from wandb.proto import wandb_internal_pb2 as pb

    def items(update):
        return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in update}

    run, config, history, summary = {}, {}, [], {}
    for data in wandb_records(log):
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append(items(record.history.item))
        elif kind == "run":
            run = {"project": record.run.project, "name": record.run.display_name, "id": record.run.run_id}
            config = items(record.run.config.update)
        elif kind == "summary":  # the summary as W&B records it: later updates replace earlier ones
            summary.update(items(record.summary.update))
            for item in record.summary.remove:
                summary.pop(item.key or "/".join(item.nested_key), None)
    config = {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in config.items()}
    return run, config, [h for h in history if "test_accuracy" in h], summary  # (W&B adds rows of its own)
