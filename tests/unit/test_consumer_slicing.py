"""The consumer's slices: small first, doubling to the configured size, every item once and in
order."""

from __future__ import annotations

from services.alerting.workers.consumer import slices


def test_slices_start_small_double_and_keep_every_item_in_order():
    items = list(range(1000))
    parts = slices(items, 200)
    assert [len(p) for p in parts] == [8, 16, 32, 64, 128, 200, 200, 200, 152]
    assert [x for p in parts for x in p] == items
    assert slices([], 200) == []
    assert [len(p) for p in slices(list(range(5)), 200)] == [5]
    # a size below the first slice is the size from the start
    assert [len(p) for p in slices(list(range(7)), 3)] == [3, 3, 1]
