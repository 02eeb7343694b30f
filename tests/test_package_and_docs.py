"""The package and its docs: one import namespace, a public API that works as documented, and docs whose
commands are real.

Every shell command in the README and ``docs/`` (fenced ``bash``/``sh`` blocks) is checked here without
running it in full (many are overnight or cluster jobs): ``gradsign ...`` lines are parsed by the real CLI
parser, and their config files resolve with the same ``--set`` overrides through the real config loaders;
``python -m MODULE`` names a module that exists; every repository file a command names exists;
``python -c`` code runs. The README's Python example runs as written.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# commands of other tools that the docs show as they are (their own manuals cover them)
EXTERNAL = {"pip", "python3", "ray", "export", "cp", ".", "source", "cd", "mkdir", "ls", "cat", "git", "D"}


def shell_commands(page: Path) -> list[str]:
    """Each command line of the page's fenced bash/sh blocks (continuations joined, comments cut)."""
    lines = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", page.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


ALL_COMMANDS = [(page.relative_to(REPO).as_posix(), line) for page in PAGES for line in shell_commands(page)]


def test_readme_is_a_front_page_and_every_docs_page_is_linked():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme, f"{page.name} is not linked from the README"
    assert len(ALL_COMMANDS) > 40  # the extraction found the docs' commands


def _repo_files_named(words: list[str]) -> list[str]:
    prefixes = ("configs/", "scripts/", "results/", "docs/", "tests/")
    return [w for w in words if w.startswith(prefixes) and "*" not in w]


def _check_gradsign(words: list[str], elided: bool = False) -> None:
    from gradsign.pipeline import cli
    from gradsign.pipeline.driver.config import resolve
    from gradsign.pipeline.search_runner.config import resolve as resolve_search

    if elided:  # "gradsign score ...": the subcommand must exist
        assert words[0] in ("score", "report", "compare", "truth", "search"), words
        return
    args = cli._parser().parse_args(words)  # SystemExit (a failed test) when the docs show a bad command
    if args.command in ("score", "search"):
        loader = resolve if args.command == "score" else resolve_search
        loader(REPO / args.config, args.overrides)


@pytest.mark.parametrize("page", sorted({p for p, _ in ALL_COMMANDS}))
def test_every_docs_command_on_the_page_is_real(page, monkeypatch):
    """Every shell command the page shows: its files exist, its gradsign command parses (and its config
    resolves), its module imports; other tools' commands are on the allow-list. Failures name the line."""
    monkeypatch.chdir(REPO)
    failures = []
    for line in (line for p, line in ALL_COMMANDS if p == page):
        try:
            _check_command(page, line)
        except (AssertionError, SystemExit, Exception) as exc:  # noqa: BLE001 - collect every bad line of the page
            failures.append(f"{line!r}: {type(exc).__name__}: {exc}")
    assert failures == [], "\n".join(failures)


def _check_command(page: str, line: str) -> None:
    elided = "..." in line  # an elided repeat of a command shown above it; what is shown must still be real
    if elided:
        line = line.split("...")[0]
    words = shlex.split(line)
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value prefixes
        words = words[1:]
    if not words:
        return
    for name in _repo_files_named(words):
        assert (REPO / name).exists(), f"{page}: {line!r} names {name}, which does not exist"
    head = words[0]
    if head == "gradsign":
        _check_gradsign(words[1:], elided)
    elif head == "python" and words[1:2] == ["-m"]:
        module = words[2]
        if module == "gradsign":
            _check_gradsign(words[3:], elided)
        elif module not in ("pytest", "venv"):
            assert importlib.util.find_spec(module) is not None, f"{page}: no module {module}"
    elif head == "python" and words[1:2] == ["-c"]:
        out = subprocess.run([sys.executable, "-c", words[2]], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"{page}: {line!r} failed: {out.stderr[-1000:]}"
    elif head == "bash" or (head == "python" and words[1:2] and words[1].endswith(".py")):
        assert (REPO / words[1]).is_file()
    else:
        assert head in EXTERNAL, f"{page}: unknown command {head!r} in {line!r}"


@pytest.mark.ray
def test_readme_python_example_runs_after_the_smoke_run(tmp_path, data_dir, ray_cluster, monkeypatch, capsys):
    """The README's API example, as written, after the README's smoke run (the same config, made smaller
    with --set, run from another directory: its output lands in runs/nb201-cifar10-smoke there)."""
    from gradsign.pipeline import cli

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert blocks, "the README shows no Python example"
    monkeypatch.chdir(tmp_path)
    sets = ["sample.size=4", "shard_size=2", "data.batch_size=8", "progress=false", "ray.object_store_mb=128"]
    argv = ["score", str(REPO / "configs" / "nb201-cifar10-smoke.yaml"), *sum((["--set", s] for s in sets), [])]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "runs" / "nb201-cifar10-smoke" / "summary.json").is_file()
    out = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert float(lines[0]) > 0  # a real cell's GradSign score (an all-`none` cell scores exactly 0)
    assert lines[1] == "nb201 4"  # the smoke run's committed rows
    assert -1 <= float(lines[2]) <= 1  # Spearman against the smoke config's ground truth
    assert lines[3].startswith("|") and float(lines[3].split()[1]) > 0  # the top arch and its score


def test_public_api_matches_the_proxy_registry(cifar10_batch):
    import torch

    import gradsign
    from gradsign.actors import proxies

    space = gradsign.load_space("nb201")
    assert len(space) == 15625 and "gradsign" in gradsign.proxy_names()
    arch = space.arch(15624 - 3)
    inputs, targets = cifar10_batch
    torch.manual_seed(7)
    ours = gradsign.score(space.build(arch, 10), inputs, targets)
    torch.manual_seed(7)
    direct = proxies.get("gradsign")(space.build(arch, 10), inputs, targets)
    assert ours == direct and ours > 0


def test_read_run_reads_committed_scores(data_dir):
    import gradsign

    run = gradsign.read_run(data_dir.parent / "runs" / "nb201-cifar10-gradsign")
    assert run.config["space"] == "nb201" and run.proxies == ["gradsign"]
    assert run.scores.num_rows == 8950
    ranked = run.ranked()
    values = ranked.column("gradsign").to_pylist()
    assert values == sorted(values, reverse=True)
    with pytest.raises(FileNotFoundError):
        gradsign.read_run(data_dir)


def test_read_run_refuses_a_score_file_of_other_archs(tmp_path, data_dir):
    """A restore gone wrong (one score file copied over another) is refused, naming the file."""
    import shutil

    import gradsign
    from gradsign.pipeline.common.run_folder import ScoreFileError

    run = tmp_path / "run"
    shutil.copytree(data_dir.parent / "runs" / "nb201-cifar10-gradsign", run)
    shutil.copyfile(run / "scores" / "part-00002.parquet", run / "scores" / "part-00001.parquet")
    with pytest.raises(ScoreFileError, match="part-00001.parquet failed verification"):
        gradsign.read_run(run)


def _python_outside_checkout(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                          timeout=120)


def test_installed_names_are_one_namespace(tmp_path):
    """Installed, only ``gradsign`` is importable: no generic top-level ``pipeline``/``spaces``/..."""
    for generic in ("pipeline", "actors", "spaces", "search"):
        out = _python_outside_checkout(f"import {generic}", tmp_path)
        assert out.returncode != 0 and "ModuleNotFoundError" in out.stderr, generic
    out = _python_outside_checkout("import gradsign.spaces, gradsign.actors.proxies, gradsign.search, "
                                   "gradsign.pipeline.cli; print(gradsign.spaces.get('nb201').name)", tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "nb201", out.stderr


def test_search_stage_and_cli_import_without_torch_or_ray(tmp_path):
    """``gradsign search`` is numpy-only: its modules (and the CLI, the ``gradsign`` package) load no torch."""
    code = ("import sys, gradsign, gradsign.pipeline.cli, gradsign.pipeline.search_runner.runner, "
            "gradsign.pipeline.driver.config; "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    out = _python_outside_checkout(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_wheel_holds_only_the_gradsign_namespace(tmp_path):
    """A built wheel's top level is ``gradsign/`` (and its metadata): the folders map under it."""
    import zipfile

    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("gradsign-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"gradsign"}
    for module in ("gradsign/pipeline/driver/run.py", "gradsign/actors/proxies/gradsign.py",
                   "gradsign/spaces/nb201.py", "gradsign/search/bohb.py", "gradsign/pipeline/cli.py"):
        assert module in names
    # typed, and no research scripts, tests or fixture generators
    assert "gradsign/py.typed" in names
    assert not [n for n in names if "/devtools/" in n or "/tools/" in n or "/tests/" in n or "nb201_synth" in n]


def test_rooms_import_only_what_they_may():
    """``spaces/`` and ``search/`` import nothing of ``actors``, ``pipeline`` or Ray; ``actors/`` no Ray and no
    ``pipeline`` (docs/architecture.md)."""
    import ast

    rules = {"spaces": ("gradsign.actors", "gradsign.pipeline", "ray"),
             "search": ("gradsign.actors", "gradsign.pipeline", "ray"),
             "actors": ("gradsign.pipeline", "ray")}
    found = []
    for room, banned in rules.items():
        for path in sorted((REPO / room).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
                found += [f"{path.relative_to(REPO)}: {n}" for n in names
                          if any(n == b or n.startswith(b + ".") for b in banned)]
    assert found == []


def test_subpackages_are_plain_folders_under_gradsign():
    """gradsign/{pipeline,actors,spaces,search} are relative links to the top-level folders, and the package
    does not edit its own ``__path__`` (static tools follow a plain directory walk)."""
    for room in ("pipeline", "actors", "spaces", "search"):
        link = REPO / "gradsign" / room
        assert link.is_symlink() and os.readlink(link) == f"../{room}", room
        assert (link / "__init__.py").resolve() == (REPO / room / "__init__.py").resolve()
    assert "__path__" not in (REPO / "gradsign" / "__init__.py").read_text()


def test_every_comparison_with_robot_states_queries_and_uncharged_tables():
    """Where a page sets the warm G-REA figure beside RoBoT's, the same paragraph says what each spent: the
    queries (about 66 against about 20) and the whole-space score tables that are not charged."""
    pages = [*PAGES, REPO / "results" / "search" / "README.md"]
    found = 0
    for page in pages:
        for paragraph in re.split(r"\n\s*\n|\n- ", page.read_text()):
            if "RoBoT" in paragraph and "73.42" in paragraph and not paragraph.lstrip().startswith("|"):
                found += 1
                text = " ".join(paragraph.split())
                assert "queries" in text and "20" in text, f"{page.name}: {text[:200]}"
                assert "not charged" in text, f"{page.name}: {text[:200]}"
    assert found >= 2
