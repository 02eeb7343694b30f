"""A run folder resumes wherever it moves; what decides its scores is content, not paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import small_config, small_npz
from gradsign.pipeline.driver.identity import RunFolderError
from gradsign.pipeline.driver.run import run

pytestmark = pytest.mark.ray


def scores(run_dir: Path) -> dict:
    """The committed rows without their timings."""
    return pq.read_table(run_dir / "scores").sort_by("arch_id").drop(["seconds"]).to_pydict()


@pytest.fixture()
def two_copies(tmp_path, data_dir):
    """The same batch file at two paths, /A and /B."""
    for name in ("A", "B"):
        (tmp_path / name).mkdir()
        shutil.copy(data_dir / "cifar10_train_1000.npz", tmp_path / name / "batch.npz")
    return tmp_path / "A" / "batch.npz", tmp_path / "B" / "batch.npz"


def test_a_moved_folder_resumes_with_the_data_at_another_path(tmp_path, data_dir, ray_cluster, two_copies):
    path_a, path_b = two_copies
    clean = run(small_config(tmp_path / "clean", data_dir, f"data.path={path_a}"))
    partial = run(small_config(tmp_path / "first", data_dir, f"data.path={path_a}"))
    for part in sorted((partial.run_dir / "scores").glob("part-*.parquet"))[1:]:
        part.unlink()  # as if the first driver had stopped after one shard
    moved = tmp_path / "moved" / "run"
    shutil.move(partial.run_dir, moved)
    path_a.unlink()  # the old path is gone: only the identical copy at /B is left

    resumed = run(small_config(tmp_path, data_dir, f"data.path={path_b}", f"output={moved}"))
    assert resumed.summary["shards_resumed"] == 1 and resumed.summary["archs_this_run"] == 8
    assert scores(moved) == scores(clean.run_dir)
    history = json.loads((moved / "identity.json").read_text())["paths"]
    assert [h["data.path"] for h in history] == [str(path_a), str(path_b)]
    config = (moved / "config.yaml").read_text()
    assert f"data.path={path_a}" in config.splitlines()[0] and f"path: {path_b}" in config


def test_different_content_at_the_same_path_is_refused_naming_the_fingerprints(tmp_path, data_dir, ray_cluster):
    with np.load(data_dir / "cifar10_train_1000.npz") as npz:
        images, labels = npz["images"][:64].copy(), npz["labels"][:64].copy()
    batch = small_npz(tmp_path / "batch.npz", images, labels)
    first = run(small_config(tmp_path, data_dir, f"data.path={batch}"))
    fingerprint = first.summary["data"]["fingerprint"]

    with pytest.raises(RunFolderError, match=rf"differs in: data \(batch fingerprint {fingerprint} in the folder"):
        run(small_config(tmp_path, data_dir, f"data.path={batch}", "data.seed=1"))
    images[:, 0, 0, 0] ^= 1  # one pixel of every image, edited in place
    small_npz(batch, images, labels)
    with pytest.raises(RunFolderError, match=rf"batch fingerprint {fingerprint} in the folder, [0-9a-f]{{16}} now"):
        run(small_config(tmp_path, data_dir, f"data.path={batch}"))


def test_an_arch_list_is_identified_by_its_archs_not_its_path(tmp_path, data_dir, ray_cluster):
    from gradsign import spaces
    space = spaces.get("nb201")
    archs = "\n".join(space.arch(i) for i in (3, 14, 159, 2653)) + "\n"
    (tmp_path / "one.txt").write_text(archs)
    (tmp_path / "two.txt").write_text("# same archs, another file\n" + archs)
    run(small_config(tmp_path, data_dir, "sample.size=null", f"sample.archs={tmp_path / 'one.txt'}"))
    again = run(small_config(tmp_path, data_dir, "sample.size=null", f"sample.archs={tmp_path / 'two.txt'}"))
    assert again.summary["archs_this_run"] == 0
    (tmp_path / "three.txt").write_text(archs + space.arch(7) + "\n")
    with pytest.raises(RunFolderError, match=r"differs in: sample \(arch list"):
        run(small_config(tmp_path, data_dir, "sample.size=null", f"sample.archs={tmp_path / 'three.txt'}"))


def test_a_folder_made_before_identity_files_is_identified_from_its_config(tmp_path, data_dir, ray_cluster):
    first = run(small_config(tmp_path, data_dir))
    (first.run_dir / "identity.json").unlink()  # as the folders of earlier versions
    for part in sorted((first.run_dir / "scores").glob("part-*.parquet"))[1:]:
        part.unlink()
    resumed = run(small_config(tmp_path, data_dir))
    assert resumed.summary["shards_resumed"] == 1 and (first.run_dir / "identity.json").is_file()
    with pytest.raises(RunFolderError, match="differs in: seed"):
        run(small_config(tmp_path, data_dir, "seed=1"))
