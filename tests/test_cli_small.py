"""Issue 16.8, the smaller annoyances, each as the user meets it."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile

import polars as pl

from flows import reports


def yibao(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, timeout=300)


def test_no_option_leaks_an_internal_name_and_every_option_has_help():
    for args in (["whatif", "list", "--help"], ["whatif", "report", "--help"], ["whatif", "drop", "--help"],
                 ["whatif", "paths", "--help"], ["sample", "--help"], ["demo", "--help"], ["serve", "--help"],
                 ["run", "--help"], ["sql", "--help"], ["server", "--help"]):
        p = yibao(args)
        assert p.returncode == 0, p.stderr
        assert not re.search(r"SUB_DB|PATHS_YEAR|\bFMT\b", p.stdout), (args, p.stdout)
        options = re.findall(r"^  (--[a-z-]+)(?: [A-Z.=_-]+)?\n?\s*(\S*)", p.stdout, flags=re.M)
        assert all(text for _, text in options), (args, options)  # every option is followed by its help text


def test_a_report_of_a_year_not_loaded_says_so(tmp_path):
    from flows import store
    db = tmp_path / "empty.duckdb"
    store.connect(db).close()  # every table, no month loaded
    p = yibao(["report", "fund-expenditure", "--year", "2024", "--format", "csv", "--out", str(tmp_path / "f.csv"),
               "--db", str(db)])
    assert p.returncode == 1
    assert p.stderr.splitlines() == ["yibao: no month of 2024 is loaded (run `yibao run --year 2024` first)"]
    assert not (tmp_path / "f.csv").exists()


def test_xlsx_years_have_no_thousands_separator_and_strings_no_apostrophe(tmp_path):
    t = reports.Table("t", "=title", pl.DataFrame({"year": [2025], "lines": [12345], "name": ["=SUM(A1)"]}))
    out = tmp_path / "t.xlsx"
    reports.write_xlsx([t], out)
    with zipfile.ZipFile(out) as z:
        strings = z.read("xl/sharedStrings.xml").decode()
        styles = z.read("xl/styles.xml").decode()
        sheet = z.read("xl/worksheets/sheet1.xml").decode()
    assert "<t>=SUM(A1)</t>" in strings and "'=SUM" not in strings  # a string cell: never a formula in xlsx
    assert "<f>" not in sheet
    fmts = dict(re.findall(r'<numFmt numFmtId="(\d+)" formatCode="([^"]+)"', styles))
    xfs = re.findall(r"<xf [^>]*numFmtId=\"(\d+)\"", styles.split("<cellXfs")[1])
    cells = dict(re.findall(r'<c r="([A-Z]+4)" s="(\d+)"', sheet))  # row 4: the first data row
    year_fmt = xfs[int(cells["A4"])]
    lines_fmt = xfs[int(cells["B4"])]
    assert fmts.get(year_fmt, {"1": "0"}.get(year_fmt)) == "0"  # 2025, not 2,025
    assert fmts.get(lines_fmt, {"3": "#,##0"}.get(lines_fmt)) == "#,##0"  # 12,345


def test_csv_keeps_the_formula_guard(tmp_path):
    t = reports.Table("t", "t", pl.DataFrame({"name": ["=SUM(A1)"]}))
    out = tmp_path / "t.csv"
    reports.write_csv(t, out)
    assert "'=SUM(A1)" in out.read_text(encoding="utf-8-sig")


def test_chart_month_labels_fit_and_chinese_has_font_fallbacks():
    months = [f"2025-{m:02d}" for m in range(1, 13)]
    svg = reports.svg_stacked_bars("t", months, [("hifp_pay", [100] * 12)])
    labels = re.findall(r'text-anchor="middle">([^<]+)</text>', svg)
    assert labels == [f"{m}月" for m in range(1, 13)]  # 12 labels of 2–3 characters in 500 px: no overlap
    page = reports.html_page("t", [], [])
    for font in ("PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC"):  # macOS, Windows, Linux
        assert font in reports.CJK_FONTS
    assert "PingFang SC" in page


def test_identity_group_resident_is_labelled():
    assert reports.IDENTITY_GROUP_LABEL["resident"].startswith("居民")


def test_sample_says_how_far_it_is_and_prints_no_raw_dict(tmp_path):
    """Issue 16.4/16.8: `yibao sample` reports each chunk as it goes (plain lines when output is a file) and ends
    with a readable summary: year and seed as written, counts with separators."""
    p = yibao(["sample", "--out", str(tmp_path / "s"), "--persons", "300", "--months", "2", "--no-reported"])
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0].startswith("… sample chunk 1 of 1 generating: persons 1–300")
    assert re.match(r"… sample chunk 1 of 1 written: [\d,]+ lines in \d+ s", lines[1])
    assert "persons 300, year 2025, months 2, seed 20250101" in lines[-1] and "{" not in lines[-1].split("files")[0]
    assert p.stderr == ""
