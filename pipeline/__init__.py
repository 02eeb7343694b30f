"""The driver side: configs, data batches, shards, Ray dispatch, the reducer, reports and the CLI.

The only package that talks to Ray and to disk.
"""

from . import truth as _truth

_truth.register()  # ground_truth.path may name an official NAS-Bench-201 .pth (converted once, cached)
