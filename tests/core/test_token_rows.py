"""Token rows stored flat (jobs/_tokens.TokenRows) read back as the lists they were made of."""

from __future__ import annotations

import pytest

from latentscape.jobs._tokens import TokenRows

ROWS = [[101, 7, 8, 102], [101, 102], [], [101, 9, 102]]


def test_rows_read_back_as_lists_and_slice_and_join_as_lists_do():
    rows = TokenRows.from_lists(ROWS)
    assert list(rows) == ROWS and len(rows) == 4 and list(rows.lengths) == [4, 2, 0, 3]
    assert rows[-1] == ROWS[-1]
    assert list(rows[1:3]) == ROWS[1:3] and list(rows[3:1]) == []
    joined = TokenRows.concatenate([rows, rows[1:], TokenRows.concatenate([])])
    assert list(joined) == ROWS + ROWS[1:]
    with pytest.raises(IndexError):
        rows[4]
