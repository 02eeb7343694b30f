"""``peer_check --space darts``: the peer's network (params and flops exact on real rows), and the summary of
a run cut short (``--from-partial``)."""

import json

from tools.peer_check import main as peer_check_main
from tools.peer_check_darts import PEER_FILE, read_rows


def test_params_and_flops_rows_are_exact_and_partial_runs_summarise(data_dir, tmp_path, capsys):
    out = tmp_path / "peer.json"
    assert peer_check_main(["--space", "darts", "--cells", "3", "--proxies", "params,flops", "--threads", "1",
                            "--data-dir", str(data_dir), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["batch"] == 32 and result["bn"] == "peer" and result["rows"] == 3
    for name in ("params", "flops"):
        assert result["proxies"][name]["exact_rows"] == 3
        assert result["proxies"][name]["max_rel_diff"] < 1e-9
    printed = capsys.readouterr().out
    assert "surrogate" in printed  # val_accuracy is named for what it is
    partial = json.loads(out.with_suffix(".partial.json").read_text())
    assert partial["rows"] == [0, 1, 2] and len(partial["values"]["params"]) == 3
    rows = read_rows(data_dir / PEER_FILE)[:3]
    assert partial["values"]["params"] == [r["params"] for r in rows]
    assert peer_check_main(["--space", "darts", "--proxies", "params", "--data-dir", str(data_dir),
                            "--from-partial", str(out.with_suffix(".partial.json"))]) == 0
    assert "3 rows of nb301_naslib_725.jsonl" in capsys.readouterr().out
