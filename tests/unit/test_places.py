"""Naming a division code in words, from the rows of its chain (pure)."""

from __future__ import annotations

from shared.places import chain, compose

ROWS = {
    "510000000000": ("四川省", 1),
    "511100000000": ("乐山市", 2),
    "511112000000": ("五通桥区", 3),
    "511112101000": ("竹根镇", 4),
    "511112101201": ("民主村村民委员会", 5),
    "110000000000": ("北京市", 1),
    "110100000000": ("市辖区", 2),
    "110101000000": ("东城区", 3),
}


def test_the_chain_of_a_code_is_each_level_once():
    assert chain("511112101201") == [
        "510000000000",
        "511100000000",
        "511112000000",
        "511112101000",
        "511112101201",
    ]
    assert chain("511112000000") == ["510000000000", "511100000000", "511112000000"]


def test_each_level_is_named_as_texts_name_it():
    assert compose("511112101000", ROWS).name == "五通桥区竹根镇"
    assert compose("511112101201", ROWS).name == "五通桥区竹根镇民主村村民委员会"
    assert compose("511112000000", ROWS).name == "乐山市五通桥区"
    assert compose("511100000000", ROWS).name == "四川省乐山市"
    assert compose("510000000000", ROWS).name == "四川省"
    # a city level that is no place of its own is left out
    assert compose("110101000000", ROWS).name == "东城区"
    assert compose("511112101000", ROWS).level == "township"


def test_an_unknown_code_is_kept_and_flagged():
    place = compose("511112999000", ROWS)
    assert (place.name, place.known, place.level) == ("511112999000", False, None)
    assert place.area_desc == "行政区划代码 511112999000"
    assert compose("511112101000", ROWS).area_desc == "五通桥区竹根镇"
