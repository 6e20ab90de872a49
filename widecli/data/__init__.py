"""Data sets: the registry of loaders, resident tensors on the device, and streamed image folders."""
