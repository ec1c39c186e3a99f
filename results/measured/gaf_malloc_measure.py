"""Elementwise torch ops on vectors the size of the causal (30, 1024) GAF edge set (15.7M float64,
126 MB each, above glibc's 32 MB largest dynamic mmap threshold): CPU seconds and page faults with
glibc's default malloc, and with the threshold raised by mallopt (``--mallopt``) or GLIBC_TUNABLES.
``.venv/bin/python results/measured/gaf_malloc_measure.py [--mallopt]`` under /usr/bin/time."""
import ctypes
import sys
import time

import torch

if "--mallopt" in sys.argv:
    libc = ctypes.CDLL("libc.so.6")
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    print("mallopt(M_MMAP_THRESHOLD, 1 GiB) ->", libc.mallopt(M_MMAP_THRESHOLD, 1 << 30),
          "mallopt(M_TRIM_THRESHOLD, 2 GiB) ->", libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1))
torch.set_num_threads(1)
K = 30 * 1024 * 1024 // 2
x = torch.rand(K, dtype=torch.float64)
y = torch.rand(K, dtype=torch.float64) + 1
c, w = time.process_time(), time.time()
for _ in range(60):
    z = x * y + x / y
print(f"60 x (x*y + x/y) on {K} float64: cpu_s {time.process_time() - c:.2f} wall_s {time.time() - w:.2f}")
