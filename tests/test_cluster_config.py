"""configs/cluster.yaml passes the Ray cluster launcher's own checks (no cloud account needed).

`ray up` runs ``prepare_config`` (merge with the provider's defaults, setup commands, node types) and then
``validate_config`` (Ray's ray-schema.json) before it talks to any cloud; the same two calls run here.
"""

from __future__ import annotations

import copy
import re
import tomllib

import pytest
import yaml

from conftest import REPO

CONFIG = REPO / "configs" / "cluster.yaml"


def _launcher_check(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def cfg() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def test_cluster_config_passes_the_launchers_validation(cfg):
    prepared = _launcher_check(cfg)
    assert prepared["available_node_types"][prepared["head_node_type"]]["resources"] == {"CPU": 0}


def test_the_validation_catches_mistakes(cfg):
    import jsonschema

    typo = {**cfg, "setup_comands": cfg["setup_commands"]}  # an unknown top-level key
    no_node_config = copy.deepcopy(cfg)
    del no_node_config["available_node_types"]["gpu_worker"]["node_config"]
    for bad in (typo, no_node_config):
        with pytest.raises(jsonschema.ValidationError):
            _launcher_check(bad)


def test_every_node_installs_the_project_with_the_cluster_extra(cfg):
    import ray

    prepared = _launcher_check(cfg)
    mounts = {remote for remote, local in cfg["file_mounts"].items() if local == "."}  # the checkout
    for commands in (prepared["head_setup_commands"], prepared["worker_setup_commands"]):
        installs = [c for c in commands if re.search(r"pip install .*-e '?(\S+)\[cluster\]'?", c)]
        assert any(re.search(r"-e '?(\S+)\[", c).group(1) in mounts for c in installs), commands
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert f"ray[default]=={ray.__version__}" in extras["cluster"]  # the extra pins the Ray this runs on
    assert ".gitignore" in cfg["rsync_filter"]  # .venv/ and runs/ are not copied to the nodes
    head_start = " ".join(prepared["head_start_ray_commands"])
    assert "RAY_AUTH_MODE=disabled" in head_start and "--dashboard-host=127.0.0.1" in head_start
