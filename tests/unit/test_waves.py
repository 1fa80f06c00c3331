"""The consumer's waves: at most one item per group in a wave, each group's items in order."""

from __future__ import annotations

from services.alerting.pipeline.items import waves


def test_waves_hold_one_item_per_group_and_keep_each_groups_order() -> None:
    items = [("a", 1), ("b", 1), ("a", 2), ("a", 3), ("c", 1), ("b", 2)]
    out = waves(items, lambda x: x[0])
    assert out == [[("a", 1), ("b", 1), ("c", 1)], [("a", 2), ("b", 2)], [("a", 3)]]
    for wave in out:
        assert len({k for k, _ in wave}) == len(wave)


def test_distinct_groups_make_one_wave() -> None:
    assert waves(list(range(500)), lambda x: x) == [list(range(500))]
    assert waves([], lambda x: x) == []
