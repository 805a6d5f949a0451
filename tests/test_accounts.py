"""Personal accounts and family mutual aid (POLICY §4.2, §4.5, §5 E1/E2/E5/E8; A-13, A-14, A-24).

The pass `transforms.accounts.apply_accounts` is tested on engine-shaped frames whose psn_part_amt
is set directly (the share the funds left to the person), and held equal to the plain walk of
`transforms/reference/accounts.py` on random family groups — mutual pairs, chains, several
authorisers, balances running dry, reversals — in one run and month by month.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flows.policies import MissingParameter, load_policies
from tests.builders import INST_SCHEMA, examples, line, lines, person, registers, reversal_of, yuan
from transforms.accounts import LEDGER_SCHEMA, AccountInputs, apply_accounts, monthly_credits, start_state
from transforms.enrich import enrich
from transforms.reference.accounts import accounts_reference

POL = load_policies()
D = dt.date
XY = "420602"
# Xiangyang institutions of these tests (codes of their own): levels 1/2, a pharmacy; WH1 (Wuhan) is out of the city
MY_INSTITUTIONS = [("XA1", "inst XA1", "hospital", "1", "township", XY, False),
                   ("XA2", "inst XA2", "hospital", "2", "hospital", XY, False),
                   ("XA3", "inst XA3", "hospital", "3", "hospital", "420606", False),
                   ("XAP", "inst XAP", "pharmacy", None, "pharmacy", XY, False)]
EMP_SCHEMA = {"psn_no": pl.String, "psn_type": pl.String, "flexible": pl.Boolean, "contrib_mode": pl.String,
              "contrib_base": pl.Int64, "retire_kind": pl.String, "benefit": pl.String, "begndate": pl.Date,
              "enddate": pl.Date}
BIND_SCHEMA = {"authoriser_psn_no": pl.String, "user_psn_no": pl.String, "relation": pl.String,
               "begndate": pl.Date, "enddate": pl.Date}
BAL_SCHEMA = {"psn_no": pl.String, "as_of": pl.Date, "balc": pl.Int64}


def regs(persons, employment=(), bindings=(), balances=()) -> dict[str, pl.DataFrame]:
    r = registers(persons)
    mine = pl.DataFrame(MY_INSTITUTIONS, schema=INST_SCHEMA, orient="row")
    r["institutions"] = pl.concat([r["institutions"].filter(~pl.col("fixmedins_code").is_in(mine["fixmedins_code"].implode())),
                                   mine])
    r["employment"] = pl.DataFrame(list(employment), schema=EMP_SCHEMA, orient="row")
    r["family_bindings"] = pl.DataFrame(list(bindings), schema=BIND_SCHEMA, orient="row")
    r["account_balances"] = pl.DataFrame(list(balances), schema=BAL_SCHEMA, orient="row")
    return r


LONG_AGO = D(2010, 1, 1)
BORN = D(1995, 6, 1)


def emp(psn, psn_type="11", mode="combined", base=None, kind=None, benefit="normal", begin=LONG_AGO, end=None,
        flexible=False):
    return (psn, psn_type, flexible, mode, base, kind, benefit, begin, end)


def frame(rows: list[dict], r: dict, parts: dict[str, int] | None = None, **flags) -> pl.DataFrame:
    """Engine-shaped lines: enriched, psn_part_amt = the given share (default: the whole cost), funds computed."""
    df = enrich(lines(rows), r).with_columns(pl.col("orig_setl_id").is_not_null().alias("is_reversal"))
    part = pl.col("medfee_sumamt")
    if parts:
        part = pl.col("setl_id").replace_strict(parts, default=pl.col("medfee_sumamt"), return_dtype=pl.Int64)
    df = df.with_columns(part.alias("psn_part_amt"), pl.lit(False).alias("rule_pending"))
    for k, v in flags.items():
        df = df.with_columns(pl.col("setl_id").replace_strict(v, default=None, return_dtype=pl.Boolean).alias(k))
    return df


def run(df, r, period=None, **kw):
    return apply_accounts(df, r, POL, AccountInputs(period=period, **kw))


def amounts(out: pl.DataFrame) -> dict[str, tuple[int, int, int]]:
    return {s: (a, m, c) for s, a, m, c in out.select("setl_id", "acct_pay", "acct_mulaid_pay", "psn_cash_pay").iter_rows()}


def balance(res, psn) -> int:
    return res.balances.filter(pl.col("psn_no") == psn)["balc"].item()


YEAR25 = (D(2025, 1, 1), D(2025, 12, 31))
RETIRED = emp("R", "12", mode=None, kind="normal", begin=D(2010, 1, 1))


# --------------------------------------------------------------------------- E1, E2, E8 (POLICY §5)


@pytest.mark.parametrize("inst, part, paid, left", [
    ("XA1", yuan(720), yuan(720), yuan(420)),  # E1: pooling 1,280 of 2,000 → account 720, balance 420
    ("XA2", yuan(880), yuan(880), yuan(260)),  # E2 level 2: pooling 1,120
    ("XA3", yuan(1040), yuan(1040), yuan(100)),  # E2 level 3: pooling 960
    ("XA1", yuan("673.08"), yuan("673.08"), yuan("466.92")),  # E8: 1,765.40 − pooling 1,092.32
])
def test_retired_employee_examples(inst, part, paid, left):
    r = regs([person("R", admdvs=XY, insutype="310")], [RETIRED], balances=[("R", D(2024, 12, 31), 0)])
    visit = line("R", "2025-12-15", inst, med_type="11", a=yuan(2000), insutype="310")
    out, res = run(frame([visit], r, {visit["setl_id"]: part}), r, period=(D(2025, 12, 1), D(2025, 12, 31)))
    assert amounts(out)[visit["setl_id"]] == (paid, 0, 0)
    assert balance(res, "R") == left
    credits = res.ledger.filter(pl.col("kind") == "credit")
    assert credits.height == 12 and credits["amount"].sum() == yuan(1140)  # 95 on the 1st of each month, A-14
    own = res.ledger.filter(pl.col("kind") == "own_payment").row(0, named=True)
    assert (own["amount"], own["balc_after"], own["setl_id"]) == (-paid, left, visit["setl_id"])


def test_e8_before_the_reform_pays_the_whole_cost_from_4_percent_credits():
    """E8 before the reform: 12 credits of 4% × 3,950 = 158 → 1,896; the account pays 1,765.40, 130.60 left."""
    r = regs([person("R", admdvs=XY, insutype="310")], [emp("R", "12", mode=None, base=yuan(3950), kind="normal")],
             balances=[("R", D(2021, 12, 31), 0)])
    visit = line("R", "2022-12-15", "XA1", med_type="11", a=yuan("1765.40"), insutype="310")
    out, res = run(frame([visit], r), r, period=(D(2022, 12, 1), D(2022, 12, 31)))
    assert amounts(out)[visit["setl_id"]] == (yuan("1765.40"), 0, 0)
    assert balance(res, "R") == yuan("130.60")


def test_balance_never_goes_below_zero_and_cash_pays_the_rest():
    r = regs([person("R", admdvs=XY, insutype="310")], [RETIRED], balances=[("R", D(2024, 12, 31), yuan(100))])
    a = line("R", "2025-01-10", "XA1", med_type="11", a=yuan(150), insutype="310")
    b = line("R", "2025-01-20", "XA1", med_type="11", a=yuan(80), insutype="310")
    out, res = run(frame([a, b], r), r)
    assert amounts(out) == {a["setl_id"]: (yuan(150), 0, 0), b["setl_id"]: (yuan(45), 0, yuan(35))}
    assert balance(res, "R") == 0


# --------------------------------------------------------------------------- credits (§4.2, E5, A-14, A-24)


def credits_of(employment, birth=BORN, period=YEAR25, opening=None):
    p = person("E", admdvs=XY, insutype="310")
    p["brdy"] = birth
    r = regs([p], employment, balances=[opening] if opening else [])
    state = start_state(r, None, period[0], POL)
    return monthly_credits(r, POL, state, period)


def test_e5_in_service_credit_before_and_after_the_reform():
    c = credits_of([emp("E", base=yuan(3450))], period=(D(2022, 11, 1), D(2023, 1, 31)))
    assert c["amount"].to_list() == [yuan("110.40"), yuan("110.40"), yuan(69)]  # 3.2% → 2% from the 2023-01-01 credit
    assert c["ts"].to_list() == [dt.datetime(2022, 11, 1), dt.datetime(2022, 12, 1), dt.datetime(2023, 1, 1)]
    older = credits_of([emp("E", base=yuan(3450))], birth=D(1977, 6, 1), period=(D(2022, 5, 1), D(2022, 6, 30)))
    assert older["amount"].to_list() == [yuan("110.40"), yuan("131.10")]  # 45 on 2022-06-01: 3.8%


@pytest.mark.parametrize("row, expected", [
    (emp("E", mode="pooling_only", base=yuan(3450)), 0),  # pooling-only: nothing
    (emp("E", "12", mode=None, kind="normal", begin=D(2023, 1, 15)), yuan(95)),
    (emp("E", "12", mode=None, kind="backpay_pooling_only", begin=D(2023, 1, 15)), 0),
    (emp("E", "12", mode=None, kind="backpay_mixed", begin=D(2023, 1, 15)), yuan(95)),
    (emp("E", "12", mode=None, kind="backpay_pooling_only", begin=D(2020, 3, 1)), yuan(95)),  # retired by the cutoff
    (emp("E", "12", mode="combined", base=yuan(5000), kind="contributing", begin=D(2023, 1, 15)), yuan(100)),
    (emp("E", "12", mode="pooling_only", base=yuan(5000), kind="contributing", begin=D(2023, 1, 15)), 0),
    # §4.2 rev. 3: still contributing, retired before the cutoff: 2% of own base, not 95: 5,000 × 2% = 100.00
    (emp("E", "12", mode="combined", base=yuan(5000), kind="contributing", begin=D(2021, 6, 1)), yuan(100)),
    # …and 3,450 × 2% = 69.00 (not the 95 of the retired-by-2022-12-31 row)
    (emp("E", "12", mode="combined", base=yuan(3450), kind="contributing", begin=D(2022, 12, 31)), yuan(69)),
    (emp("E", "12", mode="pooling_only", base=yuan(5000), kind="contributing", begin=D(2020, 3, 1)), 0),  # nothing
    (emp("E", base=None, flexible=True), yuan(69)),  # flexible worker without a base: the single base 3,450
])
def test_credit_by_kind(row, expected):
    c = credits_of([row], period=(D(2023, 3, 1), D(2023, 3, 31)))
    assert c["amount"].sum() == expected


def test_a24_no_credit_for_a_month_that_starts_inside_a_suspension():
    rows = [emp("E", base=yuan(3450), end=D(2025, 2, 14)),
            emp("E", base=yuan(3450), benefit="suspended", begin=D(2025, 2, 15), end=D(2025, 4, 1)),
            emp("E", base=yuan(3450), benefit="arrears", begin=D(2025, 4, 2), end=D(2025, 5, 31)),
            emp("E", base=yuan(3450), benefit="unverified", begin=D(2025, 6, 1), end=D(2025, 6, 30)),
            emp("E", base=yuan(3450), benefit="terminated", begin=D(2025, 7, 1))]
    c = credits_of(rows, period=(D(2025, 1, 1), D(2025, 8, 31)))
    # Jan, Feb (starts before the suspension), Jun (unverified is not a no-credit state); not Mar–May, Jul–Aug
    assert c["ts"].dt.month().to_list() == [1, 2, 6]


def test_missing_flexible_base_stops_with_the_parameter_named():
    with pytest.raises(MissingParameter, match="contributions.flexible_base"):
        credits_of([emp("E", base=None, flexible=True)], period=(D(2023, 7, 1), D(2023, 7, 31)))


def test_credits_resume_after_the_state_as_of():
    """A-14: the opening balance is the balance at the end of as_of; credits land on the month starts after it."""
    c = credits_of([RETIRED[:0] + ("E", "12", False, None, None, "normal", "normal", D(2010, 1, 1), None)],
                   opening=("E", D(2025, 3, 1), yuan(10)), period=(D(2025, 1, 1), D(2025, 5, 31)))
    assert c["ts"].dt.month().to_list() == [4, 5]


def test_balances_carry_across_months_and_years():
    r = regs([person("R", admdvs=XY, insutype="310")], [RETIRED], balances=[("R", D(2024, 12, 31), yuan(10))])
    dec = line("R", "2025-12-20", "XA1", med_type="11", a=yuan(50), insutype="310")
    jan = line("R", "2026-01-05", "XA1", med_type="11", a=yuan(500), insutype="310")
    _, first = run(frame([dec], r), r, period=YEAR25)
    assert balance(first, "R") == yuan(10 + 1140 - 50)
    out, second = run(frame([jan], r), r, period=(D(2026, 1, 1), D(2026, 1, 31)), balances=first.balances)
    assert amounts(out)[jan["setl_id"]] == (yuan(500), 0, 0)
    assert balance(second, "R") == yuan(10 + 1140 - 50 + 95 - 500)


# --------------------------------------------------------------------------- family mutual aid (§4.5, A-13)


def family(bindings, balances, more=()):
    persons = [person(p, admdvs=XY, insutype="310") for p in ("A", "B", "C")]
    persons += [person("U", admdvs=XY, insutype="390")]  # a resident user: empty account of its own
    persons += [person(p, admdvs=XY, insutype="310") for p in more]
    return regs(persons, [], bindings, [(p, D(2024, 12, 31), b) for p, b in balances.items()])


def bind(a, u, begin=None, end=None, relation="child"):
    return (a, u, relation, begin or D(2024, 1, 1), end)


def test_user_shortfall_is_drawn_from_authorisers_in_binding_date_order():
    r = family([bind("B", "U", D(2024, 5, 1)), bind("A", "U", D(2024, 2, 1))], {"A": yuan(30), "B": yuan(100)})
    v = line("U", "2025-03-03", "XA1", med_type="11", a=yuan(50))
    out, res = run(frame([v], r), r)
    assert amounts(out)[v["setl_id"]] == (0, yuan(50), 0)
    aid = res.ledger.filter(pl.col("kind") == "mulaid_payment_out").sort("ts", "psn_no")
    assert aid.select("psn_no", "amount", "balc_after", "user_psn_no").rows() == [
        ("A", -yuan(30), 0, "U"), ("B", -yuan(20), yuan(80), "U")]  # A bound first
    assert "family accounts pay 50.00 (A 30.00, B 20.00" in out["acct_note"][0]


def test_own_account_first_then_authoriser_and_cash():
    r = family([bind("A", "B")], {"A": yuan(10), "B": yuan(15)})
    v = line("B", "2025-03-03", "XA1", med_type="11", a=yuan(40), insutype="310")
    out, _ = run(frame([v], r), r)
    assert amounts(out)[v["setl_id"]] == (yuan(15), yuan(10), yuan(15))


def test_no_mutual_aid_out_of_the_city_nor_outside_a_binding_nor_on_unlisted_ledgers():
    r = family([bind("A", "U", D(2025, 1, 1), D(2025, 5, 31))], {"A": yuan(1000)})
    out_city = line("U", "2025-03-03", "WH1", med_type="11", a=yuan(50))
    expired = line("U", "2025-06-03", "XA1", med_type="11", a=yuan(50))
    pharmacy = line("U", "2025-03-04", "XAP", med_type="41", a=yuan(50))  # residents: not a pharmacy use (§4.5)
    ok = line("U", "2025-03-05", "XA1", med_type="11", a=yuan(50))
    out, res = run(frame([out_city, expired, pharmacy, ok], r), r)
    got = amounts(out)
    assert got[out_city["setl_id"]] == got[expired["setl_id"]] == got[pharmacy["setl_id"]] == (0, 0, yuan(50))
    assert got[ok["setl_id"]] == (0, yuan(50), 0)
    assert balance(res, "A") == yuan(950)


def test_no_account_where_not_allowed_or_funds_pending():
    r = family([bind("A", "B")], {"A": yuan(100), "B": yuan(100)})
    waiting = line("B", "2025-03-03", "XA1", med_type="11", a=yuan(50), insutype="310")
    pending = line("B", "2025-03-04", "XA1", med_type="11", a=yuan(50), insutype="310")
    df = frame([waiting, pending], r, acct_allowed={waiting["setl_id"]: False})
    df = df.with_columns((pl.col("setl_id") == pending["setl_id"]).alias("rule_pending"))
    out, res = run(df, r)
    assert amounts(out) == {waiting["setl_id"]: (0, 0, yuan(50)), pending["setl_id"]: (0, 0, yuan(50))}
    assert res.ledger.filter(pl.col("kind") != "credit").height == 0


def test_mutual_pair_walks_in_time_order():
    """A ↔ B: B's draw on A leaves A short for A's own visit, whose shortfall then draws on B."""
    r = family([bind("A", "B", relation="spouse"), bind("B", "A", relation="spouse")], {"A": yuan(100), "B": yuan(30)})
    b1 = line("B", "2025-03-03 09:00:00", "XA1", med_type="11", a=yuan(90), insutype="310")
    a1 = line("A", "2025-03-03 10:00:00", "XA1", med_type="11", a=yuan(60), insutype="310")
    out, res = run(frame([b1, a1], r), r)
    assert amounts(out) == {b1["setl_id"]: (yuan(30), yuan(60), 0), a1["setl_id"]: (yuan(40), 0, yuan(20))}
    assert res.walked_accounts == 2
    assert balance(res, "A") == 0 and balance(res, "B") == 0


def test_chain_never_cascades():
    """A authorises B, B authorises C: C's shortfall draws on B's own balance only, never on A's."""
    r = family([bind("A", "B"), bind("B", "C")], {"A": yuan(1000), "B": yuan(20), "C": 0})
    c1 = line("C", "2025-03-03", "XA1", med_type="11", a=yuan(50), insutype="310")
    b1 = line("B", "2025-03-04", "XA1", med_type="11", a=yuan(50), insutype="310")
    out, res = run(frame([c1, b1], r), r)
    assert amounts(out) == {c1["setl_id"]: (0, yuan(20), yuan(30)), b1["setl_id"]: (0, yuan(50), 0)}
    assert balance(res, "A") == yuan(950) and res.walked_accounts == 0 and res.levels == 3


def test_reversal_gives_back_to_each_account_in_the_same_run():
    r = family([bind("A", "U"), bind("B", "U", D(2024, 6, 1))], {"A": yuan(20), "B": yuan(100)})
    v = line("U", "2025-03-03", "XA1", med_type="11", a=yuan(50))
    back = reversal_of(v, "2025-03-20")
    out, res = run(frame([v, back], r), r)
    assert amounts(out)[back["setl_id"]] == (0, -yuan(50), 0)
    assert balance(res, "A") == yuan(20) and balance(res, "B") == yuan(100)
    refunds = res.ledger.filter(pl.col("orig_setl_id") == v["setl_id"]).sort("psn_no")
    assert refunds.select("psn_no", "amount", "setl_id").rows() == [("A", yuan(20), back["setl_id"]),
                                                                      ("B", yuan(30), back["setl_id"])]


def test_reversal_in_a_later_month_uses_the_original_ledger_rows():
    r = family([bind("A", "B"), bind("C", "B", D(2024, 6, 1))], {"A": yuan(20), "B": yuan(5), "C": yuan(100)})
    v = line("B", "2025-03-03", "XA1", med_type="11", a=yuan(50), insutype="310")
    out1, res1 = run(frame([v], r), r, period=(D(2025, 3, 1), D(2025, 3, 31)))
    assert amounts(out1)[v["setl_id"]] == (yuan(5), yuan(45), 0)
    back = reversal_of(v, "2025-04-02")
    df = frame([back], r).with_columns(pl.lit(-yuan(5)).alias("rev_acct_pay"), pl.lit(-yuan(45)).alias("rev_acct_mulaid_pay"))
    out2, res2 = run(df, r, period=(D(2025, 4, 1), D(2025, 4, 30)), balances=res1.balances,
                     original_ledger=res1.ledger)
    assert amounts(out2)[back["setl_id"]] == (-yuan(5), -yuan(45), 0)
    assert {p: balance(res2, p) for p in "ABC"} == {"A": yuan(20), "B": yuan(5), "C": yuan(100)}


# --------------------------------------------------------------------------- vectorized == reference


PSNS = ["P0", "P1", "P2", "P3", "P4", "P5"]
INSTS = ["XA1", "XA2", "XAP", "WH1"]


@st.composite
def families(draw):
    n = draw(st.integers(2, 6))
    psns = PSNS[:n]
    employees = [p for p in psns if draw(st.integers(0, 4)) > 0] or [psns[0]]
    persons, employment, openings = [], [], []
    for p in psns:
        pp = person(p, admdvs=draw(st.sampled_from([XY, XY, XY, "421302"])), insutype="310" if p in employees else "390")
        pp["brdy"] = D(draw(st.integers(1955, 2000)), draw(st.integers(1, 12)), 1)
        persons.append(pp)
        if p in employees:
            kind = draw(st.sampled_from(["in_service", "pooling", "retired", "contributing"]))
            benefit = draw(st.sampled_from(["normal", "normal", "normal", "suspended", "arrears", "terminated",
                                            "unverified"]))
            # contributing retirees also retired before the 2022-12-31 cutoff (§4.2: 2%, not 95)
            begin = D(2025, 1, 1) + dt.timedelta(days=draw(st.integers(-1200 if kind == "contributing" else -400, 200)))
            row = {"in_service": emp(p, base=draw(st.integers(300_000, 900_000))),
                   "pooling": emp(p, mode="pooling_only", base=300_000),
                   "retired": emp(p, "12", mode=None, kind="normal"),
                   "contributing": emp(p, "12", base=400_000, kind="contributing")}[kind]
            employment.append(row[:7] + (begin, None))
            if benefit != "normal":
                b2 = begin + dt.timedelta(days=draw(st.integers(20, 200)))
                employment[-1] = row[:7] + (begin, b2 - dt.timedelta(days=1))
                employment.append(row[:6] + (benefit, b2, None))
        if draw(st.integers(0, 3)) > 0:
            openings.append((p, D(2024, 12, 31) + dt.timedelta(days=draw(st.sampled_from([0, 0, 40]))),
                             draw(st.sampled_from([0, draw(st.integers(0, 60_000))]))))
    bindings = []
    for _ in range(draw(st.integers(0, 7))):
        a, u = draw(st.sampled_from(employees)), draw(st.sampled_from(psns))
        if a != u:
            begin = D(2024, 6, 1) + dt.timedelta(days=draw(st.sampled_from([0, draw(st.integers(0, 400))])))
            end = draw(st.one_of(st.none(), st.just(begin + dt.timedelta(days=draw(st.integers(0, 300))))))
            bindings.append((a, u, "child", begin, end))
    if draw(st.booleans()) and len(employees) >= 2:  # a mutual pair
        bindings += [(employees[0], employees[1], "spouse", D(2024, 1, 1), None),
                     (employees[1], employees[0], "spouse", D(2024, 3, 1), None)]
    rows, parts, allowed = [], {}, {}
    times = [dt.datetime(2025, 1, 1, 0, 0) + dt.timedelta(days=draw(st.integers(0, 430)), hours=draw(st.integers(0, 2)))
             for _ in range(draw(st.integers(0, 14)))]
    for t in times:
        p = draw(st.sampled_from(psns))
        inst = draw(st.sampled_from(INSTS))
        med = "41" if inst == "XAP" else draw(st.sampled_from(["11", "11", "21", "14"]))
        ins = "310" if p in employees else "390"
        row = line(p, t.strftime("%Y-%m-%d %H:%M:%S"), inst, med_type=med, a=draw(st.integers(0, 80_000)), insutype=ins)
        rows.append(row)
        parts[row["setl_id"]] = draw(st.integers(0, row["medfee_sumamt"]))
        allowed[row["setl_id"]] = draw(st.sampled_from([True, True, True, False, None]))
    for orig in list(rows):
        if draw(st.integers(0, 6)) == 0:
            later = orig["setl_time"] + dt.timedelta(days=draw(st.integers(0, 50)), seconds=1)
            back = reversal_of(orig, later.strftime("%Y-%m-%d %H:%M:%S"))
            rows.append(back)
            parts[back["setl_id"]] = -parts[orig["setl_id"]]
    return regs(persons, employment, bindings, openings), rows, parts, allowed


def _reference(r, df, period, **kw):
    res, ledger, ends = accounts_reference(df.to_dicts(), {k: v.to_dicts() for k, v in r.items()}, POL, period, **kw)
    return res, ledger, ends


def _ledger_key(rows):
    return sorted((r["psn_no"], r["ts"], r["kind"], r["setl_id"] or "", r["amount"], r["balc_after"],
                   r["user_psn_no"] or "", r["orig_setl_id"] or "") for r in rows)


def _months(rows):
    return sorted({r["setl_time"].strftime("%Y-%m") for r in rows})


@settings(max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(families())
def test_vectorized_equals_reference(fam):
    r, rows, parts, allowed = fam
    if not rows:
        return
    df = frame(rows, r, parts, acct_allowed=allowed)
    months = _months(rows)
    period = (D(int(months[0][:4]), int(months[0][5:]), 1), _month_end(months[-1]))
    out, res = run(df, r, period=period)
    event(f"walked accounts: {min(res.walked_accounts, 3)}; levels: {min(res.levels, 4)}")
    event(f"family accounts paid: {bool((out['acct_mulaid_pay'] > 0).any())}; refunds: {bool((out['acct_pay'] < 0).any())}")
    ref, ledger, ends = _reference(r, df, period)
    assert {s: (a, m) for s, (a, m, _) in amounts(out).items()} == {s: (v["acct_pay"], v["acct_mulaid_pay"])
                                                                      for s, v in ref.items()}
    assert _ledger_key(res.ledger.to_dicts()) == _ledger_key(ledger)
    assert {p: (a, b) for p, a, b in res.balances.iter_rows()} == {p: (e["as_of"], e["balc"]) for p, e in ends.items()}
    check_ledger_consistent(res.ledger, res.balances, r, period)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(families())
def test_month_by_month_equals_one_walk(fam):
    """Balances, ledger rows and refunds carried month to month equal one walk over everything."""
    r, rows, parts, allowed = fam
    if not rows:
        return
    months = _months(rows)
    period = (D(int(months[0][:4]), int(months[0][5:]), 1), _month_end(months[-1]))
    ref, ledger, ends = _reference(r, frame(rows, r, parts, acct_allowed=allowed), period)
    state, led, done = None, [], {}
    # every month from the first to the last, as the monthly flow runs them (a month without lines still credits
    # the accounts, POLICY §4.2, and the flow refuses a gap month)
    every = [f"{y:04d}-{mo:02d}" for y in range(int(months[0][:4]), int(months[-1][:4]) + 1) for mo in range(1, 13)]
    for m in [m for m in every if months[0] <= m <= months[-1]]:
        mine = [x for x in rows if x["setl_time"].strftime("%Y-%m") == m]
        df = frame(mine, r, parts, acct_allowed=allowed)
        prev = pl.DataFrame([{"orig_setl_id": k, "rev_acct_pay": -a, "rev_acct_mulaid_pay": -b} for k, (a, b) in done.items()],
                            schema={"orig_setl_id": pl.String, "rev_acct_pay": pl.Int64, "rev_acct_mulaid_pay": pl.Int64})
        df = df.join(prev, on="orig_setl_id", how="left", maintain_order="left")
        first = D(int(m[:4]), int(m[5:]), 1)
        out, res = run(df, r, period=(first, _month_end(m)), balances=state,
                       original_ledger=pl.concat(led) if led else None)
        state = res.balances
        led.append(res.ledger)
        done.update({s: (a, b) for s, (a, b, _) in amounts(out).items()})
    assert done == {s: (v["acct_pay"], v["acct_mulaid_pay"]) for s, v in ref.items()}
    assert _ledger_key(pl.concat(led).to_dicts()) == _ledger_key(ledger)
    assert {p: (a, b) for p, a, b in state.iter_rows()} == {p: (e["as_of"], e["balc"]) for p, e in ends.items()}


def _month_end(m: str | dt.date) -> dt.date:
    d = m if isinstance(m, dt.date) else D(int(m[:4]), int(m[5:7]), 1)
    return (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)


def check_ledger_consistent(ledger: pl.DataFrame, balances: pl.DataFrame, r, period) -> None:
    """Each account's rows chain: balc_after = previous balc_after + amount, never below zero."""
    opening = start_state(r, None, period[0], POL)
    start = dict(opening.select("psn_no", "balc").iter_rows())
    for psn, rows in ledger.group_by("psn_no", maintain_order=True):
        b = start.get(psn[0], 0)
        for amount, after in rows.select("amount", "balc_after").iter_rows():
            b += amount
            assert b == after and after >= 0
        assert balances.filter(pl.col("psn_no") == psn[0])["balc"].item() == b


# --------------------------------------------------------------------------- store and monthly tasks


def test_store_carries_balances_across_years_and_keeps_the_ledger(tmp_path):
    from flows import store
    con = store.connect(tmp_path / "s.duckdb")
    record = {"input_files": [], "rows_in": 0, "rows_accepted": 0, "rows_rejected": 0, "assumptions": [],
              "lines_adjudicated": 0}
    ledger = pl.DataFrame([("A", dt.datetime(2025, 12, 3, 9), "mulaid_payment_out", -yuan(3), yuan(7), "S1", "U", None)],
                          schema=LEDGER_SCHEMA, orient="row").with_row_index("seq")
    for month, balc in (("2025-11", yuan(10)), ("2025-12", yuan(7))):
        store.begin_run(con, {"run_id": month, "month": month, "input_dir": "-", "code_version": "t", "policy_version": "t"})
        store.write_month(con, month, month, {
            "account_month_end": pl.DataFrame({"psn_no": ["A"], "as_of": [_month_end(month)], "balc": [balc]}),
            "account_ledger": ledger if month == "2025-12" else ledger.clear()}, record)
    carried = store.carried_balances(con, "2026-01")  # a new year: balances do not restart
    assert carried.rows() == [("A", D(2025, 12, 31), yuan(7))]
    assert store.carried_balances(con, "2025-12").rows() == [("A", D(2025, 11, 30), yuan(10))]
    orig = store.original_ledger(con, "2026-02", ["S1"])
    assert orig.select("psn_no", "amount", "user_psn_no").rows() == [("A", -yuan(3), "U")]
    con.close()


def test_monthly_tasks_write_a_ledger_that_chains_and_equals_one_run(tmp_path):
    """Three months through the flow's task functions: every account's ledger chains across months from its
    opening balance, month-end balances match, adjudicated account amounts equal the ledger's, and one engine
    run over all accepted lines writes the same ledger and end balances."""
    from flows import monthly, store
    from flows.ingest import load_registers
    from flows.sample import write_sample
    from transforms.engine import adjudicate
    bureau, db = tmp_path / "in", tmp_path / "y.duckdb"
    write_sample(bureau, persons=300, year=2025, months=3, seed=11, fmt="csv")
    for month in ("2025-01", "2025-02", "2025-03"):
        stage = tmp_path / "stage" / month
        stage.mkdir(parents=True)
        con = store.connect(db)
        store.begin_run(con, {"run_id": month, "month": month, "input_dir": str(bureau), "code_version": "t",
                              "policy_version": "t"})
        con.close()
        monthly.ingest_and_validate.fn(str(bureau), month, str(db), str(stage))
        monthly.adjudicate_month.fn(str(stage), str(db), month)
        monthly.persist.fn(str(stage), str(db), month, month)
    con = store.connect(db, read_only=True)
    try:
        ledger = store.fetch_fen(con, "SELECT * FROM account_ledger ORDER BY month, seq")
        ends = store.fetch_fen(con, "SELECT * FROM account_month_end")
        adj = store.fetch_fen(con, "SELECT * EXCLUDE (run_id) FROM adjudicated")
        accepted = store.fetch_fen(con, "SELECT * EXCLUDE (run_id) FROM settlements")
        n_contrib = con.execute("SELECT count(*) FROM contributions WHERE year = 2025").fetchone()[0]
    finally:
        con.close()
    regs = load_registers(bureau)
    assert ledger.filter(pl.col("kind") == "credit").height > 0 and n_contrib > 0
    opening = dict(regs["account_balances"].select("psn_no", "balc").iter_rows())
    for (psn,), rows in ledger.group_by("psn_no", maintain_order=True):
        b = opening.get(psn, 0)
        for month, amount, after in rows.select("month", "amount", "balc_after").iter_rows():
            b += amount
            assert b == after >= 0
            end = ends.filter((pl.col("psn_no") == psn) & (pl.col("month") == month))
            assert end.height == 1
        assert ends.filter(pl.col("psn_no") == psn).sort("month")["balc"][-1] == b
    paid = ledger.filter(pl.col("kind") != "credit").group_by("kind").agg(pl.col("amount").sum())
    by_kind = dict(paid.iter_rows())
    assert adj["acct_pay"].sum() == -by_kind.get("own_payment", 0)
    assert adj["acct_mulaid_pay"].sum() == -by_kind.get("mulaid_payment_out", 0)
    whole = adjudicate(accepted, regs, POL)
    cols = ["psn_no", "ts", "kind", "amount", "balc_after", "setl_id", "user_psn_no", "orig_setl_id"]
    assert _ledger_key(whole.account_ledger.select(cols).to_dicts()) == _ledger_key(ledger.select(cols).to_dicts())
    last = ends.filter(pl.col("month") == "2025-03").select("psn_no", "as_of", "balc").sort("psn_no")
    assert whole.account_balances.sort("psn_no").rows() == last.rows()


# --------------------------------------------------------------------------- end to end through the engine


@pytest.mark.parametrize("inst, cost, pooling, paid, left", [
    ("XA1", 2000, 1280, 720, 420),  # E1
    ("XA2", 2000, 1120, 880, 260),  # E2 level 2
    ("XA3", 2000, 960, 1040, 100),  # E2 level 3
    ("XA1", "1765.40", "1092.32", "673.08", "466.92"),  # E8
])
def test_e1_e2_e8_through_the_engine(inst, cost, pooling, paid, left):
    """The employee fund stage computes the pooling; the account pays the rest; the balance is what POLICY §5 says."""
    from transforms.engine import adjudicate
    r = regs([person("R", admdvs=XY, insutype="310")], [RETIRED], balances=[("R", D(2024, 12, 31), 0)])
    visit = line("R", "2025-12-15", inst, med_type="11", a=yuan(cost), insutype="310")
    res = adjudicate(lines([visit]), r, POL, period=(D(2025, 12, 1), D(2025, 12, 31)))
    got = res.adjudicated.select("hifp_pay", "acct_pay", "acct_mulaid_pay", "psn_cash_pay").row(0)
    assert got == (yuan(pooling), yuan(paid), 0, 0)
    assert res.account_balances.rows() == [("R", D(2025, 12, 31), yuan(left))]
    assert {"A-14", "A-24"} <= set(res.assumptions)
    assert "own account pays" in res.adjudicated["explanation"][0]


def test_family_aid_and_waiting_period_through_the_engine():
    """A flexible worker in the first six months: no fund and no account (§4.3), all cash, even with an
    authoriser; after the wait the shortfall is drawn from the authoriser."""
    from transforms.engine import adjudicate
    r = regs([person("A", admdvs=XY, insutype="310"), person("F", admdvs=XY, insutype="310")],
             [RETIRED[:0] + ("A", "12", False, None, None, "normal", "normal", D(2010, 1, 1), None),
              emp("F", base=yuan(3450), flexible=True, begin=D(2025, 1, 1))],
             [bind("A", "F", relation="spouse")], [("A", D(2024, 12, 31), yuan(500))])
    waiting = line("F", "2025-03-10", "XA1", med_type="11", a=yuan(100), insutype="310")
    later = line("F", "2025-08-10", "XA1", med_type="11", a=yuan(1000), insutype="310")
    res = adjudicate(lines([waiting, later]), r, POL, period=(D(2025, 1, 1), D(2025, 8, 31)))
    got = {s: row for s, *row in res.adjudicated.select("setl_id", "hifp_pay", "acct_pay", "acct_mulaid_pay",
                                                          "psn_cash_pay").iter_rows()}
    assert got[waiting["setl_id"]] == [0, 0, 0, yuan(100)]
    hifp, own, aid, cash = got[later["setl_id"]]  # the waiting line's cost counted toward no deductible
    assert hifp > 0 and own == 8 * yuan(69)  # F's own credits, Jan–Aug at 2% of 3,450, pay first
    assert aid == yuan(1000) - hifp - own and cash == 0  # the rest from A's account
    assert res.account_balances.filter(pl.col("psn_no") == "A")["balc"].item() == yuan(500 + 8 * 95) - aid
