"""widecli: ablation studies on wide, sparse neural networks at a fixed weight budget."""

__version__ = "0.1.0"
