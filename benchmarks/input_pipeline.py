"""Input-pipeline throughput on a synthetic JPEG folder: images/s decoded and augmented per worker.

Writes an ImageFolder of random-texture JPEGs at ImageNet's typical size (500x375, quality 90), then
measures, each as the best of interleaved repeats:
  - decode only: PIL (Image.open + convert, what ImageFolder does) vs torchvision.io.decode_jpeg on
    the CPU, and batched decode_jpeg on the GPU when CUDA is present;
  - the training transform of widecli.data.stream (decode, random resized crop 224, flip, uint8 tensor)
    through a DataLoader with 0, 1, 2, ... workers: images/s in all, and per worker.

    python benchmarks/input_pipeline.py [--images 256] [--workers 0 1 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import header, interleaved, parse
from PIL import Image

from widecli.config.schema import DataConfig
from widecli.data import stream


def write_folder(root: Path, images: int, classes: int = 4, size=(500, 375)) -> list[Path]:
    """Smooth random textures (JPEG-compressible like photos, unlike white noise)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(images):
        small = rng.integers(0, 256, (size[1] // 16, size[0] // 16, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize(size, Image.BICUBIC)
        for split in ("train", "val"):
            d = root / split / f"c{i % classes}"
            d.mkdir(parents=True, exist_ok=True)
            if split == "train" or i < classes:
                img.save(d / f"{i}.JPEG", quality=90)
        paths.append(root / "train" / f"c{i % classes}" / f"{i}.JPEG")
    return paths


def decode_variants(paths: list[Path]) -> dict:
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    def pil():
        for p in paths:
            with Image.open(p) as im:
                im.convert("RGB").load()

    def tv_cpu():
        for p in paths:
            decode_jpeg(read_file(str(p)), mode=ImageReadMode.RGB)

    variants = {"PIL": pil, "torchvision.io (CPU)": tv_cpu}
    if torch.cuda.is_available():
        raw = [read_file(str(p)) for p in paths]

        def tv_gpu():
            for i in range(0, len(raw), 64):
                decode_jpeg(raw[i:i + 64], mode=ImageReadMode.RGB, device="cuda")
            torch.cuda.synchronize()
        variants["torchvision.io (GPU, batches of 64, files in memory)"] = tv_gpu
    return variants


def pipeline(root: Path, workers: int, batch: int = 32) -> float:
    """Seconds for one epoch of widecli.data.stream's training batches (decoded + augmented)."""
    ds = stream.load_stream(DataConfig(dataset="image_folder", root=str(root), workers=workers))
    t0 = time.perf_counter()
    for _ in stream.StreamBatches(ds, 0, batch, torch.device("cpu"), lambda idx: idx).epoch(0):
        pass
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    args = parse(ap)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_folder(Path(tmp), args.images)
        mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e3
        header(f"input pipeline on {args.images} synthetic JPEGs, 500x375, {mb:.0f} kB each")
        print("# decode only, one process; images/s (best of interleaved repeats)")
        for name, s in interleaved(decode_variants(paths), args.repeats).items():
            print(f"{name:<55} {args.images / s:8.0f} img/s")
        print("# decode + random resized crop 224 + flip (widecli.data.stream training batches of 32)")
        print(f"{'workers':>8} {'img/s':>8} {'img/s per worker':>17}")
        times = interleaved({w: (lambda w=w: pipeline(Path(tmp), w)) for w in args.workers}, args.repeats)
        for w, s in times.items():
            rate = args.images / s
            print(f"{w:>8} {rate:8.0f} {rate / max(w, 1):17.0f}")


if __name__ == "__main__":
    main()
