"""The synthetic bureau generator (`transforms/synthetic.py`, `flows/sample.py`)."""

from __future__ import annotations

import io
import json
from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest

from flows.sample import write_sample
from transforms import synthetic as syn
from transforms.money import yuan_text_to_fen
from transforms.reasons import EVENT_ONLY_REASONS, REJECT_REASONS

MONEY = ["medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "cls_a_amt", "cls_b_amt"]
REQUIRED = ["setl_id", "mdtrt_id", "psn_no", "insutype", "med_type", "fixmedins_code", "setl_time", *MONEY]
IDENTITY_CODES = ["tekun", "orphan", "dibao", "fanpin", "dibao_edge", "monitor_unstable", "monitor_edge",
                  "monitor_sudden", "illness_poor", "other_hardship", "disabled", "mental", "family_planning",
                  "poverty_exit", "veteran"]


# ---------------------------------------------------------------------------------------------- reading


def read_file(path: Path) -> pl.DataFrame:
    """Any generated file as an all-text frame (nulls for empty cells)."""
    if path.suffix == ".parquet":
        df = pl.read_parquet(path)
        out = []
        for c, dt in df.schema.items():
            if dt == pl.Datetime("us"):
                out.append(pl.col(c).dt.strftime("%Y-%m-%d %H:%M:%S"))
            elif dt == pl.Boolean:
                out.append(pl.when(pl.col(c)).then(pl.lit("true")).when(~pl.col(c)).then(pl.lit("false")).alias(c))
            else:
                out.append(pl.col(c).cast(pl.String))
        return df.select(out)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("gb18030")
    return pl.read_csv(io.StringIO(text), infer_schema=False)


def read_register(out: Path, name: str) -> pl.DataFrame:
    (path,) = [p for p in (out / "reference").glob(f"{name}.*")]
    return read_file(path)


def settlement_files(out: Path) -> list[Path]:
    files = []
    for month_dir in sorted(p for p in out.iterdir() if p.is_dir() and p.name[:2] == "20"):
        files += sorted(f for f in month_dir.iterdir() if f.name.startswith(("hospital_", "pharmacy_")))
    return files


def read_settlements(out: Path) -> pl.DataFrame:
    frames = []
    for f in settlement_files(out):
        df = read_file(f)
        frames.append(df.with_columns(
            file=pl.lit(f"{f.parent.name}/{f.name}"), month=pl.lit(f.parent.name),
            source_row=pl.int_range(1, pl.len() + 1, dtype=pl.Int64)))
    return pl.concat(frames, how="diagonal")


def injected_keys(out: Path) -> dict[tuple[str, int], str]:
    path = out / "INJECTED.json"
    if not path.exists():
        return {}
    return {(r["file"], r["source_row"]): r["reason"] for r in json.loads(path.read_text())["rows"]}


# ------------------------------------------------------------------------------ an independent validator


def _date(s: str | None) -> date | None:
    try:
        return date.fromisoformat(s) if s and len(s) == 10 else None
    except ValueError:
        return None


def _time(s: str | None) -> datetime | None:
    try:
        return datetime.strptime(s, "%Y-%m-%d %H:%M:%S") if s else None
    except ValueError:
        return None


def _fen(s: str | None) -> int | None:
    try:
        return yuan_text_to_fen(s)
    except ValueError:
        return None


def validate(out: Path) -> dict[tuple[str, int], set[str]]:
    """Every reason each settlement row breaks. Files are read month by month; duplicates count in file
    order (month, file name, row), reversals in settlement order (setl_time, setl_id) as POLICY §1.2."""
    persons = dict(read_register(out, "persons").select("psn_no", "insutype").iter_rows())
    institutions = set(read_register(out, "institutions")["fixmedins_code"].to_list())
    certs: dict[tuple[str, str], list[tuple[date, date | None]]] = {}
    for psn, code, b, e in read_register(out, "certifications").select(
            "psn_no", "dise_cert_code", "begndate", "enddate").iter_rows():
        certs.setdefault((psn, code), []).append((_date(b), _date(e)))
    seen_ids: set[str] = set()
    accepted: dict[str, dict] = {}
    reversed_ids: set[str] = set()
    found: dict[tuple[str, int], set[str]] = {}
    settlements = read_settlements(out)
    for (month,), rows in settlements.group_by("month", maintain_order=True):
        month_rows = []
        for row in rows.iter_rows(named=True):
            why: set[str] = set()
            if any(row[c] is None for c in REQUIRED):
                why.add("MISSING_REQUIRED")
            t = _time(row["setl_time"])
            amounts = {c: _fen(row[c]) for c in MONEY}
            bad_date = any(row[c] is not None and _date(row[c]) is None for c in ("begndate", "enddate"))
            if bad_date or (row["setl_time"] and t is None) or any(
                    row[c] is not None and amounts[c] is None for c in MONEY) or row["is_emergency_rescue"] not in (
                    None, "true", "false"):
                why.add("BAD_VALUE")
            if row["insutype"] not in ("310", "390") or row["med_type"] not in syn.MED_TYPES or row[
                    "offsite_type"] not in (None, "101", "903"):
                why.add("BAD_CODE")
            if all(v is not None for v in amounts.values()):
                if amounts["medfee_sumamt"] != sum(amounts[c] for c in MONEY[1:]):
                    why.add("AMOUNT_MISMATCH")
                if row["orig_setl_id"] is None and min(amounts.values()) < 0:
                    why.add("NEGATIVE_AMOUNT")
            if t is not None and t.strftime("%Y-%m") != month:
                why.add("WRONG_MONTH")
            if row["psn_no"] not in persons:
                why.add("UNKNOWN_PERSON")
            elif row["insutype"] in ("310", "390") and row["insutype"] != persons[row["psn_no"]]:
                why.add("SCHEME_MISMATCH")
            if row["fixmedins_code"] not in institutions or (
                    row["presc_fixmedins_code"] and row["presc_fixmedins_code"] not in institutions):
                why.add("UNKNOWN_INSTITUTION")
            if row["med_type"] == "9901" and row["insutype"] == "310":
                why.add("NO_RULE")
            if row["dise_cert_code"] and t is not None and row["psn_no"] in persons:
                spans = certs.get((row["psn_no"], row["dise_cert_code"]), [])
                if not any(b <= t.date() and (e is None or t.date() <= e) for b, e in spans):
                    why.add("CERT_INVALID")
            if row["setl_id"] in seen_ids:
                why.add("DUPLICATE_SETL_ID")
            if row["setl_id"]:
                seen_ids.add(row["setl_id"])
            found[(row["file"], row["source_row"])] = why
            month_rows.append((t or datetime.max, row["setl_id"] or "", row, amounts, why))
        month_rows.sort(key=lambda x: (x[0], x[1]))
        for _t, _id, row, amounts, why in month_rows:
            orig = row["orig_setl_id"]
            if orig is not None and not why:
                if orig not in accepted:
                    why.add("UNKNOWN_REVERSAL")
                elif orig in reversed_ids:
                    why.add("ALREADY_REVERSED")
                elif any(amounts[c] != -_fen(accepted[orig][c]) for c in MONEY):
                    why.add("REVERSAL_MISMATCH")
            if not why:
                accepted[row["setl_id"]] = row
                if orig is not None:
                    reversed_ids.add(orig)
    return found


# ------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sample")
    summary = write_sample(out, persons=500, year=2025, months=12, seed=7, fmt="mixed", invalid_rate=0.02,
                           chunk_persons=300)
    return out, summary


@pytest.fixture(scope="module")
def lines(sample) -> pl.DataFrame:
    out, _ = sample
    bad = injected_keys(out)
    df = read_settlements(out)
    flags = [(f, r) in bad for f, r in df.select("file", "source_row").iter_rows()]
    return df.with_columns(injected=pl.Series(flags, dtype=pl.Boolean))


# ---------------------------------------------------------------------------------------------- tests


def test_same_seed_same_bytes_and_frames(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    kw = dict(persons=80, months=3, fmt="mixed", invalid_rate=0.03, chunk_persons=35)
    sa = write_sample(a, seed=11, **kw)
    sb = write_sample(b, seed=11, **kw)
    assert sa["files"] == sb["files"]
    for rel in sa["files"]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    sc = write_sample(c, seed=12, **kw)
    assert (a / "reference/persons.csv").read_bytes() != (c / "reference/persons.csv").read_bytes()
    assert sc["files"]  # another seed still writes the same layout
    p = syn.SampleParams(persons=60, months=2, seed=5, chunk_persons=60)
    inst = syn.Institutions.build(p)
    r1, r2 = syn.generate_chunk(p, 0, inst), syn.generate_chunk(p, 0, inst)
    assert r1.lines.equals(r2.lines) and r1.persons.equals(r2.persons)


def test_rewrite_replaces_previous_output(tmp_path):
    write_sample(tmp_path, persons=50, months=2, chunk_persons=20)
    assert any("_part0003" in p.name for p in (tmp_path / "2025-01").iterdir())
    s = write_sample(tmp_path, persons=50, months=1, chunk_persons=50, fmt="csv")
    names = sorted(p.name for p in (tmp_path / "2025-01").iterdir())
    assert "hospital_settlements.csv" in names and "pharmacy_settlements.csv" in names
    assert not any("_part" in n for n in names)
    assert not (tmp_path / "2025-02").exists()
    assert s["chunks"] == 1


def test_layout_and_summary(sample):
    out, summary = sample
    for name in ("persons", "identities", "employment", "certifications", "institutions", "family_bindings",
                 "account_balances"):
        assert len(list((out / "reference").glob(f"{name}.*"))) == 1, name
    months = sorted(p.name for p in out.iterdir() if p.is_dir() and p.name[:2] == "20")
    assert months == [f"2025-{m:02d}" for m in range(1, 13)]
    for rel in summary["files"]:
        assert (out / rel).is_file(), rel
    assert summary["settlement_rows"] == sum(
        v.get("hospital", 0) + v.get("pharmacy", 0) for v in summary["rows_per_month"].values())
    assert summary["register_rows"]["persons"] == 500
    assert list(out.glob("20*/assistance_applications_part*.csv"))
    assert any(f.name == "hospital_settlements_part0002.csv" for f in out.glob("2025-01/*"))


def test_identity_rule_and_signs_on_valid_rows(lines):
    valid = lines.filter(~pl.col("injected"))
    fen = valid.select([pl.col(c).map_elements(yuan_text_to_fen, return_dtype=pl.Int64) for c in MONEY])
    assert (fen["medfee_sumamt"] == fen["cls_a_amt"] + fen["cls_b_amt"] + fen["fulamt_ownpay_amt"]
            + fen["overlmt_selfpay"]).all()
    not_rev = valid["orig_setl_id"].is_null()
    assert (fen.filter(not_rev).min_horizontal() >= 0).all()
    assert (fen.filter(not_rev)["medfee_sumamt"] > 0).all()
    # money as yuan text with exactly two decimals in the CSV files
    csv_money = lines.filter(pl.col("file").str.ends_with(".csv"))["medfee_sumamt"].drop_nulls()
    assert csv_money.str.contains(r"^-?\d+\.\d{2}$").all()
    # the institution-reported columns are present and empty
    for c in syn.REPORTED_COLUMNS:
        assert lines[c].null_count() == lines.height


def test_ids_dates_and_months_on_valid_rows(lines):
    valid = lines.filter(~pl.col("injected"))
    assert valid["setl_id"].n_unique() == valid.height
    assert valid["setl_id"].str.contains(r"^S2025(0[1-9]|1[0-2])\d{8}$").all()
    v = valid.with_columns(
        b=pl.col("begndate").str.to_date(), e=pl.col("enddate").str.to_date(),
        t=pl.col("setl_time").str.to_datetime("%Y-%m-%d %H:%M:%S"))
    assert (v["b"] <= v["e"]).all() and (v["e"] <= v["t"].dt.date()).all()
    assert (v["t"].dt.strftime("%Y-%m") == v["month"]).all()
    # reversals: later, exact negation, at most one per original
    rev = v.filter(pl.col("orig_setl_id").is_not_null() & pl.col("medfee_sumamt").str.starts_with("-"))
    assert rev.height > 0
    assert rev["orig_setl_id"].n_unique() == rev.height
    j = rev.join(v, left_on="orig_setl_id", right_on="setl_id", suffix="_o")
    assert j.height == rev.height
    assert (j["t"] >= j["t_o"]).all()
    for c in MONEY:
        assert (j[c].map_elements(yuan_text_to_fen, return_dtype=pl.Int64)
                == -j[c + "_o"].map_elements(yuan_text_to_fen, return_dtype=pl.Int64)).all()


def test_certno_checksums_and_persons(sample):
    out, _ = sample
    persons = read_register(out, "persons")
    assert syn.certno_valid("11010519491231002X")  # the standard's own example
    assert not syn.certno_valid("110105194912310021")
    assert all(syn.certno_valid(c) for c in persons["certno"])
    assert persons["certno"].n_unique() == persons.height
    assert (persons["certno"].str.slice(0, 6) == persons["insuplc_admdvs"]).all()
    assert (persons["certno"].str.slice(6, 8) == persons["brdy"].str.replace_all("-", "")).all()
    cities = persons["insuplc_admdvs"].str.slice(0, 4)
    assert set(cities) == {"4213", "4206"}
    assert 0.5 < (cities == "4213").mean() < 0.7
    # the Suizhou employee scheme is not modelled: Suizhou persons are residents
    assert set(persons.filter(cities == "4213")["insutype"]) == {"390"}
    assert set(persons.filter(cities == "4206")["insutype"]) == {"310", "390"}
    assert persons["psn_name"].str.contains(r"^[\u4e00-\u9fff]{2,3}$").all()


def test_every_code_present(sample, lines):
    out, _ = sample
    valid = lines.filter(~pl.col("injected"))
    assert set(valid["med_type"]) == set(syn.MED_TYPES)
    inst = read_register(out, "institutions")
    assert set(inst["dedc_hosp_lv"]) == {"1", "2", "3"}
    assert set(inst["facility"]) == {"village_clinic", "township", "hospital", "pharmacy"}
    provinces = set(inst["admdvs"].str.slice(0, 2))
    assert "42" in provinces and len(provinces) >= 3
    assert inst.filter(pl.col("admdvs").str.slice(0, 4).is_in(["4201"]))["offsite_outpatient_enabled"].to_list().count(
        "true") > 0
    for city in ("4213", "4206"):
        assert inst.filter((pl.col("facility") == "pharmacy") & pl.col("admdvs").str.starts_with(city)).height > 0
    j = valid.join(inst.select("fixmedins_code", "admdvs", "dedc_hosp_lv", "facility"), on="fixmedins_code")
    j = j.join(read_register(out, "persons").select("psn_no", "insuplc_admdvs"), on="psn_no")
    assert set(j["dedc_hosp_lv"]) == {"1", "2", "3"}
    assert set(j["facility"]) == {"village_clinic", "township", "hospital", "pharmacy"}
    out_city = j.filter(pl.col("admdvs").str.slice(0, 4) != pl.col("insuplc_admdvs").str.slice(0, 4))
    assert set(out_city["offsite_type"].to_list()) == {"101", "903", None}
    assert out_city.filter(~pl.col("admdvs").str.starts_with("42")).height > 0
    in_city = j.filter(pl.col("admdvs").str.slice(0, 4) == pl.col("insuplc_admdvs").str.slice(0, 4))
    assert in_city["offsite_type"].null_count() == in_city.height
    assert set(read_register(out, "identities")["identity"]) == set(IDENTITY_CODES)
    assert set(read_register(out, "certifications")["kind"]) == {
        "hypertension", "diabetes", "chronic", "special", "special_transplant", "special_dialysis",
        "special_mental", "special_drug"}
    emp = read_register(out, "employment")
    assert set(emp["benefit"]) == {"normal", "suspended", "arrears", "unverified", "terminated"}
    assert set(emp["psn_type"]) == {"11", "12"} and set(emp["contrib_mode"]) == {"combined", "pooling_only"}
    assert emp.group_by("psn_no").agg(pl.col("psn_type").n_unique()).filter(pl.col("psn_type") > 1).height > 0


def test_care_type_consistency(sample, lines):
    out, _ = sample
    valid = lines.filter(~pl.col("injected"))
    persons = read_register(out, "persons")
    certs = read_register(out, "certifications")
    j = valid.join(persons.select("psn_no", "gend", "brdy", "insuplc_admdvs", pl.col("insutype").alias("p_ins")),
                   on="psn_no")
    assert (j["insutype"] == j["p_ins"]).all()
    two = j.filter(pl.col("med_type") == "9901")
    assert (two["insutype"] == "390").all() and two["dise_cert_code"].null_count() == 0
    kinds = two.join(certs, on=["psn_no", "dise_cert_code"])["kind"]
    assert set(kinds) <= {"hypertension", "diabetes"}
    assert j.filter(pl.col("med_type").str.starts_with("14"))["dise_cert_code"].null_count() == 0
    pharmacy = j.filter(pl.col("med_type") == "41")
    assert pharmacy["fixmedins_code"].str.starts_with("P").all()
    assert 0 < pharmacy["presc_fixmedins_code"].null_count() < pharmacy.height
    trauma = j.filter((pl.col("med_type") == "22") & (pl.col("insuplc_admdvs") == "421321"))
    assert trauma["trauma_report_no"].null_count() > 0
    em = j.filter(pl.col("med_type").is_in(["13", "24"]))
    assert set(em["is_emergency_rescue"]) == {"true", "false"}
    pair = j.filter(pl.col("orig_setl_id").is_null()).group_by("mdtrt_id").agg(pl.col("med_type").sort())
    assert pair.filter(pl.col("med_type") == ["13", "24"]).height > 0
    mat = j.filter(pl.col("med_type").is_in(["51", "52"]))
    assert (mat["gend"] == "2").all()
    age = 2025 - mat["brdy"].str.slice(0, 4).cast(pl.Int64)
    assert ((age >= 18) & (age <= 45)).all()
    # out-of-scope share: mostly small, above 10% for some stays
    f = j.filter(pl.col("orig_setl_id").is_null()).select(
        [pl.col(c).map_elements(yuan_text_to_fen, return_dtype=pl.Int64) for c in MONEY] + ["med_type"])
    share = (f["fulamt_ownpay_amt"] + f["overlmt_selfpay"]) / f["medfee_sumamt"]
    assert share.median() < 0.08
    stays = f.with_columns(share=share).filter(pl.col("med_type").is_in(["21", "22", "24", "28", "52"]))
    assert (stays["share"] > 0.10).any()
    assert f["medfee_sumamt"].max() >= 20_000_000  # a stay of 200,000 yuan or more


def test_mixed_formats_and_encodings(sample):
    out, _ = sample
    files = settlement_files(out)
    assert any(f.suffix == ".parquet" for f in files)
    gb = []
    for f in files + list((out / "reference").glob("*.csv")):
        if f.suffix != ".csv":
            continue
        raw = f.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            gb.append(f)
            assert any("\u4e00" <= ch <= "\u9fff" for ch in raw.decode("gb18030").splitlines()[1])
    assert any(f.name.startswith("hospital_settlements") for f in gb)
    assert any(f.read_bytes()[:3] == b"\xef\xbb\xbf" for f in files if f.suffix == ".csv")
    import pyarrow.parquet as pq

    pqf = next(f for f in files if f.suffix == ".parquet" and f.name.startswith("hospital"))
    schema = pq.read_schema(pqf)
    assert str(schema.field("medfee_sumamt").type) == "decimal128(18, 2)"
    assert str(schema.field("setl_time").type) == "timestamp[us]"


def test_injected_rows_break_exactly_their_rule(sample):
    out, summary = sample
    injected = json.loads((out / "INJECTED.json").read_text())
    # settlement rows; REVERSAL_AFTER_MERGE is not injected (transforms/synthetic.py REASON_CODES)
    assert set(injected["total"]) == set(REJECT_REASONS) - set(EVENT_ONLY_REASONS) - {"REVERSAL_AFTER_MERGE"}
    assert all(n >= 1 for n in injected["total"].values()), injected["total"]
    assert summary["invalid_injected"] == injected["total"]
    by_month: dict[str, int] = {}
    for counts in injected["by_month"].values():
        for reason, n in counts.items():
            by_month[reason] = by_month.get(reason, 0) + n
    assert by_month == injected["total"]
    assert len(injected["rows"]) == sum(injected["total"].values())
    expected = injected_keys(out)
    found = validate(out)
    assert set(expected) <= set(found)
    problems = [(k, expected.get(k), sorted(v)) for k, v in found.items() if v != ({expected[k]} if k in expected
                                                                                   else set())]
    assert problems == []
    rate = len(expected) / summary["settlement_rows"]
    assert 0.015 < rate < 0.025


def test_no_invalid_rows_by_default(tmp_path):
    s = write_sample(tmp_path, persons=120, months=2)
    assert s["invalid_injected"] == {} and not (tmp_path / "INJECTED.json").exists()
    assert all(not v for v in validate(tmp_path).values())


def test_bindings_and_balances(sample):
    out, _ = sample
    b = read_register(out, "family_bindings").with_columns(
        pl.col("begndate").str.to_date(), pl.col("enddate").str.to_date())
    persons = read_register(out, "persons")
    ins = dict(persons.select("psn_no", "insutype").iter_rows())
    assert set(b["relation"]) == {"spouse", "parent", "child"}
    assert all(ins[a] == "310" and a.startswith("4206") for a in b["authoriser_psn_no"])
    assert {ins[u] for u in b["user_psn_no"]} == {"310", "390"}
    max_live = {}
    for a, rows in b.group_by("authoriser_psn_no"):
        live = max(
            rows.filter((pl.col("begndate") <= d) & (pl.col("enddate").is_null() | (pl.col("enddate") >= d))).height
            for d in rows["begndate"])
        max_live[a[0]] = live
    assert max(max_live.values()) == 6
    assert b.group_by("user_psn_no").len()["len"].max() >= 2
    pairs = set(zip(b["authoriser_psn_no"], b["user_psn_no"], strict=True))
    assert any((u, a) in pairs for a, u in pairs)
    bal = read_register(out, "account_balances")
    assert set(bal["as_of"]) == {"2024-12-31"}
    assert all(ins[p] == "310" for p in bal["psn_no"])
    assert bal["balc"].str.contains(r"^\d+\.\d{2}$").all()


def test_assistance_applications(sample):
    out, _ = sample
    ids = read_register(out, "identities")
    apps = pl.concat([read_file(f).with_columns(month=pl.lit(f.parent.name))
                      for f in out.glob("20*/assistance_applications*")])
    assert apps.height >= 1
    assert set(apps["identity"]) <= set(syn.ASSISTANCE_IDENTITIES)
    assert (apps["confirm_date"].str.slice(0, 7) == apps["month"]).all()
    assert apps["app_id"].n_unique() == apps.height
    j = apps.join(ids, left_on=["psn_no", "identity", "confirm_date"], right_on=["psn_no", "identity", "begndate"])
    assert j.height == apps.height


def test_params_are_checked(tmp_path):
    with pytest.raises(ValueError):
        write_sample(tmp_path, persons=10, fmt="xlsx")
    with pytest.raises(ValueError):
        write_sample(tmp_path, persons=10, months=13)
    with pytest.raises(ValueError):
        write_sample(tmp_path, persons=0)


@pytest.mark.slow
def test_larger_run_in_chunks(tmp_path):
    s = write_sample(tmp_path, persons=60_000, months=12, fmt="parquet", chunk_persons=25_000, invalid_rate=0.001)
    assert s["chunks"] == 3
    assert 4 * 60_000 < s["settlement_rows"] < 8 * 60_000
    ids = pl.concat([pl.read_parquet(f, columns=["setl_id"]) for f in tmp_path.glob("20*/*settlements*.parquet")])
    dup = ids.height - ids["setl_id"].drop_nulls().n_unique() - ids["setl_id"].null_count()
    assert dup == s["invalid_injected"].get("DUPLICATE_SETL_ID", 0)


def test_hash_is_the_same_on_small_and_large_frames():
    keys = pl.Series([0, 1, 2**32 - 1, 2**32, 123_456_789_012, 2**45 + 17] * 1000, dtype=pl.Int64)
    salt = 0x0123_4567_89AB_CDEF
    assert syn._hash_series(keys, salt).to_list() == [syn.hash_key(k, salt) for k in keys.to_list()]
    assert syn._hash_series(keys.head(6), salt).to_list() == [syn.hash_key(k, salt) for k in keys.head(6).to_list()]
    u = (syn._hash_series(pl.int_range(0, 50_000, eager=True), salt).cast(pl.Float64) + 0.5) / 2**32
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.std() - 0.2887) < 0.01


def test_person_attributes_do_not_depend_on_chunking():
    p1 = syn.SampleParams(persons=5000, seed=3, chunk_persons=5000)
    p2 = syn.SampleParams(persons=5000, seed=3, chunk_persons=1000)
    r = syn._Rng(3)
    whole = syn._persons(p1, 0, r).drop("certno")
    parts = pl.concat([syn._persons(p2, c, r) for c in range(5)]).drop("certno")
    assert whole.equals(parts)


def test_xiangyang_residents_only_where_the_policy_has_parameters(sample, lines):
    """POLICY §4.7: no Xiangyang resident stay, two-disease, special-drug or out-of-city outpatient line, no
    assistance identity — they would stop the run (transforms/resident/xiangyang.py) — but outpatient and
    chronic lines, which are adjudicated."""
    out, _ = sample
    inst = read_register(out, "institutions").select("fixmedins_code", pl.col("admdvs").alias("inst_adm"))
    xy = (lines.filter(~pl.col("injected") & pl.col("psn_no").str.starts_with("4206") & (pl.col("insutype") == "390"))
          .join(inst, on="fixmedins_code", how="left"))
    assert xy.filter(pl.col("med_type").is_in(["21", "22", "24", "28", "52", "9901"])).height == 0
    assert xy.filter(~pl.col("inst_adm").str.starts_with("4206")).height == 0
    assert xy.filter(pl.col("med_type").is_in(["11", "51"])).height > 0
    assert xy.filter(pl.col("med_type").is_in(["14", "140104", "140201"])).height > 0
    ids = read_register(out, "identities").filter(pl.col("psn_no").str.starts_with("4206"))
    assert set(ids["identity"]).isdisjoint(syn.XY_RESIDENT_ASSISTANCE_IDENTITIES)
    certs = read_register(out, "certifications").filter(pl.col("psn_no").str.starts_with("4206"))
    assert "special_drug" not in set(certs["kind"])


def test_maternity_events(sample):
    """docs/MATERNITY_INPUT.md: events of Xiangyang employees in the month folder of their date."""
    out, _ = sample
    ev = pl.concat([read_file(f).with_columns(month=pl.lit(f.parent.name)) for f in out.glob("20*/maternity_events*")])
    assert ev.height >= 1
    assert (ev["event_date"].str.slice(0, 7) == ev["month"]).all()
    assert set(ev["kind"]) <= {"natural", "caesarean", "miscarriage"}
    persons = read_register(out, "persons").filter(pl.col("insutype") == "310")
    assert set(ev["psn_no"]) <= set(persons.filter(pl.col("insuplc_admdvs").str.starts_with("4206"))["psn_no"])
