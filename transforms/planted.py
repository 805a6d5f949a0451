"""Supervision patterns planted in the synthetic sample (issue 17), like the reported-amount errors of
transforms/reported.py: each pattern at a known rate, deterministic for a seed, every case listed so that a test
can require the rules (transforms/supervision.py) to find exactly these cases and nothing else.

The generator draws each person's visits independently, so a few patterns occur by chance (two stays of one
person overlapping at two hospitals, three clinics on one day). Those are first taken out by a minimal edit
(`clean`): the later overlapping stay moves to the earlier stay's institution; a readmission moves to another
hospital of the city; a day's visits beyond the second institution move to the day's first institution. Then the patterns are planted (`plant`) on "quiet" persons
(no other stay within 60 days, no other outpatient line that day, at most one case each):

- split_admission: a copy of a one-line stay, readmitted 0–15 days after its discharge (drawn), same
  institution and diagnosis, 3 days long;
- duplicate_settlement: a general-outpatient line settled again a minute later under a new setl_id;
- overlapping_stays: a copy of a stay of 2+ days at another hospital of the same city, admitted the day
  after the original's admission and discharged the day after its discharge;
- same_day_outpatient: two more general-outpatient visits the same day at two other institutions of the county;
- short_stay_high_cost: a 1-day stay 30 days after a one-line stay, same institution, amounts scaled to ten
  times the largest stay of its level and month (far above any robust cut), where that level and month has at least
  4 other stays (the rule wants 5 with the planted one).

The institution-level rules need at least 5 institutions of a level with 5 stays each in one month, which a sample
of a few thousand persons never has by chance; so they are planted as one cluster (`cluster_amounts`), last:

- institution_out_of_scope_ratio / institution_cost_per_stay: in one month (the first fitting (region, scheme,
  month, county, level) in drawn order), 6 hospitals of one level in one county of the region's city, none with
  a stay line of the region and scheme that month, get 5 new two-day stays each (30), for quiet persons of the
  region and scheme (a line that month, no stay within 60 days of it, no case, no line outside their benefit
  period), a person's stays at different hospitals 4 days apart (so no split admission, overlap or short stay);
  the row is a copy of an in-city one-line stay of the region and scheme with the person's own psn_no, insutype
  and name. Designed amounts: the first hospital's out-of-scope share is 60 % against its peers' 11–15 %, the
  second's cost per stay 12,000 yuan against 3,000–4,500. The month is one with no other institution of the
  level at 5 stays and no stay of at most 1 day at the level (the cluster would move the short-stay cut). Two
  cases (psn_no empty, every line of the institution that month as evidence).

Pure: frames in (typed lines with their source file and row, the institutions register, the natural findings),
edits and new lines out; flows/sample.py reads and writes the files.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import polars as pl

# basis points of each pattern's candidates (at least one case when there is a candidate)
RATES_BP = {"split_admission": 150, "duplicate_settlement": 30, "overlapping_stays": 100,
            "same_day_outpatient": 30, "short_stay_high_cost": 100}
QUIET_DAYS = 60
# the institution-level cluster (module docstring): its size comes from the rules' settings (ClusterSize, read
# from policies/ by flows/sample.py); the base cost of a stay
CLUSTER_COST_YUAN = 3_000
STOPPED = "TERMINATED|SUSPENDED|WAITING_PERIOD"  # reason codes of a line outside the person's benefit period
PLANTED_RULES = (*RATES_BP, "institution_out_of_scope_ratio", "institution_cost_per_stay")


def clean(lines: pl.DataFrame, violations: pl.DataFrame, institutions: pl.DataFrame) -> dict[str, dict[str, str]]:
    """setl_id → {column: new value} that take the chance findings out (module docstring). Chance findings of
    the other rules are left: the sample's check lists them in SUPERVISION.json (`also_found`)."""
    edits: dict[str, dict[str, str]] = {}
    hospitals = institutions.filter(pl.col("fixmedins_type") == "hospital").sort("fixmedins_code")
    admdvs = dict(institutions.select("fixmedins_code", "admdvs").iter_rows())
    by_id = {r["setl_id"]: r for r in lines.iter_rows(named=True)}
    for v in violations.iter_rows(named=True):
        evid = [by_id[i] for i in v["vola_evid"].split(",") if i in by_id]
        if v["rule_id"] == "OVERLAPPING_STAYS":
            later = [e for e in evid if e["fixmedins_code"] == v["fixmedins_code"]]
            earlier = [e for e in evid if e["fixmedins_code"] != v["fixmedins_code"]]
            moved = {e["mdtrt_id"] for e in later}
            for r in lines.filter(pl.col("mdtrt_id").is_in(list(moved)) & (pl.col("psn_no") == v["psn_no"])
                                  ).iter_rows(named=True):
                edits.setdefault(r["setl_id"], {})["fixmedins_code"] = earlier[0]["fixmedins_code"]
        elif v["rule_id"] == "SPLIT_ADMISSION":  # the readmission moves to another hospital of the city
            readmission = max(evid, key=lambda e: (e["begndate"], e["setl_time"]))
            city = hospitals.filter((pl.col("admdvs").str.slice(0, 4) == str(admdvs.get(v["fixmedins_code"]))[:4])
                                    & (pl.col("fixmedins_code") != v["fixmedins_code"]))
            if city.height:
                for r in lines.filter((pl.col("mdtrt_id") == readmission["mdtrt_id"])
                                      & (pl.col("psn_no") == v["psn_no"])).iter_rows(named=True):
                    edits.setdefault(r["setl_id"], {})["fixmedins_code"] = city["fixmedins_code"][0]
        elif v["rule_id"] == "SAME_DAY_OUTPATIENT":
            evid.sort(key=lambda e: (e["setl_time"], e["setl_id"]))
            keep = list(dict.fromkeys(e["fixmedins_code"] for e in evid))[:2]
            for e in evid:
                if e["fixmedins_code"] not in keep:
                    edits.setdefault(e["setl_id"], {})["fixmedins_code"] = keep[0]
    return edits


def _draw(df: pl.DataFrame, key: str, seed: int, salt: int) -> pl.DataFrame:
    return df.with_columns((pl.col(key).hash(seed + salt) % 1_000_000).alias("__draw")).sort("__draw", key)


def _n(candidates: int, rule: str) -> int:
    return 0 if candidates == 0 else max(1, (candidates * RATES_BP[rule] + 5_000) // 10_000)


class ClusterSize(NamedTuple):
    """The institution-level cluster: one more hospital than the rules' `min_peers` and `min_stays` stays each
    (policies/*/*/supervision.yaml), so that both rules judge it."""
    institutions: int
    stays: int


def plant(lines: pl.DataFrame, institutions: pl.DataFrame, busy: set[str], seed: int, last_day: dt.date,
          size: ClusterSize) -> tuple[list[dict], list[dict]]:
    """(new lines, cases). A new line: `base` (the setl_id whose text row it copies), `set` (columns replaced, as
    the values the file holds: dates, times, yuan text), `scale` (amounts multiplied by it). A case: rule_id,
    month, vola_evid (sorted setl_ids), psn_no, fixmedins_code."""
    live = lines.filter(pl.col("orig_setl_id").is_null()
                        & ~pl.col("setl_id").is_in(lines["orig_setl_id"].drop_nulls().implode()))
    stays = lines.filter(pl.col("ledger").is_in(["inpatient", "maternity", "day_surgery"]))
    one_line = (live.filter((pl.col("med_type") == "21") & (pl.col("ledger") == "inpatient"))
                .join(lines.group_by("mdtrt_id").len(), on="mdtrt_id").filter(pl.col("len") == 1).drop("len"))
    hospitals = institutions.filter(pl.col("fixmedins_type") == "hospital")
    admdvs = dict(institutions.select("fixmedins_code", "admdvs").iter_rows())
    used = set(busy)
    new, cases = [], []
    counter = [0]

    def new_ids(month: str) -> tuple[str, str]:
        counter[0] += 1
        return f"SUP{month.replace('-', '')}{counter[0]:05d}", f"MDSUP{month.replace('-', '')}{counter[0]:05d}"

    def quiet(psn: str, beg: dt.date, end: dt.date, mine: set[str]) -> bool:
        near = stays.filter((pl.col("psn_no") == psn) & ~pl.col("setl_id").is_in(list(mine))
                            & (pl.col("enddate") >= beg - dt.timedelta(days=QUIET_DAYS))
                            & (pl.col("begndate") <= end + dt.timedelta(days=QUIET_DAYS)))
        return near.height == 0

    def stay_line(base: dict, inst: str, beg: dt.date, end: dt.date, scale: int = 1) -> dict:
        month = f"{end:%Y-%m}"
        setl_id, mdtrt_id = new_ids(month)
        t = dt.datetime.combine(end, dt.time(16, 0)) + dt.timedelta(minutes=counter[0] % 60)
        new.append({"base": base["setl_id"], "month": month, "scale": scale,
                    "set": {"setl_id": setl_id, "mdtrt_id": mdtrt_id, "fixmedins_code": inst,
                            "begndate": beg.isoformat(), "enddate": end.isoformat(),
                            "setl_time": t.strftime("%Y-%m-%d %H:%M:%S")}})
        return {"setl_id": setl_id, "month": month}

    def case(rule: str, month: str, ids: list[str], psn: str, inst: str) -> None:
        cases.append({"rule_id": rule.upper(), "month": month, "vola_evid": ",".join(sorted(ids)), "psn_no": psn,
                      "fixmedins_code": inst})
        used.add(psn)

    # split admission: readmitted k = 0…15 days after discharge, 3 days, same institution and diagnosis
    cands = _draw(one_line, "setl_id", seed, 1)
    want = _n(cands.height, "split_admission")
    for b in cands.iter_rows(named=True):
        if sum(c["rule_id"] == "SPLIT_ADMISSION" for c in cases) >= want:
            break
        k = b["__draw"] % 16
        beg = b["enddate"] + dt.timedelta(days=k)
        end = beg + dt.timedelta(days=3)
        if b["psn_no"] in used or end > last_day or not quiet(b["psn_no"], b["begndate"], end, {b["setl_id"]}):
            continue
        n = stay_line(b, b["fixmedins_code"], beg, end)
        case("split_admission", n["month"], [b["setl_id"], n["setl_id"]], b["psn_no"], b["fixmedins_code"])

    # overlapping stays: another hospital of the city, (admission + 1) … (discharge + 1)
    cands = _draw(one_line.filter((pl.col("enddate") - pl.col("begndate")).dt.total_days() >= 2), "setl_id", seed, 2)
    want = _n(cands.height, "overlapping_stays")
    for b in cands.iter_rows(named=True):
        if sum(c["rule_id"] == "OVERLAPPING_STAYS" for c in cases) >= want:
            break
        beg, end = b["begndate"] + dt.timedelta(days=1), b["enddate"] + dt.timedelta(days=1)
        city = hospitals.filter((pl.col("admdvs").str.slice(0, 4) == str(admdvs.get(b["fixmedins_code"]))[:4])
                                & (pl.col("fixmedins_code") != b["fixmedins_code"])).sort("fixmedins_code")
        if b["psn_no"] in used or end > last_day or city.height == 0 \
                or not quiet(b["psn_no"], b["begndate"], end, {b["setl_id"]}):
            continue
        other = city["fixmedins_code"][b["__draw"] % city.height]
        n = stay_line(b, other, beg, end)
        case("overlapping_stays", n["month"], [b["setl_id"], n["setl_id"]], b["psn_no"], other)

    # short stay, high cost: 1 day, 30 days after a one-line stay, amounts × (10 × the level's largest stay)
    stay_cost = (stays.filter(pl.col("orig_setl_id").is_null()).group_by("region", "scheme", "hosp_lv", "month")
                 .agg(pl.col("medfee_sumamt").max().alias("__max"), pl.col("mdtrt_id").n_unique().alias("__n")))
    cands = _draw(one_line, "setl_id", seed, 3)
    want = _n(cands.height, "short_stay_high_cost")
    short: list[tuple] = []  # (region, scheme, level, month) of the planted short stays
    for b in cands.iter_rows(named=True):
        if sum(c["rule_id"] == "SHORT_STAY_HIGH_COST" for c in cases) >= want:
            break
        beg = b["enddate"] + dt.timedelta(days=30)
        end = beg + dt.timedelta(days=1)
        month = f"{end:%Y-%m}"
        level = stay_cost.filter((pl.col("region") == b["region"]) & (pl.col("scheme") == b["scheme"])
                                 & (pl.col("hosp_lv") == b["hosp_lv"]) & (pl.col("month") == month))
        if b["psn_no"] in used or end > last_day or level.height == 0 or level["__n"][0] < 4 \
                or b["medfee_sumamt"] <= 0 or not quiet(b["psn_no"], b["begndate"], end, {b["setl_id"]}):
            continue
        scale = -(-10 * int(level["__max"][0]) // int(b["medfee_sumamt"]))
        n = stay_line(b, b["fixmedins_code"], beg, end, scale)
        short.append((b["region"], b["scheme"], b["hosp_lv"], month))
        case("short_stay_high_cost", n["month"], [n["setl_id"]], b["psn_no"], b["fixmedins_code"])

    # outpatient: days with exactly one general-outpatient line of the person
    op = live.filter((pl.col("med_type") == "11") & (pl.col("ledger") == "outpatient_pool")
                     & (pl.col("fund_pay_sumamt") > 0))
    day_lines = lines.filter(pl.col("ledger").is_in(["outpatient_pool", "two_disease", "chronic"])) \
        .group_by("psn_no", "begndate").len()
    op1 = op.join(day_lines.filter(pl.col("len") == 1), on=["psn_no", "begndate"]).drop("len")

    # duplicate settlement: the same line again, a minute later
    cands = _draw(op1.filter(pl.col("setl_time").dt.date() == pl.col("begndate"))
                  .filter(pl.col("setl_time").dt.hour() < 23), "setl_id", seed, 4)
    want = _n(cands.height, "duplicate_settlement")
    for b in cands.iter_rows(named=True):
        if sum(c["rule_id"] == "DUPLICATE_SETTLEMENT" for c in cases) >= want:
            break
        if b["psn_no"] in used:
            continue
        setl_id, _ = new_ids(b["month"])
        t = b["setl_time"] + dt.timedelta(minutes=1)
        new.append({"base": b["setl_id"], "month": b["month"], "scale": 1,
                    "set": {"setl_id": setl_id, "setl_time": t.strftime("%Y-%m-%d %H:%M:%S")}})
        case("duplicate_settlement", b["month"], [b["setl_id"], setl_id], b["psn_no"], b["fixmedins_code"])

    # same-day visits: two more clinics of the county the same day, an hour apart
    clinics = institutions.filter(pl.col("fixmedins_type") != "pharmacy")
    cands = _draw(op1.filter(pl.col("setl_time").dt.date() == pl.col("begndate"))
                  .filter(pl.col("setl_time").dt.hour() < 21), "setl_id", seed, 5)
    want = _n(cands.height, "same_day_outpatient")
    for b in cands.iter_rows(named=True):
        if sum(c["rule_id"] == "SAME_DAY_OUTPATIENT" for c in cases) >= want:
            break
        county = clinics.filter((pl.col("admdvs") == admdvs.get(b["fixmedins_code"]))
                                & (pl.col("fixmedins_code") != b["fixmedins_code"])).sort("fixmedins_code")
        if b["psn_no"] in used or county.height < 2:
            continue
        ids = [b["setl_id"]]
        for j in (1, 2):
            setl_id, mdtrt_id = new_ids(b["month"])
            t = b["setl_time"] + dt.timedelta(hours=j)
            inst = county["fixmedins_code"][(b["__draw"] + j) % county.height]
            new.append({"base": b["setl_id"], "month": b["month"], "scale": 1,
                        "set": {"setl_id": setl_id, "mdtrt_id": mdtrt_id, "fixmedins_code": inst,
                                "setl_time": t.strftime("%Y-%m-%d %H:%M:%S")}})
            ids.append(setl_id)
        case("same_day_outpatient", b["month"], ids, b["psn_no"], inst)

    # institutions far above their peers: one cluster of 6 hospitals of a level in one county, one month
    cluster = _institution_cluster(live, stays, institutions, used, seed, short, size)
    if cluster is not None:
        month, insts, persons, bases = cluster
        ids: dict[str, list[str]] = {code: [] for code in insts}
        copies: dict[str, int] = {}
        y, m = int(month[:4]), int(month[5:])
        for k, code in enumerate(insts):
            for i in range(size.stays):
                psn = persons[(size.stays * k + i) % len(persons)]
                j = copies[psn["psn_no"]] = copies.get(psn["psn_no"], -1) + 1
                beg = dt.date(y, m, 1 + 4 * j)
                n = stay_line(bases[(size.stays * k + i) % len(bases)], code, beg, beg + dt.timedelta(days=2))
                new[-1]["person"] = psn["setl_id"]
                new[-1]["set"].update({c: _fen_text(v) for c, v in cluster_amounts(k, i).items()})
                ids[code].append(n["setl_id"])
        for rule, code in (("INSTITUTION_OUT_OF_SCOPE_RATIO", insts[0]), ("INSTITUTION_COST_PER_STAY", insts[1])):
            cases.append({"rule_id": rule, "month": month, "vola_evid": ",".join(sorted(ids[code])), "psn_no": None,
                          "fixmedins_code": code})
        used.update(p["psn_no"] for p in persons)
    return new, sorted(cases, key=lambda c: (c["rule_id"], c["vola_evid"]))


def _fen_text(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def cluster_amounts(k: int, i: int) -> dict[str, int]:
    """The five amounts (fen) of the cluster's institution k's stay i (k = 0…5, i = 0…4). Institution k's stays
    cost (10 + k) / 10 of CLUSTER_COST_YUAN on average (3,000, 3,300 … 4,500 yuan), institution 1's 4 times it
    (12,000 yuan); stay i costs (8 + i) / 10 of its institution's average (the five add up to 5 averages). Out of
    scope: 10 + k % of each stay's cost, institution 0's 60 %; three quarters of it out of the catalogue, a quarter
    over the limit; the rest three quarters class A, a quarter class B. So institution 0's out-of-scope share and
    institution 1's cost per stay are far above the others' (tests/test_supervision.py has the scores)."""
    cost_yuan = CLUSTER_COST_YUAN * (40 if k == 1 else 10 + k) // 10 * (8 + i) // 10
    ratio_bp = 6_000 if k == 0 else 1_000 + 100 * k
    total = cost_yuan * 100
    oos = cost_yuan * ratio_bp // 100  # exact: ratio_bp is a multiple of 100
    over = oos // 4
    inscope = total - oos
    cls_b = inscope // 4
    return {"medfee_sumamt": total, "fulamt_ownpay_amt": oos - over, "overlmt_selfpay": over,
            "cls_a_amt": inscope - cls_b, "cls_b_amt": cls_b}


def _institution_cluster(live: pl.DataFrame, stays: pl.DataFrame, institutions: pl.DataFrame, used: set[str],
                         seed: int, short: list[tuple], size: ClusterSize
                         ) -> tuple[str, list[str], list[dict], list[dict]] | None:
    """Where the institution-level cluster goes: (month, 6 hospitals, persons, base stays), the first fitting
    (region, scheme, month, county, level) in drawn order, or None. Fitting: 6 hospitals of the level in the
    county with no stay line of the region and scheme that month; no other institution of the level with 5 stays
    that month (it would be a peer); no stay of at most 1 day at the level that month, natural or planted (the
    cluster's 30 stays would move its short-stay cut); at least 5 quiet persons (a line that month, no stay within
    QUIET_DAYS of it, no case); a one-line stay of the region and scheme in its own city to copy the row from."""
    hospitals = institutions.filter(pl.col("fixmedins_type") == "hospital").with_columns(
        pl.col("dedc_hosp_lv").cast(pl.String).alias("__lv"), pl.col("admdvs").cast(pl.String).alias("__county"))
    city_of = dict(hospitals.select("fixmedins_code", pl.col("__county").str.slice(0, 4)).iter_rows())
    current = live.filter(pl.col("orig_setl_id").is_null())
    # persons whose benefit stops or waits on some date (no fund pays then): not sure to be covered that month
    stopped = (live.filter(pl.col("reason_codes").str.contains(STOPPED))["psn_no"].unique().implode()
               if "reason_codes" in live.columns else pl.Series([], dtype=pl.String).implode())
    keys = []
    for (region, scheme, month), part in current.group_by("region", "scheme", "month"):
        if region is None or scheme is None or month is None:
            continue
        city = part["psn_no"].str.slice(0, 4).mode().sort()[0]
        for (county, lv), h in hospitals.filter(pl.col("__county").str.slice(0, 4) == city).group_by("__county", "__lv"):
            if h.height >= size.institutions:
                keys.append({"key": f"{region}|{scheme}|{month}|{county}|{lv}"})
    if not keys:
        return None
    for key in _draw(pl.DataFrame(keys), "key", seed, 6)["key"]:
        region, scheme, month, county, lv = key.split("|")
        y, m = int(month[:4]), int(month[5:])
        first = dt.date(y, m, 1)
        last = dt.date(y + (m == 12), m % 12 + 1, 1) - dt.timedelta(days=1)
        here = stays.filter((pl.col("region") == region) & (pl.col("scheme") == scheme) & (pl.col("month") == month))
        per_inst = here.group_by("fixmedins_code").agg(pl.col("mdtrt_id").n_unique().alias("n"))
        level = here.filter(pl.col("hosp_lv").cast(pl.String) == lv)
        if (level.filter((pl.col("enddate") - pl.col("begndate")).dt.total_days() <= 1).height
                or (region, scheme, lv, month) in short
                or per_inst.filter(pl.col("fixmedins_code").is_in(level["fixmedins_code"].implode())
                                   & (pl.col("n") >= size.stays)).height):
            continue
        free = _draw(hospitals.filter((pl.col("__county") == county) & (pl.col("__lv") == lv)
                                      & ~pl.col("fixmedins_code").is_in(here["fixmedins_code"].implode())),
                     "fixmedins_code", seed, 7)
        if free.height < size.institutions:
            continue
        near = stays.filter((pl.col("enddate") >= first - dt.timedelta(days=QUIET_DAYS))
                            & (pl.col("begndate") <= last + dt.timedelta(days=QUIET_DAYS)))["psn_no"].unique()
        persons = _draw(current.filter((pl.col("region") == region) & (pl.col("scheme") == scheme)
                                       & (pl.col("month") == month) & ~pl.col("psn_no").is_in(near.implode())
                                       & ~pl.col("psn_no").is_in(list(used)) & ~pl.col("psn_no").is_in(stopped))
                        .sort("setl_time", "setl_id").unique("psn_no", keep="first"), "psn_no", seed, 8)
        bases = _draw(current.filter((pl.col("region") == region) & (pl.col("scheme") == scheme)
                                     & (pl.col("med_type") == "21") & (pl.col("ledger") == "inpatient"))
                      .join(live.group_by("mdtrt_id").len(), on="mdtrt_id").filter(pl.col("len") == 1)
                      .filter(pl.col("fixmedins_code").replace_strict(city_of, default=None) == county[:4]),
                      "setl_id", seed, 9)
        if persons.height < size.stays or bases.height == 0:
            continue
        n_persons = min(persons.height, size.institutions * size.stays)
        return (month, free["fixmedins_code"].head(size.institutions).to_list(),
                persons.head(n_persons).to_dicts(), bases.to_dicts())
    return None
