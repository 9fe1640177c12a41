"""Shared test set-up: without a GPU, Triton kernels run on the CPU through Triton's interpreter.

TRITON_INTERPRET must be set before `triton.jit` decorates a kernel, i.e. before `kernels` is
imported; conftest.py is imported before any test module. Shared helpers (random models, skip
markers) live in `tests/helpers.py`.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
