"""Fund-supervision rules (transforms/supervision.py, issue 17): a hand-built case just inside and just outside
each threshold of policies/suizhou/resident/supervision.yaml (the defaults: 15 days, exact duplicates, 1 day of
overlap, 3 institutions a day, 0–1-day stays scoring 3.5 with scale 0.6745, peers by level scoring 3.5)."""

from __future__ import annotations

import datetime as dt
import itertools

import polars as pl
import pytest

from flows.policies import load_policies
from transforms.supervision import LINE_COLUMNS, supervise

ON = dt.date(2025, 3, 31)
_ids = itertools.count(1)


def line(psn="P1", inst="H1", beg="2025-03-01", end="2025-03-05", ledger="inpatient", cost=100_000, fund=60_000,
         dise="I10.x00", lv="2", month="2025-03", oos=0, mdtrt=None, setl=None, orig=None, med_type=None,
         hour=10) -> dict:
    n = next(_ids)
    setl = setl or f"S{n:05d}"
    return {"setl_id": setl, "mdtrt_id": mdtrt or f"M{n:05d}", "psn_no": psn, "region": "suizhou",
            "scheme": "resident", "month": month, "fixmedins_code": inst, "hosp_lv": lv,
            "med_type": med_type or ("21" if ledger == "inpatient" else "11"), "ledger": ledger,
            "begndate": dt.date.fromisoformat(beg), "enddate": dt.date.fromisoformat(end),
            "setl_time": dt.datetime.combine(dt.date.fromisoformat(end), dt.time(hour, n % 60)),
            "dise_codg": dise, "orig_setl_id": orig, "medfee_sumamt": cost, "fulamt_ownpay_amt": oos,
            "overlmt_selfpay": 0, "cls_a_amt": cost - oos, "cls_b_amt": 0, "fund_pay_sumamt": fund}


def frame(rows: list[dict]) -> pl.DataFrame:
    schema = {"begndate": pl.Date, "enddate": pl.Date, "setl_time": pl.Datetime("us"), "orig_setl_id": pl.String,
              **{c: pl.Int64 for c in ("medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "cls_a_amt",
                                       "cls_b_amt", "fund_pay_sumamt")}}
    return pl.DataFrame(rows, schema_overrides=schema).select(LINE_COLUMNS)


@pytest.fixture(scope="module")
def pol():
    return load_policies()


def run(pol, current: list[dict], history: list[dict] | None = None) -> pl.DataFrame:
    return supervise(frame(current), frame(history) if history else None, pol, ON)


def rules(v: pl.DataFrame) -> list[str]:
    return v["rule_id"].to_list()


# ---------------------------------------------------------------- split admission (15 days, same ICD-10 category)

def test_split_admission_inside_and_outside_15_days(pol):
    first = line(beg="2025-02-20", end="2025-03-01", month="2025-03", setl="A1")
    # readmitted 2025-03-16: 16 − 1 = 15 days after discharge, I10 / I10 → inside (≤ 15)
    v = run(pol, [first, line(beg="2025-03-16", end="2025-03-20", fund=45_678, setl="A2", dise="I10.x05")])
    assert rules(v) == ["SPLIT_ADMISSION"]
    assert v["vola_evid"].to_list() == ["A1,A2"]
    assert v["vola_amt"].to_list() == [45_678]  # the readmission's fund payment, 456.78 yuan
    assert v["sev_deg"].to_list() == ["2"] and v["rule_name"].to_list() == ["分解住院"]
    # readmitted 2025-03-17: 16 days → outside
    assert run(pol, [first, line(beg="2025-03-17", end="2025-03-20")]).height == 0
    # 15 days but another category (I10 vs I11) or another institution → nothing
    assert run(pol, [first, line(beg="2025-03-16", end="2025-03-20", dise="I11.900")]).height == 0
    assert run(pol, [first, line(beg="2025-03-16", end="2025-03-20", inst="H2")]).height == 0


def test_split_admission_looks_back_into_earlier_months_and_reports_only_new_findings(pol):
    earlier = line(beg="2025-02-10", end="2025-02-25", month="2025-02", setl="B1")
    # discharged 02-25, readmitted 03-05: 28 − 25 + 5 = 8 days → found in March with February's stay as evidence
    v = run(pol, [line(beg="2025-03-05", end="2025-03-08", setl="B2")], [earlier])
    assert v["vola_evid"].to_list() == ["B1,B2"]
    # both stays in earlier months: February's run reported it already; March reports nothing
    old = [earlier, line(beg="2025-03-05", end="2025-03-08", month="2025-02", setl="B3")]
    assert run(pol, [line(psn="P9", ledger="outpatient_pool", beg="2025-03-02", end="2025-03-02")], old).height == 0


# ---------------------------------------------------------------- duplicate settlement (exact)

def test_duplicate_settlement_exact_match_only(pol):
    a = line(ledger="outpatient_pool", beg="2025-03-03", end="2025-03-03", cost=12_345, fund=6_000, setl="D1", hour=9)
    b = {**a, "setl_id": "D2", "setl_time": a["setl_time"] + dt.timedelta(hours=2), "fund_pay_sumamt": 6_100}
    v = run(pol, [a, b])
    assert rules(v) == ["DUPLICATE_SETTLEMENT"]
    assert v["vola_evid"].to_list() == ["D1,D2"]
    assert v["vola_amt"].to_list() == [6_100]  # every copy but the first: D2's 61.00 yuan
    # one fen more on the second copy (total 123.46, class A 123.46): not the same settlement
    c = {**b, "medfee_sumamt": 12_346, "cls_a_amt": 12_346}
    assert run(pol, [a, c]).height == 0


def test_reversed_copy_is_no_evidence(pol):
    a = line(ledger="outpatient_pool", beg="2025-03-03", end="2025-03-03", setl="R1")
    b = {**a, "setl_id": "R2"}
    rev = {**b, "setl_id": "R3", "orig_setl_id": "R2", "medfee_sumamt": -b["medfee_sumamt"],
           "cls_a_amt": -b["cls_a_amt"], "fund_pay_sumamt": -b["fund_pay_sumamt"]}
    assert run(pol, [a, b, rev]).height == 0


# ---------------------------------------------------------------- overlapping stays (1 day)

def test_overlapping_stays_one_day_inside_same_day_transfer_outside(pol):
    a = line(inst="H1", beg="2025-03-01", end="2025-03-05", setl="O1")
    # H2 from 03-04: min(05, 10) − max(01, 04) = 1 day → inside
    v = run(pol, [a, line(inst="H2", beg="2025-03-04", end="2025-03-10", fund=77_700, setl="O2")])
    assert rules(v) == ["OVERLAPPING_STAYS"]
    assert v["vola_evid"].to_list() == ["O1,O2"] and v["fixmedins_code"].to_list() == ["H2"]
    assert v["vola_amt"].to_list() == [77_700]  # the later-admitted stay's fund payment
    # H2 from 03-05 (discharged and admitted the same day, a transfer): 0 days → outside
    assert run(pol, [a, line(inst="H2", beg="2025-03-05", end="2025-03-10")]).height == 0


# ---------------------------------------------------------------- same-day outpatient (3 institutions)

def test_same_day_outpatient_three_institutions_inside_two_outside(pol):
    day = {"ledger": "outpatient_pool", "beg": "2025-03-12", "end": "2025-03-12", "fund": 1_000}
    two = [line(inst="H1", setl="V1", hour=8, **day), line(inst="H2", setl="V2", hour=9, **day),
           line(inst="H2", setl="V4", hour=10, cost=2_000, **day)]  # not a copy of V2
    assert run(pol, two).height == 0  # two institutions (three visits) → outside
    v = run(pol, [*two, line(inst="H3", setl="V3", hour=11, **day)])
    assert rules(v) == ["SAME_DAY_OUTPATIENT"]
    assert v["vola_evid"].to_list() == ["V1,V2,V3,V4"]
    assert v["vola_amt"].to_list() == [4_000]  # four lines × 10.00 yuan
    assert v["fixmedins_code"].to_list() == ["H3"]  # the last settled


# ---------------------------------------------------------------- short stay, high cost (score 3.5)

PEER_COSTS = [100_000, 110_000, 120_000, 130_000, 140_000, 150_000]


def _short_stay(pol, cost: int, end: str = "2025-03-21") -> pl.DataFrame:
    peers = [line(psn=f"Q{i}", inst=f"H{i}", beg="2025-03-01", end="2025-03-08", cost=c)
             for i, c in enumerate(PEER_COSTS)]
    return run(pol, [*peers, line(psn="X", inst="HX", beg="2025-03-20", end=end, cost=cost, fund=99_000, setl="X1")])


def test_short_stay_high_cost_score_inside_and_outside(pol):
    # 7 level-2 stays: median 130,000 fen; deviations 30k, 20k, 10k, 0, 10k, 20k, X − 130k → MAD 20,000.
    # score = 0.6745 × (X − 130,000) / 20,000 ≥ 3.5 ⇔ X ≥ 130,000 + 103,780.57 = 233,780.57 fen
    v = _short_stay(pol, 233_781)  # score 3.500014 → inside
    assert rules(v) == ["SHORT_STAY_HIGH_COST"]
    assert v["vola_evid"].to_list() == ["X1"] and v["vola_amt"].to_list() == [99_000]
    assert _short_stay(pol, 233_780).height == 0  # score 3.499980 → outside
    # the same cost over a 2-day stay (03-20 → 03-22): longer than 1 day → outside
    assert _short_stay(pol, 233_781, end="2025-03-22").height == 0


# ---------------------------------------------------------------- institutions against their peers (score 3.5)

def _institutions(pol, target_oos_per_stay: int = 0, target_cost: int = 100_000,
                  peers: list[tuple[int, int]] | None = None) -> pl.DataFrame:
    """Five level-2 institutions with 5 five-day stays each; peers as (out-of-scope per stay, cost per stay)."""
    peers = peers or [(0, 100_000)] * 4
    rows = []
    for k, (oos, cost) in enumerate([*peers, (target_oos_per_stay, target_cost)]):
        for j in range(5):
            rows.append(line(psn=f"I{k}{j}", inst=f"H{k}" if k < len(peers) else "HT", beg="2025-03-01",
                             end="2025-03-06", cost=cost, oos=oos, fund=cost // 2, setl=f"I{k}{j}"))
    return run(pol, rows)


def test_institution_out_of_scope_ratio_inside_and_outside(pol):
    # peers' ratios 0.10, 0.12, 0.14, 0.16 (10,000 … 16,000 of 100,000 fen per stay); target T:
    # median 0.14, deviations 0.04, 0.02, 0, 0.02, T − 0.14 → MAD 0.02; 0.6745 × (T − 0.14) / 0.02 ≥ 3.5
    # ⇔ T ≥ 0.14 + 0.103780 = 0.243780
    peers = [(10_000, 100_000), (12_000, 100_000), (14_000, 100_000), (16_000, 100_000)]
    v = _institutions(pol, 24_380, peers=peers)  # T = 24,380 / 100,000 = 0.2438 → inside
    assert rules(v) == ["INSTITUTION_OUT_OF_SCOPE_RATIO"]
    assert v["fixmedins_code"].to_list() == ["HT"] and v["evid_count"].to_list() == [5]
    assert v["vola_amt"].to_list() == [51_900]  # 121,900 − 0.14 × 500,000 = 51,900 fen above the peer median
    assert _institutions(pol, 24_370, peers=peers).height == 0  # T = 0.2437 → outside


def test_institution_cost_per_stay_inside_and_outside(pol):
    # peers' averages 100,000 … 130,000; median 120,000, deviations 20k, 10k, 0, 10k, big → MAD 10,000;
    # 0.6745 × (A − 120,000) / 10,000 ≥ 3.5 ⇔ A ≥ 171,890.29 fen
    peers = [(0, 100_000), (0, 110_000), (0, 120_000), (0, 130_000)]
    v = _institutions(pol, target_cost=171_891, peers=peers)
    assert rules(v) == ["INSTITUTION_COST_PER_STAY"]
    assert v["vola_amt"].to_list() == [259_455]  # 5 × 171,891 − 5 × 120,000
    assert _institutions(pol, target_cost=171_890, peers=peers).height == 0


def test_the_samples_planted_institution_cluster_finds_exactly_its_two_cases(pol):
    # transforms/planted.py's cluster: 6 hospitals of level 1 × 5 two-day stays of 5 persons, amounts of
    # cluster_amounts (they add up: total = out of catalogue + over limit + class A + class B)
    from transforms.planted import cluster_amounts
    rows = []
    for k in range(6):
        for i in range(5):
            a = cluster_amounts(k, i)
            assert a["medfee_sumamt"] == a["fulamt_ownpay_amt"] + a["overlmt_selfpay"] + a["cls_a_amt"] + a["cls_b_amt"]
            r = line(psn=f"Q{i}", inst=f"C{k}", beg=f"2025-03-{1 + 4 * k:02d}", end=f"2025-03-{3 + 4 * k:02d}",
                     lv="1", setl=f"C{k}{i}", cost=a["medfee_sumamt"], fund=a["medfee_sumamt"] // 2)
            rows.append({**r, **a})
    v = run(pol, rows)
    assert rules(v) == ["INSTITUTION_COST_PER_STAY", "INSTITUTION_OUT_OF_SCOPE_RATIO"]
    assert v["fixmedins_code"].to_list() == ["C1", "C0"]
    assert v["vola_evid"].to_list() == ["C10,C11,C12,C13,C14", "C00,C01,C02,C03,C04"]
    # cost per stay (yuan) 3,000, 12,000, 3,600, 3,900, 4,200, 4,500: median (3,900 + 4,200) / 2 = 4,050;
    # deviations 1,050, 7,950, 450, 150, 150, 450 → MAD (450 + 450) / 2 = 450;
    # C1: 0.6745 × 7,950 / 450 = 11.92 (≥ 3.5); the next, C5: 0.6745 × 450 / 450 = 0.67
    # at stake: 6,000,000 − 405,000 × 5 = 3,975,000 fen
    # out-of-scope share 0.60, 0.11, 0.12, 0.13, 0.14, 0.15: median 0.135; deviations 0.465, 0.025, 0.015, 0.005,
    # 0.005, 0.015 → MAD 0.015; C0: 0.6745 × 0.465 / 0.015 = 20.91; the next, C5: 0.6745 × 0.015 / 0.015 = 0.67
    # at stake: 900,000 − 0.135 × 1,500,000 = 697,500 fen
    assert v["vola_amt"].to_list() == [3_975_000, 697_500]
    assert [c.rsplit("score ", 1)[1] for c in v["vola_cont"]] == ["11.92", "20.91"]
    # no other rule: the stays last 2 days (not short), each person's are at 6 institutions, 4 days apart


# ---------------------------------------------------------------- switches

class _Switched:
    """The real policies with one rule switched off (a region's `enabled: false`)."""

    def __init__(self, pol, rule: str):
        self.pol, self.rule = pol, rule

    def value(self, region, scheme, name, on):
        v = self.pol.value(region, scheme, name, on)
        return {**v, "enabled": False} if name == f"supervision.{self.rule}" else v


def test_a_rule_switched_off_finds_nothing(pol):
    a = line(inst="H1", beg="2025-03-01", end="2025-03-05")
    b = line(inst="H2", beg="2025-03-04", end="2025-03-10")
    assert run(pol, [a, b]).height == 1
    assert supervise(frame([a, b]), None, _Switched(pol, "overlapping_stays"), ON).height == 0


# ---------------------------------------------------------------- the sample's cleaning of chance findings

def test_chance_findings_are_taken_out_by_a_minimal_edit(pol):
    from transforms.planted import clean

    inst = pl.DataFrame({"fixmedins_code": ["H1", "H2", "H3", "H4"], "fixmedins_type": ["hospital"] * 4,
                         "admdvs": ["421302"] * 4})
    a = line(inst="H1", beg="2025-03-01", end="2025-03-05", setl="C1", mdtrt="M1")
    b = line(inst="H2", beg="2025-03-04", end="2025-03-10", setl="C2", mdtrt="M2")
    day = {"psn": "P2", "ledger": "outpatient_pool", "beg": "2025-03-12", "end": "2025-03-12"}
    visits = [line(inst=f"H{k}", setl=f"V{k}", hour=7 + k, cost=1_000 * k, **day) for k in (1, 2, 3)]
    lines = frame([a, b, *visits])
    found = supervise(lines, None, pol, ON)
    assert rules(found) == ["OVERLAPPING_STAYS", "SAME_DAY_OUTPATIENT"]
    edits = clean(lines, found, inst)
    # the later stay (C2 at H2) moves to the earlier stay's H1; the third clinic of the day (V3 at H3) to H1
    assert edits == {"C2": {"fixmedins_code": "H1"}, "V3": {"fixmedins_code": "H1"}}
    edited = lines.with_columns(pl.col("setl_id").replace_strict({k: v["fixmedins_code"] for k, v in edits.items()},
                                                                 default=None).fill_null(pl.col("fixmedins_code"))
                                .alias("fixmedins_code"))
    assert supervise(edited, None, pol, ON).height == 0
