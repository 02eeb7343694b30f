"""``ground_truth.row_values``: every row of a table, unaveraged, on the real NB101 peer table (500 rows,
292 graphs), agrees with the per-key means that ``ground_truth.load`` joins."""

import math

import pytest

from gradsign import spaces
from gradsign.spaces import ground_truth

NB101_ROWS = "nb101_naslib_500.jsonl"


def test_rows_keep_every_row_and_average_to_the_joined_means(data_dir):
    space = spaces.get("nb101")
    rows = ground_truth.row_values(data_dir / NB101_ROWS, "val_accuracy", space)
    joined = ground_truth.load(data_dir / NB101_ROWS, "val_accuracy", space)
    assert len(rows) == joined.rows == 500
    by_key: dict[str, list[float]] = {}
    for key, value in rows:
        by_key.setdefault(key, []).append(value)
    assert len(by_key) == len(joined.values) == 292
    assert sum(1 for v in by_key.values() if len(v) > 1) == joined.averaged_keys > 0
    for key, values in by_key.items():
        assert joined.counts[key] == len(values)
        assert math.isclose(joined.values[key], sum(values) / len(values), rel_tol=1e-12)


def test_a_missing_column_is_one_clear_error(data_dir):
    with pytest.raises(ground_truth.GroundTruthError, match="no column 'test_accuracy'"):
        ground_truth.row_values(data_dir / NB101_ROWS, "test_accuracy", spaces.get("nb101"))


def test_a_column_that_is_not_numeric_is_one_clear_error(data_dir):
    with pytest.raises(ground_truth.GroundTruthError, match="'ops' of .* is not numeric"):
        ground_truth.row_values(data_dir / NB101_ROWS, "ops", spaces.get("nb101"))
