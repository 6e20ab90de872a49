"""Data sets: one record per data set (registry), their loaders, files on disk and the npz format,
resident tensors on the device, and streamed image folders."""
