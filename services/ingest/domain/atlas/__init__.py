"""The 一张图's registries as data: what each registry holds, how a row of a form, a CSV or an
Excel sheet becomes a record (or the reasons it cannot), and the checks the records need (the
unified social credit code's check character, phone numbers, division codes, GCJ-02 positions).

``registries`` describes them; ``records`` turns forms and sheet rows into records; ``checks``
holds the credit code, phone, division-code and GCJ-02 checks; ``area`` the warning's area, the
shelter balance and GeoJSON; ``kpi`` the online-monitoring rate.

Pure: no I/O. The adapter (``services.ingest.adapters.atlas``) stores what this returns; the
sheet reader (``shared.sheets``) hands rows of cells to ``parse_rows``.

Positions are stored in WGS 84 (EPSG:4326). CGCS2000, the national frame, differs from WGS 84 by
centimetres, less than any register's survey, and is taken as is. A source that flags its
positions as GCJ-02 (the frame of Chinese web maps) has them converted to WGS 84 here.
"""
