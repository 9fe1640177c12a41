"""Kernel benchmarks: each op vs its PyTorch reference and vs measured device-to-device copy bandwidth."""
