"""The score row: what a scorer returns for one arch, and what a run folder's score files hold.

Torch-free, so readers of run folders (the search stage, ``gradsign report``) need not import torch.
Columns in this order: ``arch_id`` int64, ``arch`` string, the space's key column when it has one (NB101
``hash``, string), one float64 per proxy in the run's order, ``nonfinite`` string (``proxy:count,...`` or
null), ``seconds`` float64, ``error`` string (null when every proxy succeeded).
"""

from __future__ import annotations

from typing import Sequence

import pyarrow as pa


def score_schema(proxy_names: Sequence[str], key_column: str | None = None) -> pa.Schema:
    """Score rows: arch_id, arch, the space's key column if it has one (NB101 ``hash``), one float per
    proxy, nonfinite, seconds, error."""
    fields = [pa.field("arch_id", pa.int64()), pa.field("arch", pa.string())]
    if key_column is not None:
        fields.append(pa.field(key_column, pa.string()))
    fields += [pa.field(name, pa.float64()) for name in proxy_names]
    fields += [pa.field("nonfinite", pa.string()), pa.field("seconds", pa.float64()),
               pa.field("error", pa.string())]
    return pa.schema(fields)
