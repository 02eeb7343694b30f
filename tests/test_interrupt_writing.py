"""``interrupt.writing`` and ``interrupt.ray_shutdown_guarded`` with real signals, each in a process of its
own (signal handlers are process-wide): a first SIGINT/SIGTERM inside ``writing()`` waits until the block's
files have all landed, a second one stops at once, a signal while ``ray.shutdown`` has put the default back
reaches the CLI's handler, and the library API (handlers not installed) keeps Python's defaults."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import REPO

PRELUDE = """
import os, signal, sys
from pathlib import Path
from gradsign.pipeline.common import interrupt
out = Path(sys.argv[1])
"""


def run_script(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    code = PRELUDE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=60)


def test_a_signal_inside_writing_lets_every_file_land_then_stops(tmp_path):
    done = run_script("""
        interrupt.install()
        try:
            with interrupt.writing():
                os.kill(os.getpid(), signal.SIGTERM)
                (out / "a").write_text("a")
                with interrupt.writing():  # nested: the stop waits for the outermost block
                    (out / "b").write_text("b")
                (out / "c").write_text("c")
        except interrupt.StoppedAfterWriting:
            print("stopped after writing", interrupt.exit_status())
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["stopped", "after", "writing", "143"]
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["a", "b", "c"]


def test_a_second_signal_inside_writing_stops_at_once(tmp_path):
    done = run_script("""
        interrupt.install()
        with interrupt.writing():
            os.kill(os.getpid(), signal.SIGINT)
            (out / "a").write_text("a")
            os.kill(os.getpid(), signal.SIGINT)
            (out / "b").write_text("b")
    """, tmp_path)
    assert done.returncode == 130
    assert "stopped at once (second signal)" in done.stderr and "Traceback" not in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_without_the_cli_handlers_writing_changes_nothing(tmp_path):
    done = run_script("""
        # Python's own SIGINT handler (a process started with SIGINT ignored, as under nohup or some CI
        # runners, has none: set it, as an interactive caller of the library has it)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with interrupt.writing():
                os.kill(os.getpid(), signal.SIGINT)  # Python's default: KeyboardInterrupt right here
                (out / "a").write_text("a")
        except KeyboardInterrupt as exc:
            print(type(exc).__name__)
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "KeyboardInterrupt" and not list(tmp_path.iterdir())


def test_a_signal_while_ray_shutdown_restores_the_default_reaches_the_cli_handler(tmp_path):
    # what ray.shutdown does (the C-level SIGTERM action back to the default), then SIGTERM in that window:
    # held, and delivered to the CLI's handler once it is back; without the guard the process dies by it
    done = run_script("""
        interrupt.install()
        try:
            with interrupt.ray_shutdown_guarded():
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)
                (out / "after-shutdown").write_text("x")
        except KeyboardInterrupt:
            print("stopped", interrupt.signal_name(), interrupt.exit_status())
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["stopped", "SIGTERM", "143"]
    assert (tmp_path / "after-shutdown").exists()
