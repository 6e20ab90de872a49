"""widecli's trainer vs the usual PyTorch training loop on the same MLP run.

The reference is written the way the paper's official code and most scripts are: a DataLoader over
a TensorDataset (shuffle, batch 128), nn.Linear layers with the mask multiplied in the forward,
`loss.item()` / `.item()` accuracy bookkeeping every step, a test pass every epoch. Both train the
same run (data, epochs, seed, factor, connectivity, optimizer); their inits, masks and data orders
are drawn differently, so accuracies agree within seed noise, not bit for bit.

    python benchmarks/vs_reference_loop.py [--epochs 3] [--hidden 64 256 1024]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from common import best_epoch, header, interleaved, mnist_shaped, parse, spec
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from widecli.engine.loop import fit as train
from widecli.methods import build


class MaskedLinear(nn.Linear):
    """The official code's pattern: weight * mask in every forward."""

    def __init__(self, n_in, n_out, mask=None):
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask if mask is not None else torch.ones(n_out, n_in))

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


def reference_model(s, data):
    """An nn.Sequential of MaskedLinear with the widths and masks widecli builds for the same spec."""
    built = build([s], data.input_shape, data.num_classes)
    layers: list[nn.Module] = [nn.Flatten()]
    names = built.model.names
    for i, name in enumerate(names):
        lin = getattr(built.model, name)
        mask = built.masks.get(name)
        m = MaskedLinear(lin.in_features, lin.out_features,
                         mask[0].float() if mask is not None else None)
        with torch.no_grad():
            m.weight.copy_(lin.weight[0])
            m.bias.copy_(lin.bias[0])
        layers.append(m)
        if i < len(names) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def reference_train(s, data) -> tuple[list[float], float]:
    """Epoch times and final test accuracy of the usual loop."""
    torch.manual_seed(s.seed)
    model = reference_model(s, data)
    cfg = s.train
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=cfg.batch_size, shuffle=True)
    test = DataLoader(TensorDataset(data.x_test, data.y_test), batch_size=1000)
    times, acc = [], 0.0
    for _ in range(cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        total_loss, correct = 0.0, 0
        for x, y in loader:
            opt.zero_grad()
            out = model(x)
            loss = F.cross_entropy(out, y)
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(y)
            correct += (out.argmax(1) == y).sum().item()
        model.eval()
        hits = 0
        with torch.no_grad():
            for x, y in test:
                hits += (model(x).argmax(1) == y).sum().item()
        acc = hits / len(data.y_test)
        times.append(time.perf_counter() - t0)
    return times, acc


def stacked_train(s, data, k: int = 8) -> tuple[list[float], float]:
    """K seeds of the same run stacked (what a sweep over seeds does): time per run, mean accuracy."""
    outs = train([s.model_copy(update={"seed": s.seed + j}) for j in range(k)], data, torch.device("cpu"))
    return [r["seconds"] / k for r in outs[0].metrics], statistics.mean(o.final["test_accuracy"] for o in outs)


def widecli_train(s, data) -> tuple[list[float], float]:
    [o] = train([s], data, torch.device("cpu"))  # backend auto: sparse layers where they pay
    return [r["seconds"] for r in o.metrics], o.final["test_accuracy"]


def autograd_train(s, data) -> tuple[list[float], float]:
    """widecli's trainer with the fused MLP step off (`train.fused: off`): the autograd path."""
    return widecli_train(s.model_copy(update={"train": s.train.model_copy(update={"fused": "off"})}), data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--repeat-data", type=int, default=3, help="tile the 4000 training examples")
    args = parse(ap)
    data = mnist_shaped(repeat=args.repeat_data)
    header(f"widecli trainer vs DataLoader loop: 784-h-10 MLP, batch 128, SGD, {len(data.y_train)} "
           f"train / {len(data.y_test)} test examples (MNIST-1D upsampled to 784), {args.epochs} epochs")
    print("# epoch time (train + test pass) = fastest epoch after the first, best of interleaved repeats")
    print("# widecli: the trainer as used (fused MLP step where valid; sparse layers where auto picks them)")
    print("# autograd: the same trainer with train.fused: off")
    print("# widecli x8: 8 seeds of the run stacked in one model, time per run (a sweep over seeds)")
    print(f"{'h':>5} {'factor':>6} {'conn':>6} {'reference s/epoch':>18} {'autograd s/epoch':>16} "
          f"{'speed-up':>8} {'widecli s/epoch':>16} {'speed-up':>8} {'widecli x8 s/run':>16} {'speed-up':>8} "
          f"{'ref acc':>8} {'widecli acc':>11} {'x8 mean acc':>11}")
    for h in args.hidden:
        for factor, method in ((1, "dense"), (4, "sparse")):
            base = h // factor if method == "sparse" else h
            s = spec(hidden=base, factor=factor, method=method, epochs=args.epochs)
            got: dict[str, list] = {"ref": [], "autograd": [], "widecli": [], "x8": []}

            def run(fn, key):
                def go():
                    times, acc = fn(s, data)
                    got[key].append((best_epoch([{'seconds': t} for t in times]), acc))
                    return got[key][-1][0]
                return go
            med = interleaved({"ref": run(reference_train, "ref"), "autograd": run(autograd_train, "autograd"),
                               "widecli": run(widecli_train, "widecli"), "x8": run(stacked_train, "x8")},
                              args.repeats)
            conn = build([s], data.input_shape, 10).plan.connectivity
            accs = {k: statistics.mean(a for _, a in v) for k, v in got.items()}
            print(f"{h:>5} {factor:>6} {conn:>6.3f} {med['ref']:>18.4f} {med['autograd']:>16.4f} "
                  f"{med['ref'] / med['autograd']:>7.2f}x {med['widecli']:>16.4f} {med['ref'] / med['widecli']:>7.2f}x "
                  f"{med['x8']:>16.4f} {med['ref'] / med['x8']:>7.2f}x "
                  f"{accs['ref']:>8.4f} {accs['widecli']:>11.4f} {accs['x8']:>11.4f}",
                  flush=True)


if __name__ == "__main__":
    main()
