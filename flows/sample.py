"""`yibao sample`: write a synthetic bureau input folder (DATA.md §1) for a seed.

Generation is pure (`transforms/synthetic.py`); this module only decides formats and encodings and writes
files, chunk by chunk: each chunk of persons appends to the registers and writes its own part file per
month (`hospital_settlements_part0001.parquet`, …; a run of a single chunk writes `hospital_settlements.csv`).
Same arguments → byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from flows import progress
from transforms import planted
from transforms import synthetic as syn

REGISTERS = ["persons", "identities", "employment", "certifications", "institutions", "family_bindings",
             "account_balances"]
SETTLEMENT_FILES = ["hospital_settlements", "pharmacy_settlements"]
FORMATS = ("csv", "parquet", "mixed")

# (extension, encoding); encoding None = Parquet
_MIXED_REGISTERS: dict[str, tuple[str, str | None]] = {
    "persons": ("csv", "utf-8-sig"),
    "identities": ("parquet", None),
    "employment": ("csv", "utf-8"),
    "certifications": ("csv", "utf-8"),
    "institutions": ("csv", "gb18030"),
    "family_bindings": ("parquet", None),
    "account_balances": ("csv", "utf-8"),
}
_MIXED_HOSPITAL = [("csv", "utf-8"), ("csv", "gb18030"), ("parquet", None), ("csv", "utf-8-sig")]
_MIXED_PHARMACY = [("csv", "utf-8"), ("parquet", None), ("csv", "gb18030")]


def file_format(fmt: str, name: str, month: int | None = None) -> tuple[str, str | None]:
    """(extension, encoding) of a register (`month` None) or a monthly file."""
    if fmt == "csv":
        return "csv", "utf-8"
    if fmt == "parquet":
        return "parquet", None
    if month is None:
        return _MIXED_REGISTERS[name]
    if name == "hospital_settlements":
        return _MIXED_HOSPITAL[(month - 1) % len(_MIXED_HOSPITAL)]
    if name == "pharmacy_settlements":
        return _MIXED_PHARMACY[(month - 1) % len(_MIXED_PHARMACY)]
    return "csv", "utf-8"


def _csv_bytes(text: pl.DataFrame, encoding: str, header: bool) -> bytes:
    s = text.write_csv(include_header=header, line_terminator="\n")
    if encoding == "utf-8-sig":
        return (("\ufeff" if header else "") + s).encode("utf-8")
    return s.encode(encoding)


class _FileWriter:
    """One output file, appended to chunk by chunk (CSV text or Parquet row groups)."""

    def __init__(self, path: Path, encoding: str | None, kinds: dict[str, str]):
        self.path = path
        self.encoding = encoding
        self.kinds = kinds
        self.rows = 0
        self._started = False
        self._pq: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        path.parent.mkdir(parents=True, exist_ok=True)

    def write_text(self, text: pl.DataFrame) -> None:
        if self.encoding is None:
            table = syn.text_to_typed(text, self.kinds).to_arrow()
            if self._pq is None:
                self._schema = table.schema
                self._pq = pq.ParquetWriter(self.path, self._schema, compression="zstd")
            elif table.schema != self._schema:
                table = table.cast(self._schema)
            self._pq.write_table(table)
        else:
            with open(self.path, "ab" if self._started else "wb") as fh:
                fh.write(_csv_bytes(text, self.encoding, header=not self._started))
        self._started = True
        self.rows += text.height

    def close(self) -> None:
        if self._pq is not None:
            self._pq.close()


def _write_whole(path: Path, encoding: str | None, text: pl.DataFrame, kinds: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if encoding is None:
        syn.text_to_typed(text, kinds).write_parquet(path, compression="zstd")
    else:
        path.write_bytes(_csv_bytes(text, encoding, header=True))


_GENERATED = re.compile(r"^(hospital_settlements|pharmacy_settlements|assistance_applications|maternity_events)"
                        r".*\.(csv|parquet)$")


def _clean(out: Path) -> None:
    """Remove files an earlier run of the generator wrote (nothing else)."""
    ref = out / "reference"
    for name in REGISTERS:
        for ext in ("csv", "parquet"):
            (ref / f"{name}.{ext}").unlink(missing_ok=True)
    if out.exists():
        for d in out.iterdir():
            if d.is_dir() and re.fullmatch(r"\d{4}-\d{2}", d.name):
                for f in d.iterdir():
                    if f.is_file() and _GENERATED.match(f.name):
                        f.unlink()
                if not any(d.iterdir()):
                    d.rmdir()
    (out / "INJECTED.json").unlink(missing_ok=True)
    (out / "REPORTED.json").unlink(missing_ok=True)
    (out / "SUPERVISION.json").unlink(missing_ok=True)


def write_sample(out: Path, persons: int = 2000, year: int = 2025, months: int = 12, seed: int = 20250101,
                 fmt: str = "mixed", invalid_rate: float = 0.0, chunk_persons: int = 200_000,
                 reported: bool = False, supervision: bool | None = None) -> dict:
    """Write registers and monthly settlement files for `persons` synthetic insured persons.

    fmt: "csv" (UTF-8), "parquet", or "mixed" (some CSV in UTF-8, one with BOM, some in GB18030, some Parquet).
    invalid_rate: fraction of settlement rows replaced by invalid rows, cycling through every reject reason;
    their positions are written to `out/INJECTED.json`. reported: fill the institution-reported amounts
    (`fill_reported`; a second pass through the pipeline). supervision: take chance supervision findings out and
    plant each pattern at a known rate (`plant_supervision`, another pass; listed in `out/SUPERVISION.json`);
    default: with the reported amounts (whose pass then checks that the rules find exactly the planted cases).
    Returns a summary (files, rows per month, injected)."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, not {fmt!r}")
    if not 0.0 <= invalid_rate < 1.0:
        raise ValueError("invalid_rate must be in [0, 1)")
    out = Path(out)
    p = syn.SampleParams(persons=persons, year=year, months=months, seed=seed, chunk_persons=chunk_persons)
    out.mkdir(parents=True, exist_ok=True)
    _clean(out)

    inst = syn.Institutions.build(p)
    writers: dict[str, _FileWriter] = {}
    for name in REGISTERS:
        ext, enc = file_format(fmt, name)
        writers[name] = _FileWriter(out / "reference" / f"{name}.{ext}", enc, syn.REGISTER_KINDS[name])
    writers["institutions"].write_text(syn.as_text(inst.register, syn.REGISTER_KINDS["institutions"]))

    injector = syn.InvalidInjector(year=year, rate=invalid_rate, seed=seed)
    injected_rows: list[dict] = []
    files: list[str] = [str(w.path.relative_to(out)) for w in writers.values()]
    rows_per_month: dict[str, dict[str, int]] = {m: {} for m in p.month_labels()}
    offsets: dict[int, int] = {}
    multi = p.n_chunks > 1
    progress.plan([f"{c + 1}" for c in range(p.n_chunks)])  # issue 16.4: a large sample says how far it is
    for chunk in range(p.n_chunks):
        started, before = time.monotonic(), sum(v.get("hospital", 0) + v.get("pharmacy", 0) for v in rows_per_month.values())
        progress.report(f"sample chunk {chunk + 1} of {p.n_chunks}", "generating",
                        f"persons {chunk * p.chunk_persons + 1:,}–{min(persons, (chunk + 1) * p.chunk_persons):,}")
        res = syn.generate_chunk(p, chunk, inst, offsets)
        offsets = res.setl_offsets
        for name in REGISTERS:
            if name == "institutions":
                continue
            writers[name].write_text(syn.as_text(getattr(res, name), syn.REGISTER_KINDS[name]))
        injector.start_chunk()
        part = f"_part{chunk + 1:04d}" if multi else ""
        apps = res.applications.with_columns(_m=pl.col("confirm_date").dt.month())
        for month in range(1, months + 1):
            label = f"{year}-{month:02d}"
            month_lines = res.lines.filter(pl.col("month") == month)
            for name, kind in zip(SETTLEMENT_FILES, ("hospital", "pharmacy"), strict=True):
                typed = month_lines.filter(pl.col("file") == kind)
                text = syn.as_text(typed.select(syn.SETTLEMENT_COLUMNS), syn.SETTLEMENT_KINDS)
                ext, enc = file_format(fmt, name, month)
                rel = f"{label}/{name}{part}.{ext}"
                if invalid_rate > 0:
                    text, recs = injector.inject(typed, text, month, kind)
                    injected_rows.extend({"month": label, "file": rel, **rec} for rec in recs)
                _write_whole(out / rel, enc, text, syn.SETTLEMENT_KINDS)
                files.append(rel)
                rows_per_month[label][kind] = rows_per_month[label].get(kind, 0) + text.height
            app_m = apps.filter(pl.col("_m") == month).drop("_m")
            if app_m.height:
                ext, enc = file_format(fmt, "assistance_applications", month)
                rel = f"{label}/assistance_applications{part}.{ext}"
                _write_whole(out / rel, enc, syn.as_text(app_m, syn.REGISTER_KINDS["assistance_applications"]),
                             syn.REGISTER_KINDS["assistance_applications"])
                files.append(rel)
                rows_per_month[label]["assistance_applications"] = (
                    rows_per_month[label].get("assistance_applications", 0) + app_m.height)
            events = res.maternity_events.filter(pl.col("month") == month).drop("month")
            if events.height:  # docs/MATERNITY_INPUT.md
                ext, enc = file_format(fmt, "maternity_events", month)
                rel = f"{label}/maternity_events{part}.{ext}"
                _write_whole(out / rel, enc, syn.as_text(events, syn.MATERNITY_EVENT_KINDS), syn.MATERNITY_EVENT_KINDS)
                files.append(rel)
                rows_per_month[label]["maternity_events"] = rows_per_month[label].get("maternity_events", 0) + events.height
        del res
        progress.month_done(f"sample chunk {chunk + 1} of {p.n_chunks}", sum(
            v.get("hospital", 0) + v.get("pharmacy", 0) for v in rows_per_month.values()) - before,
            time.monotonic() - started)
    for w in writers.values():
        w.close()

    total = {r: 0 for r in syn.REASON_CODES}
    for counts in injector.counts.values():
        for r, n in counts.items():
            total[r] += n
    injected = {
        "invalid_rate": invalid_rate,
        "total": total,
        "by_month": {m: {r: injector.counts.get(m, {}).get(r, 0) for r in syn.REASON_CODES if
                         injector.counts.get(m, {}).get(r, 0)} for m in p.month_labels()},
        "rows": injected_rows,
    }
    if invalid_rate > 0:
        (out / "INJECTED.json").write_text(json.dumps(injected, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        files.append("INJECTED.json")
    settlement_rows = sum(v.get("hospital", 0) + v.get("pharmacy", 0) for v in rows_per_month.values())
    supervision = reported if supervision is None else supervision
    if supervision:
        progress.report("sample", "planting supervision patterns", "SUPERVISION.json")
    planted = plant_supervision(out, fmt, seed) if supervision else {}
    if supervision:
        files.append("SUPERVISION.json")
        for month, n in planted["lines_added"].items():  # the planted lines, appended to the hospital files
            rows_per_month[month]["hospital"] = rows_per_month[month].get("hospital", 0) + n
            settlement_rows += n
    if reported:
        progress.report("sample", "the institutions' reported amounts", "the year run once through the monthly steps")
    reported_errors = fill_reported(out, fmt, seed, expected_findings=planted.get("cases")) if reported else {}
    if reported:
        files.append("REPORTED.json")
    return {
        "out": str(out),
        "persons": persons,
        "year": year,
        "months": months,
        "seed": seed,
        "fmt": fmt,
        "chunks": p.n_chunks,
        "files": sorted(files),
        "register_rows": {name: w.rows for name, w in writers.items()},
        "rows_per_month": rows_per_month,
        "settlement_rows": settlement_rows,
        "invalid_injected": {r: n for r, n in total.items() if n} if invalid_rate > 0 else {},
        "reported_errors": reported_errors,
        "supervision_cases": planted.get("cases_by_rule", {}),
        "bytes": sum((out / f).stat().st_size for f in files),
    }


@contextmanager
def _throwaway_run(out: Path) -> Iterator[tuple[str, list[pl.DataFrame], list[pl.DataFrame]]]:
    """The written folder through the real monthly steps (flows.monthly task functions, no Prefect) into a
    throw-away database: (database, adjudicated frames, accepted frames (setl_id, source file and row))."""
    import tempfile

    from flows import monthly, store

    months = sorted(d.name for d in out.iterdir() if d.is_dir() and re.fullmatch(r"\d{4}-\d{2}", d.name))
    adjudicated, accepted = [], []
    with tempfile.TemporaryDirectory(prefix="yibao-sample-") as tmp:
        db = str(Path(tmp) / "sample.duckdb")
        for month in months:
            run_id, stage = f"sample-{month}", Path(tmp) / month
            stage.mkdir()
            con = store.connect(db)
            try:
                store.begin_run(con, {"run_id": run_id, "month": month, "input_dir": str(out),
                                      "code_version": "sample", "policy_version": "sample"})
            finally:
                con.close()
            monthly.ingest_and_validate.fn(str(out), month, db, str(stage))
            monthly.adjudicate_month.fn(str(stage), db, month)
            monthly.persist.fn(str(stage), db, month, run_id)
            adjudicated.append(pl.read_parquet(stage / "adjudicated.parquet"))
            accepted.append(pl.read_parquet(stage / "accepted.parquet", columns=["setl_id", "source_file", "source_row"]))
        yield db, adjudicated, accepted


def _rewrite(out: Path, fmt: str, rel: str, change) -> None:
    """Read one settlement file as text, change it (a function of the text frame), write it back in its format."""
    path = out / rel
    name, month = path.stem.split("_part")[0], int(path.parent.name[5:])
    from flows.ingest import RESERVED, read_table
    text = change(read_table(path, out))
    _write_whole(path, file_format(fmt, name, month)[1], text.drop(*[c for c in RESERVED if c in text.columns]),
                 syn.SETTLEMENT_KINDS)


def _yuan_times(text: pl.Expr, k: int) -> pl.Expr:
    fen = (text.cast(pl.Decimal(18, 2)) * 100).cast(pl.Int64)
    return syn.fen_text(fen * k)


def _cluster_size(on: dt.date) -> planted.ClusterSize:
    """The institution-level cluster big enough for both institution rules in every region and scheme: one
    hospital more than the largest `min_peers`, the largest `min_stays` stays each (supervision.yaml)."""
    from flows.policies import load_policies
    pol = load_policies()
    settings = [pol.value(region, scheme, f"supervision.{rule}", on)
                for region, scheme in (("suizhou", "resident"), ("xiangyang", "employee"), ("xiangyang", "resident"))
                for rule in ("institution_out_of_scope_ratio", "institution_cost_per_stay")]
    return planted.ClusterSize(institutions=max(int(v["min_peers"]) for v in settings) + 1,
                               stays=max(int(v["min_stays"]) for v in settings))


def plant_supervision(out: Path, fmt: str, seed: int) -> dict:
    """Supervision patterns at a known rate (transforms/planted.py): the chance findings of the written folder
    taken out by a minimal edit, then each pattern planted; every case listed in `out/SUPERVISION.json`."""
    from flows import store
    from flows.ingest import read_table

    with _throwaway_run(out) as (db, _, _):
        con = store.connect(db, read_only=True)
        try:
            lines = store.fetch_fen(con, """
                SELECT a.setl_id, a.mdtrt_id, a.psn_no, a.region, a.scheme, a.month, a.fixmedins_code, a.hosp_lv,
                  a.med_type, a.ledger, s.begndate, s.enddate, a.setl_time, s.dise_codg, a.orig_setl_id,
                  a.medfee_sumamt, a.fund_pay_sumamt, a.reason_codes, s.source_file, s.source_row
                FROM adjudicated a JOIN settlements s USING (setl_id) ORDER BY a.setl_time, a.setl_id""")
            natural = store.fetch_fen(con, "SELECT * FROM violations ORDER BY rule_id, finding_key")
            last = con.execute("SELECT max(month) FROM month_institutions").fetchall()[0][0]
            inst = store.fetch_fen(con, "SELECT * FROM month_institutions WHERE month = ?", [last])
        finally:
            con.close()
    names = dict(inst.select("fixmedins_code", "fixmedins_name").iter_rows())
    edits = planted.clean(lines, natural, inst)
    where = lines.filter(pl.col("setl_id").is_in(list(edits))).select("setl_id", "source_file")
    for (rel,), part in where.group_by("source_file"):
        ids = part["setl_id"].to_list()
        new_code = pl.col("setl_id").replace_strict({i: edits[i]["fixmedins_code"] for i in ids}, default=None)

        def change(t: pl.DataFrame, new_code=new_code) -> pl.DataFrame:
            t = t.with_columns(pl.coalesce(new_code, "fixmedins_code").alias("fixmedins_code"))
            if "fixmedins_name" in t.columns:
                t = t.with_columns(pl.col("fixmedins_code").replace_strict(names, default=None)
                                   .fill_null(pl.col("fixmedins_name")).alias("fixmedins_name"))
            return t
        _rewrite(out, fmt, rel, change)
    months = sorted(d.name for d in out.iterdir() if d.is_dir() and re.fullmatch(r"\d{4}-\d{2}", d.name))
    y, m = int(months[-1][:4]), int(months[-1][5:])
    last_day = dt.date(y + (m == 12), m % 12 + 1, 1) - dt.timedelta(days=1)
    new, cases = planted.plant(lines, inst, set(natural["psn_no"].drop_nulls().to_list()), seed, last_day,
                               _cluster_size(last_day))
    base_rel = dict(lines.select("setl_id", "source_file").iter_rows())
    texts: dict[str, pl.DataFrame] = {}
    rows = []
    for n in new:
        rel = base_rel[n["base"]]
        if rel not in texts:
            texts[rel] = read_table(out / rel, out)
        row = texts[rel].filter(pl.col("setl_id").str.strip_chars() == n["base"])
        row = row.with_columns([pl.lit(v).alias(c) for c, v in n["set"].items()]
                               + [pl.lit(None, pl.String).alias(c) for c in syn.REPORTED_COLUMNS])
        if "person" in n:  # a stay for another person: who it is, as that person's own line says
            prel = base_rel[n["person"]]
            if prel not in texts:
                texts[prel] = read_table(out / prel, out)
            who = texts[prel].filter(pl.col("setl_id").str.strip_chars() == n["person"])
            row = row.with_columns([pl.lit(who[c][0], pl.String).alias(c) for c in ("psn_no", "insutype", "psn_name")
                                    if c in row.columns and c in who.columns])
        if n["scale"] != 1:
            row = row.with_columns([_yuan_times(pl.col(c), n["scale"]).alias(c) for c in syn.MONEY_COLUMNS[:5]])
        if "fixmedins_name" in row.columns:
            row = row.with_columns(pl.lit(names.get(n["set"].get("fixmedins_code"))).fill_null(
                pl.col("fixmedins_name")).alias("fixmedins_name"))
        rows.append((n["month"], row))
    for month in sorted({mo for mo, _ in rows}):
        target = sorted((out / month).glob("hospital_settlements*"))[0]
        add = pl.concat([r for mo, r in rows if mo == month], how="diagonal_relaxed")

        def append(t: pl.DataFrame, add=add) -> pl.DataFrame:
            return pl.concat([t, add.select(t.columns)], how="vertical_relaxed")
        _rewrite(out, fmt, target.relative_to(out).as_posix(), append)
    by_rule = {r: sum(c["rule_id"] == r.upper() for c in cases) for r in planted.PLANTED_RULES}
    doc = {"rates_bp": planted.RATES_BP, "cases_by_rule": by_rule,
           "lines_added": {mo: sum(m2 == mo for m2, _ in rows) for mo in sorted({mo for mo, _ in rows})},
           "chance_findings_taken_out": natural.select("rule_id", "month", "vola_evid").to_dicts(), "cases": cases}
    (out / "SUPERVISION.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1, default=str) + "\n",
                                          encoding="utf-8")
    return doc


def fill_reported(out: Path, fmt: str, seed: int, expected_findings: list[dict] | None = None) -> dict[str, int]:
    """The institutions' real-time amounts (DATA.md §2 `hifp_pay` … `psn_cash_pay`), mostly right.

    The written folder goes through the real monthly steps (`_throwaway_run`) into a throw-away database;
    `transforms.reported` turns the adjudicated lines into what the institutions report, with a few known
    errors; the settlement files are rewritten with those columns filled (same format and encoding) and every
    wrong (line, fund) is listed in `out/REPORTED.json`. Returns lines wrong per kind. expected_findings: the
    planted supervision cases (plant_supervision); the pass checks that the rules find exactly those."""
    from flows import store
    from flows.ingest import RESERVED, read_table
    from transforms.reported import reported_amounts

    with _throwaway_run(out) as (db, adjudicated, accepted):
        if expected_findings is not None:
            con = store.connect(db, read_only=True)
            try:
                found = con.execute("SELECT rule_id, month, vola_evid FROM violations ORDER BY ALL").fetchall()
            finally:
                con.close()
            want = sorted((c["rule_id"], c["month"], c["vola_evid"]) for c in expected_findings)
            if found != want:  # a chance pattern `clean` does not take out: listed, never hidden
                doc = json.loads((out / "SUPERVISION.json").read_text(encoding="utf-8"))
                doc["also_found"] = [dict(zip(("rule_id", "month", "vola_evid"), f, strict=True))
                                     for f in sorted(set(found) - set(want))]
                doc["missed"] = [dict(zip(("rule_id", "month", "vola_evid"), f, strict=True))
                                 for f in sorted(set(want) - set(found))]
                (out / "SUPERVISION.json").write_text(json.dumps(doc, ensure_ascii=False, indent=1, default=str)
                                                      + "\n", encoding="utf-8")
                warnings.warn(f"sample: the supervision rules find {len(doc['also_found'])} cases beyond the planted "
                              f"ones and miss {len(doc['missed'])} (listed in SUPERVISION.json)", stacklevel=2)
    rep, errors = reported_amounts(pl.concat(adjudicated, how="diagonal_relaxed"), seed)
    where = pl.concat(accepted)
    rep = rep.join(where, on="setl_id")
    errors = errors.join(where, on="setl_id")
    for rel, part in rep.group_by("source_file"):
        path = out / rel[0]
        name, month = path.stem.split("_part")[0], int(path.parent.name[5:])
        text = read_table(path, out)
        filled = part.select("source_row", *[syn.fen_text(pl.col(c)).alias(f"__r_{c}") for c in syn.REPORTED_COLUMNS])
        text = text.join(filled, on="source_row", how="left", maintain_order="left").with_columns(
            [pl.coalesce(f"__r_{c}", c).alias(c) for c in syn.REPORTED_COLUMNS])
        text = text.drop(*RESERVED, *[f"__r_{c}" for c in syn.REPORTED_COLUMNS])
        _write_whole(path, file_format(fmt, name, month)[1], text, syn.SETTLEMENT_KINDS)
    listed = errors.sort("source_file", "source_row", "fund").with_columns(
        [syn.fen_text(pl.col(c)).alias(c) for c in ("reported", "adjudicated")])
    by_kind = {k: n for k, n in errors.group_by("kind").agg(pl.col("setl_id").n_unique()).sort("kind").iter_rows()}
    (out / "REPORTED.json").write_text(json.dumps({"lines_by_kind": by_kind, "rows": listed.to_dicts()},
                                                  ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return by_kind
