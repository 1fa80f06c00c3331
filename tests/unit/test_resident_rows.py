"""Residents' rows from a sheet (services/alerting/api/publications.py): CSV and Excel cells
alike, every refused row with its number and reason."""

from __future__ import annotations

import io

from openpyxl import Workbook

from services.alerting.api.publications import resident_rows
from shared import sheets
from shared.identity import Identity

DUTY = Identity(subject="operator:duty", kind="operator", region_prefix="110101")


def test_good_rows_are_kept_and_each_bad_one_says_why():
    sheet = [
        ["region_code", "phone", "drill"],
        ["110101001001", "13800000001"],
        ["110101001001", "13800000002", "是"],
        ["11010100100", "13800000003"],
        ["110101001001", "call me"],
        ["120101001001", "13800000004"],
        [],
        ["", ""],
    ]
    rows, refused, received = resident_rows(sheet, DUTY)
    assert rows == [
        (1, "110101001001", "13800000001", False),
        (2, "110101001001", "13800000002", True),
    ]
    assert refused == [
        "line 4: region code is not 12 digits",
        "line 5: phone is not a number",
        "line 6: region outside your scope",
    ]
    assert received == 5


def test_a_workbook_reads_like_its_csv_even_with_numbers_typed_as_numbers():
    book = Workbook()
    ws = book.active
    assert ws is not None
    ws.append(["区划代码", "手机号"])
    ws.append([110101001001, 13800000001])
    ws.append(["110101001002", 13800000002.0])
    data = io.BytesIO()
    book.save(data)
    workbook_rows, _, _ = resident_rows(sheets.read(data.getvalue(), "xlsx"), DUTY)
    csv = "区划代码,手机号\n110101001001,13800000001\n110101001002,13800000002\n"
    csv_rows, _, _ = resident_rows(sheets.read(csv.encode("gb18030"), "csv"), DUTY)
    assert (
        workbook_rows
        == csv_rows
        == [
            (1, "110101001001", "13800000001", False),
            (2, "110101001002", "13800000002", False),
        ]
    )
