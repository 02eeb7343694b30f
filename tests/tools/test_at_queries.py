"""``tools.at_queries``: the pick after K queries is the best validation among a run's first K queries."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from tools.at_queries import main, picks_at


def test_pick_after_k_queries_is_the_first_best_validation_of_those_queries(tmp_path, capsys):
    (tmp_path / "final.csv").write_text("arch,c10,c100\na,90.0,70.0\nb,93.0,71.0\nc,94.0,69.0\n")
    (tmp_path / "config.yaml").write_text(
        f"benchmark:\n  final:\n    path: {tmp_path / 'final.csv'}\n    columns: {{cifar10: c10, cifar100: c100}}\n")
    rows = [  # variant, run, step, arch, validation
        ("G-REA", 0, 0, "a", 80.0), ("G-REA", 0, 1, "b", 82.0), ("G-REA", 0, 2, "c", 85.0),
        ("G-REA", 1, 0, "b", 82.0), ("G-REA", 1, 1, "a", 82.0), ("G-REA", 1, 2, "a", 82.0),
        ("BOHB", 0, 0, "c", 85.0),
    ]
    pq.write_table(pa.table({k: [r[j] for r in rows] for j, k in
                             enumerate(["variant", "run", "step", "arch", "validation"])}),
                   tmp_path / "trajectories.parquet")
    two = picks_at(tmp_path, 2)
    assert set(two) == {"G-REA"}  # BOHB's pick is not the best signal seen: left out
    assert two["G-REA"].tolist() == [[93.0, 71.0], [93.0, 71.0]]  # a tie keeps the first queried
    assert picks_at(tmp_path, 3)["G-REA"].tolist() == [[94.0, 69.0], [93.0, 71.0]]
    assert main([str(tmp_path), "--queries", "3"]) == 0
    assert ("G-REA after 3 queries (2 runs; cifar10 / cifar100): 93.50 +- 0.50 / 70.00 +- 1.00"
            in capsys.readouterr().out)
