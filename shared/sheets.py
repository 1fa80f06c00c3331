"""Sheets in and out: CSV (UTF-8, or GB 18030 as Excel saves it on a Chinese desktop) and Excel
workbooks (.xlsx, with openpyxl). Rows of cell values only; what they mean is the domain's."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Sequence
from typing import Literal

from openpyxl import Workbook, load_workbook
from openpyxl.utils.exceptions import InvalidFileException

from shared.errors import ValidationFailed

Format = Literal["csv", "xlsx"]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MEDIA = {"csv": "text/csv; charset=utf-8", "xlsx": XLSX}
MAX_ROWS = 200_000


def format_of(content_type: str, filename: str = "") -> Format:
    """Which sheet a request body is, from its media type or its file name."""
    media = content_type.split(";")[0].strip().lower()
    if media == XLSX or filename.lower().endswith(".xlsx"):
        return "xlsx"
    if media in ("text/csv", "application/csv", "text/plain") or filename.lower().endswith(".csv"):
        return "csv"
    raise ValidationFailed(
        f"send the file as text/csv or {XLSX} (got {media or 'no Content-Type'})",
        reason="unsupported_media_type",
    )


def read(data: bytes, fmt: Format) -> list[list[object]]:
    rows = _read_xlsx(data) if fmt == "xlsx" else _read_csv(data)
    if len(rows) > MAX_ROWS + 1:
        raise ValidationFailed(
            f"the file has {len(rows) - 1} rows; import at most {MAX_ROWS} at a time",
            reason="too_many_rows",
        )
    return rows


def _read_csv(data: bytes) -> list[list[object]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode("gb18030")
        except UnicodeDecodeError as exc:
            raise ValidationFailed(
                "the CSV file is neither UTF-8 nor GB 18030 text", reason="bad_encoding"
            ) from exc
    try:
        return [list(r) for r in csv.reader(io.StringIO(text, newline=""))]
    except csv.Error as exc:
        raise ValidationFailed(f"the CSV file cannot be read: {exc}", reason="bad_csv") from exc


def _read_xlsx(data: bytes) -> list[list[object]]:
    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise ValidationFailed(
            f"the file is not an Excel workbook (.xlsx): {exc}", reason="bad_xlsx"
        ) from exc
    try:
        sheet = book.worksheets[0]
        return [list(r) for r in sheet.iter_rows(values_only=True)]
    finally:
        book.close()


def write(
    headings: Sequence[str], rows: Sequence[Sequence[object]], fmt: Format, title: str
) -> bytes:
    if fmt == "xlsx":
        book = Workbook(write_only=True)
        sheet = book.create_sheet(title[:31])
        sheet.append(list(headings))
        for r in rows:
            sheet.append(["" if v is None else v for v in r])
        out = io.BytesIO()
        book.save(out)
        return out.getvalue()
    text = io.StringIO(newline="")
    w = csv.writer(text, lineterminator="\r\n")
    w.writerow(headings)
    for r in rows:
        w.writerow(["" if v is None else v for v in r])
    # with a BOM, so that Excel on a Chinese desktop opens it as UTF-8
    return text.getvalue().encode("utf-8-sig")
