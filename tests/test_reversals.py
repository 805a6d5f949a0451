"""Reversals and corrections (POLICY §1.7, DATA.md `orig_setl_id`; issue 6), month by month as the monthly flow
runs them: the reversal arrives in a later month and cancels exactly what its original was paid by every fund and
gave to every accumulator and account, in the month it arrives; the original's row is never rewritten.

Numbers by hand from POLICY §3.6–§3.8 (Suizhou ordinary resident) and §4.2/§4.5/E1 (Xiangyang retired employees).
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from flows.policies import load_policies
from tests.builders import line, lines, person, registers, reversal_of, yuan
from tests.test_accounts import bind, emp, regs
from transforms.engine import adjudicate
from transforms.reference.adjudicate import adjudicate_reference

POL = load_policies()
D = dt.date
FUNDS = ["hifp_pay", "hifp_cap_cut", "hifmi_pay", "maf_pay", "act_pay_dedc", "acct_pay", "acct_mulaid_pay",
         "psn_cash_pay"]


def month(rows, regs_, *before, first=None, last=None):
    """One monthly run on top of the runs before (oldest first): accumulators and balances at the end of the last
    one, originals and account ledger of all of them (as flows/monthly.py adjudicate_month reads the database)."""
    kw = {}
    if before:
        kw = {"carried": before[-1].accumulators, "balances": before[-1].account_balances,
              "originals": pl.concat([b.adjudicated for b in before], how="diagonal_relaxed"),
              "original_ledger": pl.concat([b.account_ledger for b in before]).with_row_index("seq")}
    elif "account_balances" in regs_:
        kw = {"balances": regs_["account_balances"]}
    return adjudicate(lines(rows), regs_, POL, period=(first, last) if first else None, **kw)


def funds(res, setl_id: str) -> dict:
    return res.adjudicated.filter(pl.col("setl_id") == setl_id).select(FUNDS).row(0, named=True)


def acc(res, name: str) -> int:
    got = res.accumulators.filter((pl.col("psn_no") == "P1") & (pl.col("name") == name))
    return got["value"].item() if got.height else 0


def test_reversal_in_a_later_month_after_the_annual_cap_and_a_critical_illness_band_were_crossed():
    """P1, ordinary resident, class A stays at a level-3 city hospital (deductible 900, 70%, §3.6).

    Jan S1 200,000: hifp (200,000 − 900) × 70% = 139,370; burden 60,630 (§3.8, A-7);
        hifmi F(60,630) = 60% × 18,000 + 65% × 30,630 = 10,800 + 19,909.50 = 30,709.50; cash 29,920.50.
    Feb S2 60,000: (60,000 − 900) × 70% = 41,370 but 150,000 − 139,370 = 10,630 is left of the annual cap
        (§3.7): hifp 10,630, cap cut 30,740; burden 49,370 → 110,000, band 3 reached:
        F(110,000) = 10,800 + 65% × 70,000 + 75% × 10,000 = 63,800; hifmi 63,800 − 30,709.50 = 33,090.50;
        cash 60,000 − 10,630 − 33,090.50 = 16,279.50.
    Mar R1 reverses S1: every fund of S1 negated; the cap used falls to 10,630, the burden to 49,370 and the
        critical-illness paid to 33,090.50. S2 stays as it was paid in February.
    Mar S3 20,000 after the reversal: (20,000 − 900) × 70% = 13,370 fits the cap again; burden 6,630 → 56,000:
        hifmi F(56,000) − F(49,370) = (10,800 + 65% × 26,000) − (10,800 + 65% × 19,370) = 27,700 − 23,390.50
        = 4,309.50.
    """
    regs_ = registers([person("P1")])
    s1 = line("P1", "2025-01-10", "SZ3", a=yuan(200000))
    s2 = line("P1", "2025-02-10", "SZ3", a=yuan(60000))
    r1 = reversal_of(s1, "2025-03-05")
    s3 = line("P1", "2025-03-20", "SZ3", a=yuan(20000))
    jan = month([s1], regs_)
    feb = month([s2], regs_, jan)
    mar = month([r1, s3], regs_, jan, feb)

    assert funds(jan, s1["setl_id"]) == {"hifp_pay": yuan(139370), "hifp_cap_cut": 0, "hifmi_pay": yuan("30709.50"),
                                         "maf_pay": 0, "act_pay_dedc": yuan(900), "acct_pay": 0, "acct_mulaid_pay": 0,
                                         "psn_cash_pay": yuan("29920.50")}
    assert funds(feb, s2["setl_id"]) == {"hifp_pay": yuan(10630), "hifp_cap_cut": yuan(30740),
                                         "hifmi_pay": yuan("33090.50"), "maf_pay": 0, "act_pay_dedc": yuan(900),
                                         "acct_pay": 0, "acct_mulaid_pay": 0, "psn_cash_pay": yuan("16279.50")}
    assert (acc(feb, "hifp_paid"), acc(feb, "hifmi_burden"), acc(feb, "hifmi_paid")) == (
        yuan(150000), yuan(110000), yuan(63800))
    # the reversal: exactly S1 negated, in March
    assert funds(mar, r1["setl_id"]) == {k: -v for k, v in funds(jan, s1["setl_id"]).items()}
    assert mar.adjudicated.filter(pl.col("setl_id") == r1["setl_id"])["month"].item() == "2025-03"
    assert "REVERSAL" in mar.adjudicated.filter(pl.col("setl_id") == r1["setl_id"])["reason_codes"].item()
    # S3 after it: the cap and the bands are back where S1 left them
    assert funds(mar, s3["setl_id"]) == {"hifp_pay": yuan(13370), "hifp_cap_cut": 0, "hifmi_pay": yuan("4309.50"),
                                         "maf_pay": 0, "act_pay_dedc": yuan(900), "acct_pay": 0, "acct_mulaid_pay": 0,
                                         "psn_cash_pay": yuan(20000) - yuan(13370) - yuan("4309.50")}
    assert (acc(mar, "hifp_paid"), acc(mar, "hifmi_burden"), acc(mar, "hifmi_paid")) == (
        yuan(10630 + 13370), yuan(49370 + 6630), yuan("33090.50") + yuan("4309.50"))
    # the original is never rewritten: March's output holds no row of S1 or S2
    assert mar.adjudicated["setl_id"].to_list() == [r1["setl_id"], s3["setl_id"]]

    # the plain-Python reference over the same lines in one go agrees to the fen
    ref, _ = adjudicate_reference(lines([s1, s2, r1, s3]).to_dicts(), {k: v.to_dicts() for k, v in regs_.items()}, POL)
    engine = pl.concat([jan.adjudicated, feb.adjudicated, mar.adjudicated], how="diagonal_relaxed")
    assert {r["setl_id"]: tuple(r[c] for c in FUNDS) for r in ref} == {
        r["setl_id"]: tuple(r[c] for c in FUNDS) for r in engine.iter_rows(named=True)}


def test_reversal_in_the_same_month_after_the_outpatient_cap():
    """§3.2/A-1: antenatal outpatient care (med_type 51) at a township centre, 50%, no daily limit, 350 a year.
    Three visits of 300 class A: 150 + 150 + 50 (cap reached). The reversal of the first, the same month, takes
    back 150; a fourth visit of 300 is then paid 150 in full (350 − 200 left)."""
    regs_ = registers([person("P1")])
    v = [line("P1", f"2025-05-{d:02d}", "SZ1", med_type="51", a=yuan(300)) for d in (5, 12, 19)]
    back = reversal_of(v[0], "2025-05-20")
    fourth = line("P1", "2025-05-26", "SZ1", med_type="51", a=yuan(300))
    res = month([*v, back, fourth], regs_)
    out = res.adjudicated.sort("setl_time")
    assert out["hifp_pay"].to_list() == [yuan(150), yuan(150), yuan(50), -yuan(150), yuan(150)]
    assert acc(res, "op_pool_paid") == yuan(350)  # 150 + 150 + 50 − 150 + 150: at the cap again


def test_reversal_of_a_line_paid_partly_from_a_family_members_account():
    """§4.5/E1: R and A retired Xiangyang employees, credits 95 on the 1st of each month (A-14); A authorises R.
    Opening balances (31 Dec 2024) R 0, A 1,000.

    Mar 15, R: 2,000 class A at a level-1 institution: pooling (2,000 − 400) × 80% = 1,280; R's own share 720:
        R's account pays its 3 × 95 = 285, A's pays the rest 435 (acct_mulaid_pay); A: 1,000 + 285 − 435 = 850.
    Apr 2, the reversal: every payer negated; 285 back to R, 435 back to A (account_ledger, naming the original).
        Month-end April: R 0 + 95 + 285 = 380; A 850 + 95 + 435 = 1,380.
    """
    r = regs([person("R", admdvs="420602", insutype="310"), person("A", admdvs="420602", insutype="310")],
             [emp("R", "12", mode=None, kind="normal"), emp("A", "12", mode=None, kind="normal")],
             [bind("A", "R", relation="parent")], [("R", D(2024, 12, 31), 0), ("A", D(2024, 12, 31), yuan(1000))])
    v = line("R", "2025-03-15", "XA1", med_type="11", a=yuan(2000), insutype="310")
    back = reversal_of(v, "2025-04-02")
    mar = month([v], r, first=D(2025, 3, 1), last=D(2025, 3, 31))
    apr = month([back], r, mar, first=D(2025, 4, 1), last=D(2025, 4, 30))

    paid = {"hifp_pay": yuan(1280), "hifp_cap_cut": 0, "hifmi_pay": 0, "maf_pay": 0, "act_pay_dedc": yuan(400),
            "acct_pay": yuan(285), "acct_mulaid_pay": yuan(435), "psn_cash_pay": 0}
    assert funds(mar, v["setl_id"]) == paid
    assert funds(apr, back["setl_id"]) == {k: -x for k, x in paid.items()}
    ledger = apr.account_ledger.filter(pl.col("setl_id") == back["setl_id"]).sort("psn_no")
    assert ledger.select("psn_no", "amount", "user_psn_no", "orig_setl_id").rows() == [
        ("A", yuan(435), "R", v["setl_id"]), ("R", yuan(285), None, v["setl_id"])]
    balances = dict(apr.account_balances.select("psn_no", "balc").iter_rows())
    assert balances == {"R": yuan(380), "A": yuan(1380)}
    # the accumulators R's visit moved are back at zero
    assert apr.accumulators.filter((pl.col("psn_no") == "R") & (pl.col("value") != 0)).height == 0


def test_january_reversal_of_a_december_stay_gives_back_to_the_originals_year():
    """POLICY §1.7 (revision 3): a reversal gives back to the accumulators of the original's year, whatever month
    it arrives in. P1, ordinary Suizhou resident, class-A stays at a level-3 city hospital (SZ3: deductible 900,
    70%, §3.6; annual cap 150,000, §3.7; critical illness threshold 12,000, bands 60/65/75%, §3.8).

    Dec 2025 S1 100,000: hifp (100,000 − 900) × 70% = 69,370; burden 100,000 − 69,370 = 30,630;
        hifmi F(30,630) = 60% × 18,000 + 65% × 630 = 10,800 + 409.50 = 11,209.50.
    Jan 2026 R1 reverses S1 (5 January): 2025's counters fall back to 0 (stored as 2025's state at the end of
        January 2026); 2026's stay untouched.
    Jan 2026 S2 200,000: hifp (200,000 − 900) × 70% = 139,370 (the whole 150,000 cap is 2026's);
        burden 60,630: hifmi F(60,630) = 10,800 + 65% × 30,630 = 30,709.50.
    Feb 2026 S3 100,000: raw 69,370 but the cap leaves 150,000 − 139,370 = 10,630 → hifp 10,630 (before the fix:
        69,370, the counters having started at −69,370); burden 60,630 + 89,370 = 150,000:
        F(150,000) = 10,800 + 65% × 70,000 + 75% × 50,000 = 93,800 → hifmi 93,800 − 30,709.50 = 63,090.50.
    """
    regs_ = registers([person("P1")])
    s1 = line("P1", "2025-12-10", "SZ3", a=yuan(100000))
    r1 = reversal_of(s1, "2026-01-05")
    s2 = line("P1", "2026-01-10", "SZ3", a=yuan(200000))
    s3 = line("P1", "2026-02-10", "SZ3", a=yuan(100000))
    dec = month([s1], regs_)
    jan = month([r1, s2], regs_, dec)
    feb = month([s3], regs_, dec, jan)

    assert funds(dec, s1["setl_id"])["hifp_pay"] == yuan(69370)
    assert funds(dec, s1["setl_id"])["hifmi_pay"] == yuan("11209.50")
    assert funds(jan, r1["setl_id"])["hifp_pay"] == -yuan(69370)
    assert funds(jan, s2["setl_id"])["hifp_pay"] == yuan(139370)
    assert funds(jan, s2["setl_id"])["hifmi_pay"] == yuan("30709.50")
    assert funds(feb, s3["setl_id"])["hifp_pay"] == yuan(10630)
    assert funds(feb, s3["setl_id"])["hifp_cap_cut"] == yuan(69370) - yuan(10630)
    assert funds(feb, s3["setl_id"])["hifmi_pay"] == yuan("63090.50")

    def state(res, year):
        got = res.accumulators.filter((pl.col("psn_no") == "P1") & (pl.col("year") == year))
        return {n: v for n, v in got.select("name", "value").iter_rows() if n in ("hifp_paid", "hifmi_burden")}
    # January's run stores 2025's counters back at zero, and 2026's with S2 only
    assert state(jan, 2025) == {"hifp_paid": 0, "hifmi_burden": 0}
    assert state(jan, 2026) == {"hifp_paid": yuan(139370), "hifmi_burden": yuan(60630)}
    assert state(feb, 2026) == {"hifp_paid": yuan(150000), "hifmi_burden": yuan(150000)}

    # the reference over the same lines in one go agrees to the fen, and keeps 2025 and 2026 apart
    ref, st_ = adjudicate_reference(lines([s1, r1, s2, s3]).to_dicts(), {k: v.to_dicts() for k, v in regs_.items()},
                                    POL)
    engine = pl.concat([dec.adjudicated, jan.adjudicated, feb.adjudicated], how="diagonal_relaxed")
    assert {r["setl_id"]: tuple(r[c] for c in FUNDS) for r in ref} == {
        r["setl_id"]: tuple(r[c] for c in FUNDS) for r in engine.iter_rows(named=True)}
    assert (st_[("P1", 2025, "hifp_paid")], st_[("P1", 2026, "hifp_paid")]) == (0, yuan(150000))


def test_january_reversal_of_a_december_visit_leaves_the_new_years_outpatient_deductible_alone():
    """POLICY §1.7, §4.3: E, a Xiangyang in-service employee (deductible 500 a year, level-1 rate 70%, A-10).
    Dec 2025: 300 in catalogue at level 1, all of it toward 2025's deductible, pooling 0. Reversed on 5 Jan 2026:
    2025's deductible used falls back to 0; 2026's stays at 0 (before the fix it became −300, a deductible of 800).
    Jan 2026: 600 at level 1: 500 to the deductible, (600 − 500) × 70% = 70 paid."""
    r = regs([person("E", admdvs="420602", insutype="310")], [emp("E", "11", base=yuan(3450))], [],
             [("E", D(2024, 12, 31), 0)])
    v = line("E", "2025-12-15", "XA1", med_type="11", a=yuan(300), insutype="310")
    back = reversal_of(v, "2026-01-05")
    w = line("E", "2026-01-20", "XA1", med_type="11", a=yuan(600), insutype="310")
    dec = month([v], r, first=D(2025, 12, 1), last=D(2025, 12, 31))
    jan = month([back, w], r, dec, first=D(2026, 1, 1), last=D(2026, 1, 31))
    assert (funds(dec, v["setl_id"])["act_pay_dedc"], funds(dec, v["setl_id"])["hifp_pay"]) == (yuan(300), 0)
    assert funds(jan, w["setl_id"])["act_pay_dedc"] == yuan(500)
    assert funds(jan, w["setl_id"])["hifp_pay"] == yuan(70)
    ref, _ = adjudicate_reference(lines([v, back, w]).to_dicts(), {k: x.to_dicts() for k, x in r.items()}, POL)
    assert {x["setl_id"]: (x["act_pay_dedc"], x["hifp_pay"]) for x in ref}[w["setl_id"]] == (yuan(500), yuan(70))
