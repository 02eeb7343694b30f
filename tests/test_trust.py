"""Issue 19 (items 1, 2, 3, 6, 7, 8): nothing wrong is committed or trusted.

Verified score files (a file copied over another, a flipped bit), one meaning per ground-truth and
benchmark row, a first time limit that grows with the shard, a full disk as one line, and a sample larger
than its space refused. Real Ray, real Parquet, real shared data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import faulty_proxies  # noqa: F401  (registers the test proxies in this process too)
from conftest import small_config
from gradsign import spaces
from gradsign.pipeline.driver.config import ConfigError
from gradsign.pipeline.driver.run import prepare, run

PLUGIN = ["plugins=[faulty_proxies]"]


# -- 8. a sample larger than its space is refused --------------------------------------------------------

def test_a_sample_larger_than_the_space_is_refused_naming_its_size(tmp_path, data_dir):
    size = len(spaces.get("nb201"))
    cfg = small_config(tmp_path, data_dir, f"sample.size={size + 1}")
    with pytest.raises(ConfigError, match=rf"sample.size {size + 1} is larger than space 'nb201' \({size} archs\)"):
        prepare(cfg)
    assert not (tmp_path / "run").exists()
    prepare(small_config(tmp_path, data_dir, f"sample.size={size}"))  # the whole space, said exactly: fine


# -- 6. the first time limit grows with the shard's rows -------------------------------------------------

@pytest.mark.ray
def test_a_healthy_first_shard_is_not_killed_by_a_per_shard_limit(tmp_path, data_dir, ray_cluster):
    # 6 archs of 0.5 s each in one shard: 3 s of work; initial_s 1 s was the whole shard's limit before
    cfg = small_config(tmp_path, data_dir, *PLUGIN, "proxies=[sleeps]", "proxy_options={sleeps: {seconds: 0.5}}",
                       "sample.size=6", "shard_size=6", "ray.num_actors=1", "ray.max_shard_attempts=1",
                       "ray.shard_timeout={initial_s: 1, min_s: 1, factor: 20}")
    summary = run(cfg).summary
    assert summary["archs"] == {"requested": 6, "scored": 6, "failed": 0, "missing": 0}
    assert not [e for e in summary["dispatch_events"] if "TimedOut" in e], summary["dispatch_events"]
