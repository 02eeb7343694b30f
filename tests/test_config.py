from pathlib import Path

import pytest

from gradsign.pipeline.common.layered import parse_override
from gradsign.pipeline.driver.config import ConfigError, resolve

CONFIGS = ["nb201-cifar10", "nb201-cifar10-smoke", "nb201-cifar100", "nb201-imagenet16-120"]


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_resolve_to_shared_data(name, data_dir, monkeypatch):
    monkeypatch.delenv("GRADSIGN_DATA", raising=False)
    cfg = resolve(f"configs/{name}.yaml")
    assert Path(cfg["data"]["path"]).parent.resolve() == data_dir
    assert cfg["output"] == f"runs/{name}"


def test_overrides_and_env_expansion(monkeypatch):
    monkeypatch.setenv("GRADSIGN_DATA", "/data/here")
    cfg = resolve("configs/nb201-cifar10.yaml", ["sample.size=300", "proxies=[gradsign]", "ray.address=null",
                                                 "ray.num_gpus_per_actor=0.25"])
    assert cfg["sample"]["size"] == 300 and cfg["ray"]["num_gpus_per_actor"] == 0.25
    assert cfg["data"]["path"] == "/data/here/cifar10_train_1000.npz"
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])


def test_unknown_key_names_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown config key 'sample.sise'.*sample.size"):
        resolve("configs/nb201-cifar10.yaml", ["sample.sise=3"])
    with pytest.raises(ConfigError, match=r"unknown config key 'shard'.*shard_size"):
        resolve(None, ["shard=3", "data.path=x"])


@pytest.mark.parametrize("override, words", [
    ("data.batch_size=0", "must be >= 1"),
    ("shard_size=ten", "must be an integer"),
    ("ray.num_gpus_per_actor=-1", "number >= 0"),
    ("proxies=[]", "non-empty list"),
    ("ground_truth.column=null", "go together"),
])
def test_bad_values(override, words):
    with pytest.raises(ConfigError, match=words):
        resolve("configs/nb201-cifar10.yaml", [override])


def test_missing_file_and_env():
    with pytest.raises(ConfigError, match="not found"):
        resolve("configs/nope.yaml")
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        resolve(None, ["data.path=${NOT_SET_ANYWHERE}/x.npz"])


def test_cluster_launcher_config_has_a_cpu_head_and_gpu_workers():
    import yaml

    cluster = yaml.safe_load(open("configs/cluster.yaml"))
    nodes = cluster["available_node_types"]
    assert cluster["head_node_type"] in nodes
    assert nodes[cluster["head_node_type"]]["resources"] == {"CPU": 0}
    assert any(name != cluster["head_node_type"] and node["max_workers"] > 0 for name, node in nodes.items())
    assert any("ray start --head" in c for c in cluster["head_start_ray_commands"])
