"""Reading the input folder (DATA.md §1): files in, text frames out. I/O only.

`read_table` returns every column as text (pl.String, empty → null) plus `source_file`
(path relative to the input folder, posix) and `source_row` (1-based data row), whatever the
file format; typing and row checks happen in `transforms/validate.py`. A file that cannot be
read as a whole raises `InputFileError` with a one-line message naming the file.

CSV: UTF-8 (BOM or not) or GB18030/GBK, detected by strict decoding (utf-8-sig first, then
gb18030); comma-separated, header row, RFC 4180 quoting (quoted fields may hold commas, quotes
and line breaks). Blank lines are skipped and not counted as rows. A row with more or fewer
fields than the header makes the file unreadable (its values could not be placed safely).

Parquet: any writer. Decimals are rendered exactly (trailing zeros beyond the fen dropped:
12.3000 → "12.30", 1.2345 stays and is rejected later); floats by their shortest round-trip
text (12.3 → "12.3", 0.1 + 0.2 → "0.30000000000000004", rejected later); dates YYYY-MM-DD;
datetimes YYYY-MM-DD HH:MM:SS[.ffffff] (zone-aware ones converted to Asia/Shanghai local time);
booleans true/false.
"""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from schemas.inputs import OPTIONAL_REGISTERS, REGISTER_NAMES, required_input_columns
from transforms.validate import (
    EMPTY_REJECTS,
    WARNING_SCHEMA,
    RegisterReading,
    check_month,
    register_rejects,
    split_family_bindings,
    type_register,
    unknown_person_rows,
)

SETTLEMENT_PREFIXES = ("hospital_settlements", "pharmacy_settlements")
APPLICATION_PREFIX = "assistance_applications"
MATERNITY_PREFIX = "maternity_events"  # docs/MATERNITY_INPUT.md
SUFFIXES = (".csv", ".parquet")
RESERVED = ("source_file", "source_row")
LOCAL_TZ = "Asia/Shanghai"  # DATA.md §1: times are local, without zone
CSV_BLOCK = 32 << 20  # one CSV row may not be longer than this
FLOAT32_EXACT_LIMIT = 167_772.16  # 2**24 fen: below it a float32's shortest text is the fen value


class InputFileError(Exception):
    """A file (or folder) of the input cannot be used; str(e) is one line naming it and the problem."""

    def __init__(self, file: str, problem: str, transient: bool = False):
        self.file, self.problem = file, problem
        self.transient = transient  # the file system failed reading it (worth a retry), not its content
        super().__init__(f"{file}: {' '.join(str(problem).split())}")


def _relname(path: Path, input_root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(input_root).resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def file_kind(path: Path) -> str | None:
    """`settlements`, `applications`, `maternity_events`, a register name, or None (no column requirements)."""
    name, stem = path.name, path.stem
    if name.startswith(SETTLEMENT_PREFIXES):
        return "settlements"
    if name.startswith(APPLICATION_PREFIX):
        return "applications"
    if name.startswith(MATERNITY_PREFIX) and path.parent.name != "reference":
        return "maternity_events"
    if stem in REGISTER_NAMES and path.parent.name == "reference":
        return stem
    return None


def read_table(path: Path, input_root: Path, required: list[str] | None = None) -> pl.DataFrame:
    """One input file as text; see the module docstring.

    required: the columns the header must have; default from the file name (settlement,
    application and register files, `schemas.inputs.required_input_columns`).
    """
    path = Path(path)
    rel = _relname(path, input_root)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df = _read_csv(path, rel)
    elif suffix == ".parquet":
        df = _read_parquet(path, rel)
    else:
        raise InputFileError(rel, f"unsupported file type {suffix or '(none)'!r} (CSV or Parquet)")

    names = [n.strip() for n in df.columns]
    names = [n if n else f"_unnamed_{i + 1}" for i, n in enumerate(names)]
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise InputFileError(rel, f"duplicated header name {n!r}")
        seen.add(n)
        if n in RESERVED:
            raise InputFileError(rel, f"column name {n!r} is reserved for the pipeline")
    df = df.rename(dict(zip(df.columns, names, strict=True)))

    if required is None:
        kind = file_kind(path)
        required = required_input_columns(kind) if kind else []
    missing = [c for c in required if c not in seen]
    if missing:
        s = "s" if len(missing) > 1 else ""
        raise InputFileError(rel, f"missing required column{s} {', '.join(missing)}")

    return df.select(
        [pl.when(pl.col(c).str.len_bytes() > 0).then(pl.col(c)).alias(c) for c in df.columns]
        + [pl.lit(rel, pl.String).alias("source_file"),
           pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("source_row")]
    )


# ------------------------------------------------------------------------------------ CSV
def _decode(data: bytes, rel: str) -> tuple[bytes, str]:
    """(UTF-8 bytes without BOM, first part of the text). Strict: utf-8-sig, else gb18030."""
    try:
        dec = codecs.getincrementaldecoder("utf-8")(errors="strict")
        step = 16 << 20
        head = ""
        for i in range(0, len(data), step):
            part = dec.decode(data[i:i + step], final=False)
            if i == 0:
                head = part
        dec.decode(b"", final=True)
        if data.startswith(codecs.BOM_UTF8):
            return data[len(codecs.BOM_UTF8):], head.lstrip("\ufeff")
        return data, head
    except UnicodeDecodeError:
        pass
    try:
        text = data.decode("gb18030", errors="strict")
    except UnicodeDecodeError as e:
        raise InputFileError(rel, f"undecodable: neither UTF-8 nor GB18030 (byte {e.start})") from None
    text = text.lstrip("\ufeff")
    return text.encode("utf-8"), text[: 1 << 20]


def _read_csv(path: Path, rel: str) -> pl.DataFrame:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputFileError(rel, f"cannot read: {e.strerror or e}",
                             transient=not isinstance(e, FileNotFoundError | PermissionError)) from None
    utf8, head = _decode(data, rel)
    del data
    if not head.strip():
        raise InputFileError(rel, "empty file (no header row)")
    try:
        header = next(csv.reader(io.StringIO(head)))
    except (csv.Error, StopIteration) as e:
        raise InputFileError(rel, f"cannot read the header row: {e}") from None
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise InputFileError(rel, f"duplicated header name {dup.strip()!r}")
    if not utf8.endswith((b"\n", b"\r")):
        utf8 += b"\n"  # a header-only file without a final line break
    bad_rows: list[str] = []

    def on_bad_row(row) -> str:
        bad_rows.append(f"a row has {row.actual_columns} fields, the header {row.expected_columns}: {row.text[:80]!r}")
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.py_buffer(utf8),
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK, use_threads=True),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_bad_row),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowException, ValueError, OSError) as e:
        raise InputFileError(rel, f"unreadable CSV: {e}") from None
    if bad_rows:
        more = f" (and {len(bad_rows) - 1} more)" if len(bad_rows) > 1 else ""
        raise InputFileError(rel, f"ragged CSV: {bad_rows[0]}{more}")
    if table.column_names != header:
        raise InputFileError(rel, "cannot read the header row consistently (quoting?)")
    return pl.from_arrow(table, rechunk=False)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------ Parquet
def _as_text(s: pl.Series, rel: str) -> pl.Series:
    dt = s.dtype
    name = s.name
    if dt == pl.String:
        return s
    if dt == pl.Null:
        return s.cast(pl.String)
    if dt == pl.Boolean:
        return s.cast(pl.String)  # true / false
    if isinstance(dt, pl.Decimal):
        # exact; drop zeros beyond the fen so that Decimal(18,4) 12.3000 reads as 12.30
        return s.cast(pl.String).str.replace(r"^(-?[0-9]+\.[0-9]{2}[0-9]*?)0+$", "${1}")
    if dt == pl.Float32:
        wide = s.cast(pl.Float64)
        return pl.select(
            pl.when(wide.abs() < FLOAT32_EXACT_LIMIT).then(s.cast(pl.String)).otherwise(wide.cast(pl.String))
        ).to_series().alias(name)
    if dt.is_numeric():
        return s.cast(pl.String)  # integers; Float64 as its shortest round-trip text
    if dt == pl.Date:
        return s.cast(pl.String)
    if isinstance(dt, pl.Datetime):
        if dt.time_zone is not None:
            s = s.dt.convert_time_zone(LOCAL_TZ).dt.replace_time_zone(None)
        return s.cast(pl.Datetime("us")).dt.to_string("%Y-%m-%d %H:%M:%S%.f")
    if isinstance(dt, pl.Categorical | pl.Enum) or dt == pl.Time:
        return s.cast(pl.String)
    if dt == pl.Binary:
        try:
            return s.cast(pl.String)
        except pl.exceptions.ComputeError:
            raise InputFileError(rel, f"column {name!r}: binary values that are not UTF-8 text") from None
    raise InputFileError(rel, f"column {name!r} has unsupported type {dt}")


def _read_parquet(path: Path, rel: str) -> pl.DataFrame:
    try:
        pf = pq.ParquetFile(path)
        names = [n.strip() for n in pf.schema_arrow.names]
        for n in names:
            if names.count(n) > 1:
                raise InputFileError(rel, f"duplicated header name {n!r}")
        table = pf.read()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise InputFileError(rel, f"unreadable Parquet: {e}") from None
    try:
        df = pl.from_arrow(table, rechunk=False)
    except Exception as e:  # polars cannot represent some arrow type
        raise InputFileError(rel, f"unsupported Parquet content: {e}") from None
    assert isinstance(df, pl.DataFrame)
    try:
        return pl.DataFrame([_as_text(df.get_column(c), rel) for c in df.columns])
    except InputFileError:
        raise
    except Exception as e:
        raise InputFileError(rel, f"cannot render a column as text: {e}") from None


# ------------------------------------------------------------------------------------ folders
def month_files(input_root: Path, month: str) -> dict[str, list[Path]]:
    """{"settlements": [...], "applications": [...], "maternity": [...]} of the month folder, sorted by name."""
    try:
        check_month(month)
    except ValueError as e:
        raise InputFileError(str(month), str(e)) from None
    folder = Path(input_root) / month
    if not folder.is_dir():
        raise InputFileError(_relname(folder, input_root), "month folder does not exist")
    files = sorted((p for p in folder.iterdir()
                    if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith(".")),
                   key=lambda p: p.name)
    return {
        "settlements": [p for p in files if p.name.startswith(SETTLEMENT_PREFIXES)],
        "applications": [p for p in files if p.name.startswith(APPLICATION_PREFIX)],
        "maternity": [p for p in files if p.name.startswith(MATERNITY_PREFIX)],
    }


def _register_file(input_root: Path, name: str) -> Path | None:
    ref = Path(input_root) / "reference"
    found = [ref / f"{name}{s}" for s in SUFFIXES if (ref / f"{name}{s}").is_file()]
    if len(found) > 1:
        raise InputFileError(f"reference/{name}", "both a CSV and a Parquet file: keep one")
    return found[0] if found else None


# What load_registers returns beside the typed registers for the run record (not for the engine).
REGISTER_RECORDS = ("register_rejects", "register_warnings", "register_rows")

_REGISTERS: dict[tuple, dict[str, pl.DataFrame]] = {}


def load_registers(input_root: Path) -> dict[str, pl.DataFrame]:
    """load_registers_uncached, kept for the files as they are: a year's run reads the same registers for
    twelve months (typing them is ~0.7 s per 200k persons). Any change to a file (size, mtime, inode) reads
    them again; errors are never cached."""
    ref = Path(input_root) / "reference"
    stats = tuple(sorted((p.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
                         for p in (ref.iterdir() if ref.is_dir() else []) for st in [p.stat()]))
    key = (str(Path(input_root).resolve()), stats)
    if key not in _REGISTERS:
        regs = load_registers_uncached(input_root)
        _REGISTERS.clear()  # one bureau kept
        _REGISTERS[key] = regs
    return dict(_REGISTERS[key])


def register_reading() -> RegisterReading:
    """How the registers' open cases are read (POLICY §1.14), from policies/ (registers.yaml, A-30)."""
    import datetime as dt

    from flows.policies import load_policies
    value = load_policies().value("xiangyang", "employee", "registers.retire_kind_when_empty", dt.date.today())
    return RegisterReading(retire_kind_when_empty=str(value))


def load_registers_uncached(input_root: Path) -> dict[str, pl.DataFrame]:
    """Typed registers of reference/ keyed by name, plus `family_bindings_rejected`, `register_rejects` and
    `register_warnings`.

    A register row that breaks the contract is rejected on its own (POLICY §1.14): it is left out of its
    register and listed in `register_rejects` (DATA.md §4 `rejects` columns: its register file and row, reason
    code, reason, the row as text); a row naming a person who is not in persons (or whose persons row was
    rejected) likewise, UNKNOWN_PERSON. Rows kept with a reading (a retire_kind ignored or defaulted, A-30) are
    listed in `register_warnings` (source_file, source_row, warning). Family bindings POLICY §4.5 rejects (other
    relation, 7th live user, …) are returned in `family_bindings_rejected` with a `reason`. A file that cannot
    be read at all, or a missing required register, still stops the run (InputFileError naming it). A missing
    optional register (account_balances) is an empty typed frame. Typed frames carry no source columns.
    """
    input_root = Path(input_root)
    reading = register_reading()
    typed: dict[str, pl.DataFrame] = {}
    raws: dict[str, pl.DataFrame] = {}
    files: dict[str, str] = {}
    rejects: list[pl.DataFrame] = []
    warnings: list[pl.DataFrame] = []
    for name in REGISTER_NAMES:
        path = _register_file(input_root, name)
        if path is None:
            if name in OPTIONAL_REGISTERS:
                raw = pl.DataFrame(schema={**{c: pl.String for c in required_input_columns(name)},
                                           "source_file": pl.String, "source_row": pl.Int64})
                typed[name] = type_register(name, raw, reading)[0]
                continue
            raise InputFileError(f"reference/{name}.csv", "missing register (CSV or Parquet)")
        files[name] = _relname(path, input_root)
        raws[name] = read_table(path, input_root)
        typed[name], rej, warn = type_register(name, raws[name], reading)
        rejects.append(rej)
        warnings.append(warn)
    for name, problems in unknown_person_rows(typed).items():
        if problems.height:
            typed[name] = typed[name].join(problems, on=["source_file", "source_row"], how="anti",
                                           maintain_order="left")
            rejects.append(register_rejects(raws[name], problems, "UNKNOWN_PERSON"))
    kept, rejected = split_family_bindings(typed["family_bindings"], typed["persons"])
    typed["family_bindings"] = kept
    out = {name: frame.drop("source_file", "source_row") for name, frame in typed.items()}
    out["family_bindings_rejected"] = rejected
    all_rejects = pl.concat(rejects, how="diagonal_relaxed") if rejects else pl.DataFrame(schema=EMPTY_REJECTS)
    out["register_rejects"] = all_rejects.select(list(EMPTY_REJECTS)).sort("source_file", "source_row")
    all_warnings = pl.concat(warnings) if warnings else pl.DataFrame(schema=WARNING_SCHEMA)
    kept_rows = pl.concat([f.select("source_file", "source_row") for f in typed.values()])
    out["register_warnings"] = all_warnings.join(kept_rows, on=["source_file", "source_row"], how="semi")
    out["register_rows"] = pl.DataFrame({"source_file": list(files.values()), "rows": [f.height for f in raws.values()]},
                                        schema={"source_file": pl.String, "rows": pl.Int64})
    return out
