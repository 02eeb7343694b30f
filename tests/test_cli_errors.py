"""The CLI's answer to instant mistakes: one line, exit 2, and at once (before torch or Ray load); shipped
configs from any working directory, and a missing data file that says where GRADSIGN_DATA points."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gradsign.pipeline.cli import main
from gradsign.pipeline.common import layered
from gradsign.pipeline.common.layered import ConfigError
from gradsign.pipeline.driver import config as run_config
from gradsign.pipeline.search_runner import config as search_config

REPO = Path(__file__).resolve().parents[1]
SMOKE = str(REPO / "configs" / "nb201-cifar10-smoke.yaml")
SEARCH_SMOKE = str(REPO / "configs" / "search-nb201-smoke.yaml")

_PROBE = """
import json, sys
from gradsign.pipeline.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    rc = main(argv)
    out.append([rc, "torch" in sys.modules, "ray" in sys.modules])
print(json.dumps(out))
"""


def test_config_mistakes_are_refused_before_torch_or_ray_load(tmp_path):
    cases = [
        ["score", str(tmp_path / "no-such-config.yaml")],
        ["score", SMOKE, "--set", "sampel.size=3"],
        ["score", SMOKE, "--set", "space=nb999"],
        ["score", SMOKE, "--set", "dataset=mnist"],
        ["score", SMOKE, "--set", f"data.path={tmp_path / 'no-such.npz'}"],
        ["score", SMOKE, "--set", f"ground_truth.path={tmp_path / 'no-such.csv'}"],
        ["search", SEARCH_SMOKE, "--set", "rnus=3"],
        ["search", SEARCH_SMOKE, "--set", f"scores={tmp_path / 'no-such.csv'}"],
        ["report", str(tmp_path / "no-such-run")],
    ]
    done = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(cases)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [rc for rc, _, _ in results] == [2] * len(cases), done.stderr
    assert not any(torch or ray for _, torch, ray in results), results
    errors = done.stderr.splitlines()
    assert len(errors) == len(cases) and all(line.startswith("gradsign: error: ") for line in errors), errors
    for words, line in zip(["config file not found", "unknown config key 'sampel'", "unknown space 'nb999'",
                            "unknown dataset 'mnist'", "data file not found", "ground-truth table not found",
                            "unknown config key 'rnus'", "score table not found", "is not a run folder"], errors):
        assert words in line, line


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradsign: error: "), captured.err
    return lines[0]


@pytest.mark.parametrize("command", ["score", "search"])
@pytest.mark.parametrize("under", [False, True])
def test_an_output_that_is_a_file_is_one_line_and_exit_2(tmp_path, capsys, command, under):
    blocker = tmp_path / "taken"
    blocker.write_text("not a folder\n")
    output = blocker / "run" if under else blocker
    config = SMOKE if command == "score" else SEARCH_SMOKE
    assert main([command, config, "--set", f"output={output}"]) == 2
    line = _one_error_line(capsys)
    assert str(blocker) in line and "a file, not a folder" in line
    assert blocker.read_text() == "not a folder\n"


@pytest.mark.parametrize("option", ["-o", "--scores-out"])
def test_candidates_to_a_path_under_a_file_is_one_line_and_exit_2(tmp_path, capsys, option):
    table = tmp_path / "scores.csv"
    table.write_text("arch,g\n|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
                     "nor_conv_3x3~2|,1.0\n")
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    paths = {"-o": str(tmp_path / "list.jsonl"), "--scores-out": str(tmp_path / "joined.parquet")}
    paths[option] = str(blocker / "out.jsonl")
    argv = ["candidates", str(table), "--by", "g", "-o", paths["-o"], "--scores-out", paths["--scores-out"]]
    assert main(argv) == 2
    assert "which is a file" in _one_error_line(capsys)


def test_candidates_score_tables_default_to_nb201_as_compare_does(tmp_path, capsys):
    table = tmp_path / "scores.csv"
    table.write_text("arch,g\n|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
                     "nor_conv_3x3~2|,1.0\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,0.0\n")
    assert main(["candidates", str(table), "--by", "g", "-o", str(tmp_path / "list.jsonl")]) == 0, \
        capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "list.jsonl").read_text().splitlines()]
    assert rows[0]["arch"].startswith("|nor_conv_3x3~0|") and len(rows) == 2


SHIPPED = sorted(p.name for p in (REPO / "configs").glob("*.yaml") if p.name != "cluster.yaml")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_find_their_files_from_another_directory(name, data_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("GRADSIGN_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    if name.startswith("search-"):
        cfg = search_config.resolve(REPO / "configs" / name)
        if not cfg["scores"].startswith("runs/"):  # search-nb201-gradsign reads the overnight run's folder
            search_config.precheck(cfg)
        paths = [cfg["benchmark"]["search"]["path"], cfg["benchmark"]["final"]["path"]]
    else:
        cfg = run_config.resolve(REPO / "configs" / name)
        if not name.startswith("nds-"):  # the NDS configs read the user's own converted NDS file
            run_config.precheck(cfg)
        paths = [cfg["data"]["path"]]
    for path in paths:
        assert Path(path).is_absolute() and Path(path).resolve().parent == data_dir, path


def test_default_data_dir_is_shared_data_beside_the_checkout(data_dir):
    assert layered.default_data_dir().resolve() == (REPO.parent / "shared" / "data").resolve()


def test_a_missing_data_file_names_gradsign_data_and_the_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADSIGN_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"data file not found: .*nowhere.*GRADSIGN_DATA is set to"):
        run_config.precheck(run_config.resolve(SMOKE))
    monkeypatch.delenv("GRADSIGN_DATA")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=rf"relative to the current directory {tmp_path}.*GRADSIGN_DATA is unset"):
        run_config.precheck(run_config.resolve(SMOKE, ["data.path=batch.npz"]))


def test_any_command_writing_under_a_file_is_one_line_and_exit_2(tmp_path, capsys):
    import re

    page = (REPO / "docs" / "spaces.md").read_text()
    (tmp_path / "DARTS.json").write_text(re.search(r"## The NDS input format.*?```json\n(.*?)```", page, re.S).group(1))
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    assert main(["truth", "nds", str(tmp_path / "DARTS.json"), "-o", str(blocker / "DARTS.parquet")]) == 2
    assert f"cannot use {blocker} as given" in _one_error_line(capsys)
