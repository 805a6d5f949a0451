"""Xiangyang (POLICY §4, §4.7): the vectorized engine equals the plain-Python reference to the fen — funds and
personal accounts, the reference being one adjudicator end to end (transforms/reference/adjudicate.py calls the
accounts twin) — and month-by-month runs equal one run, on random employees (in service, retired, retiring or
returning to work mid-year, flexible workers starting mid-year, new employer enrolments, suspended / arrears /
unverified / terminated months, gaps, overlapping periods) and Xiangyang residents (general outpatient, chronic),
random lines of every ledger they can be adjudicated on, reversals, and family groups: several users per
authoriser, several authorisers per user, a mutual pair, opening balances small enough to run dry mid-month."""

from __future__ import annotations

import datetime as dt
import inspect

import polars as pl
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flows.policies import load_policies
from tests.builders import (
    employee,
    employment,
    examples,
    line,
    lines,
    month_by_month,
    person,
    registers,
    reversal_of,
)
from tests.test_accounts import BAL_SCHEMA, BIND_SCHEMA
from tests.test_engine_vs_reference import merged_stays
from transforms.engine import MONEY_COLUMNS, adjudicate
from transforms.reference.adjudicate import adjudicate_reference
from transforms.reference.employee import add_months

ACCOUNTS = "balances" in inspect.signature(adjudicate).parameters

POL = load_policies()
Y0 = dt.date(2025, 1, 1)
COUNTIES = ["420602", "420606", "420624"]
HOSPITALS = ["XY1", "XY2", "XY3", "XYV", "WH1", "WH2", "WH3", "BJ3"]
MED_TYPES = ["11", "13", "51", "41", "21", "22", "24", "28", "52", "14", "140104", "140201"]
CERT_MED_TYPES = ("14", "140104", "140201")
# chronic/special certifications of every kind, and a two-disease one (not a chronic certification: NOT_CERTIFIED)
CERTS = [("chronic", "I11.9"), ("special", "E10"), ("special_transplant", "Z94.0"), ("special_dialysis", "N18.5"),
         ("special_mental", "F20.0"), ("hypertension", "I10"), ("chronic", "J44")]
STATES = ["suspended", "arrears", "unverified", "terminated"]
SIZES = {"tiny": (12_000, 4_000), "small": (300_000, 50_000), "big": (20_000_000, 3_000_000),
         "huge": (80_000_000, 10_000_000)}
STAY_MED_TYPES = ("13", "21", "22", "24", "28", "52")
# stays large enough to reach the 550,000 cap and chronic lines to reach a disease's 10,000 limit
SIZE_CHOICES = {"stay": ["small", "big", "huge", "huge"], "chronic": ["small", "small", "big"],
                "outpatient": ["tiny", "small", "small", "big"]}
COMPARED = [c for c in MONEY_COLUMNS if c not in ("cls_a_amt", "cls_b_amt", "fulamt_ownpay_amt", "overlmt_selfpay")]
ACCOUNT_COLUMNS = ("acct_pay", "acct_mulaid_pay", "psn_cash_pay")
# Xiangyang residents (§4.7): the lines the source gives rules for — general outpatient (11, 13 not a rescue, 51)
# in the city, pharmacy purchases, chronic care under chronic/special certifications (a two-disease one: not
# certified). Stays, two-disease, special drugs and out-of-city outpatient care stop the run (test_xiangyang.py).
RES_MED_TYPES = ["11", "11", "13", "51", "41", "14", "140104", "140201"]
RES_INSTITUTIONS = ["XY1", "XY2", "XY3", "XYV"]
RES_CERTS = [("chronic", "I11.9"), ("special", "E10"), ("special_transplant", "Z94.0"), ("special_dialysis", "N18.5"),
             ("special_mental", "F20.0"), ("hypertension", "I10")]


def _day(draw, lo: int, hi: int) -> dt.date:
    return Y0 + dt.timedelta(days=draw(st.integers(lo, hi)))


@st.composite
def periods(draw, pid: str, twins: bool = True) -> list[dict]:
    kind = draw(st.sampled_from(["in_service", "retired", "retired", "retire_mid", "retire_mid", "unretire",
                                 "in_service", "flexible_mid", "flexible_switch", "new_employer", "none",
                                 "contributing"]))
    m = _day(draw, -200, 420)
    long_ago = dt.date(2015, 1, 1)
    out: list[dict] = {
        "in_service": lambda: [employment(pid, long_ago)],
        "retired": lambda: [employment(pid, long_ago, psn_type="12")],
        "retire_mid": lambda: [employment(pid, long_ago, m - dt.timedelta(days=1)), employment(pid, m, psn_type="12")],
        "unretire": lambda: [employment(pid, long_ago, m - dt.timedelta(days=1), psn_type="12"), employment(pid, m)],
        "flexible_mid": lambda: [employment(pid, m, flexible=True)],
        "flexible_switch": lambda: [employment(pid, long_ago, m - dt.timedelta(days=1)),
                                    employment(pid, m, flexible=True)],
        "new_employer": lambda: [employment(pid, m)],
        "none": lambda: [],
        # a retiree still contributing who retired before 2023 (§4.2: 2% of own base if combined, not 95)
        "contributing": lambda: [dict(employment(pid, long_ago, psn_type="12"), retire_kind="contributing",
                                      contrib_mode=draw(st.sampled_from(["combined", "combined", "pooling_only"])),
                                      contrib_base=draw(st.integers(300_000, 900_000)))],
    }[kind]()
    if out and draw(st.integers(0, 2)) == 0:  # a benefit state for a while: an overlapping later period wins (latest begin)
        base = out[-1]
        s = max(base["begndate"] + dt.timedelta(days=1), _day(draw, -30, 420))
        end = draw(st.one_of(st.none(), st.just(s + dt.timedelta(days=draw(st.integers(0, 150))))))
        out.append(employment(pid, s, end, psn_type=base["psn_type"], flexible=base["flexible"],
                              benefit=draw(st.sampled_from(STATES))))
    if twins and out and draw(st.integers(0, 4)) == 0:  # a same-day twin period: the tie rule decides
        twin = dict(draw(st.sampled_from(out)))
        twin.update(psn_type=draw(st.sampled_from(["11", "12"])), benefit=draw(st.sampled_from(["normal", *STATES])),
                    flexible=draw(st.booleans()))
        out.append(employment(pid, twin["begndate"], twin["enddate"], psn_type=twin["psn_type"],
                              flexible=twin["flexible"], benefit=twin["benefit"]))
    if out and draw(st.integers(0, 4)) == 0:  # a gap: the last period ends early
        last = out[-1]
        out[-1] = dict(last, enddate=last["begndate"] + dt.timedelta(days=draw(st.integers(0, 200))))
    return out


def _cert_valid(cert: tuple, on: dt.date) -> bool:
    return cert[4] <= on and (cert[5] is None or on <= cert[5])


@st.composite
def reversals(draw, mine: list[dict], certs: list) -> list[dict]:
    """Up to 2 reversals of a person's lines, 0–60 days later (not of a line whose certification has lapsed by
    then: validation would reject it, CERT_INVALID)."""
    out = []
    for orig in draw(st.lists(st.sampled_from(mine), max_size=2, unique_by=lambda r: r["setl_id"])) if mine else []:
        later = orig["setl_time"] + dt.timedelta(days=draw(st.integers(0, 60)), seconds=1)
        cert = next((c for c in certs if c[1] == orig["dise_cert_code"]), None)
        if cert is None or _cert_valid(cert, later.date()):
            out.append(reversal_of(orig, later.strftime("%Y-%m-%d %H:%M:%S")))
    return out


@st.composite
def residents(draw, persons: list, certs: list, rows: list) -> None:
    """0–2 Xiangyang residents with certifications and lines of §4.7 (reversals included)."""
    for i in range(draw(st.integers(0, 2))):
        pid = f"Y{i}"
        persons.append(person(pid, admdvs=draw(st.sampled_from(COUNTIES))))
        for j, (kind, codg) in enumerate(draw(st.lists(st.sampled_from(RES_CERTS), max_size=3))):
            begin = _day(draw, -30, 300)
            end = draw(st.one_of(st.none(), st.just(begin + dt.timedelta(days=draw(st.integers(0, 300))))))
            certs.append((pid, f"{pid}C{j}", codg, kind, begin, end))
        mine: list[dict] = []
        for _ in range(draw(st.integers(0, 8))):
            when = dt.datetime(2025, 1, 1, 8) + dt.timedelta(days=draw(st.integers(0, 450)),
                                                             minutes=draw(st.integers(0, 600)))
            med_type = draw(st.sampled_from(RES_MED_TYPES))
            inst = "XYP" if med_type == "41" else draw(st.sampled_from(RES_INSTITUTIONS))
            a_max, b_max = SIZES[draw(st.sampled_from(["tiny", "small", "small"]))]
            row = line(pid, when.strftime("%Y-%m-%d %H:%M:%S"), inst, med_type=med_type, insutype="390",
                       a=draw(st.integers(0, a_max)), b=draw(st.integers(0, b_max)),
                       own=draw(st.integers(0, 50_000)), over=draw(st.integers(0, 5_000)))
            if med_type in (*CERT_MED_TYPES, "41"):  # §3.4 A-25: a pharmacy purchase under a certification too
                valid = [c[1] for c in certs if c[0] == pid and _cert_valid(c, when.date())]
                row["dise_cert_code"] = draw(st.sampled_from([None, *valid]))
            mine.append(row)
        rows += mine + draw(reversals(mine, certs))


@st.composite
def families(draw, persons: list) -> tuple[list, list]:
    """Bindings (authorisers: employees; users: anyone else) — several users per authoriser, several authorisers
    per user in binding-date order (A-13), sometimes a mutual pair — and opening balances, often small."""
    emps = [p["psn_no"] for p in persons if p["insutype"] == "310"]
    everyone = [p["psn_no"] for p in persons]
    binds = []
    if emps and len(everyone) > 1:
        for _ in range(draw(st.integers(0, 5))):
            a, u = draw(st.sampled_from(emps)), draw(st.sampled_from(everyone))
            if a != u:
                begin = dt.date(2024, 6, 1) + dt.timedelta(days=draw(st.sampled_from([0, draw(st.integers(0, 400))])))
                end = draw(st.one_of(st.none(), st.just(begin + dt.timedelta(days=draw(st.integers(0, 300))))))
                binds.append((a, u, draw(st.sampled_from(["spouse", "parent", "child"])), begin, end))
        if len(emps) >= 2 and draw(st.booleans()):  # a mutual pair: aid never cascades
            binds += [(emps[0], emps[1], "spouse", dt.date(2024, 1, 1), None),
                      (emps[1], emps[0], "spouse", dt.date(2024, 3, 1), None)]
    openings = [(p, dt.date(2024, 12, 31), draw(st.sampled_from([0, 500, draw(st.integers(0, 200_000))])))
                for p in emps if draw(st.integers(0, 3))]
    return binds, openings


@st.composite
def population(draw, twins: bool = True):
    n = draw(st.integers(1, 3))
    persons, emps, certs, rows = [], [], [], []
    for i in range(n):
        pid = f"E{i}"
        persons.append(employee(pid, admdvs=draw(st.sampled_from(COUNTIES))))
        emps += draw(periods(pid, twins))
        for j, (kind, codg) in enumerate(draw(st.lists(st.sampled_from(CERTS), max_size=3))):
            begin = _day(draw, -30, 300)
            end = draw(st.one_of(st.none(), st.just(begin + dt.timedelta(days=draw(st.integers(0, 300))))))
            certs.append((pid, f"{pid}C{j}", codg, kind, begin, end))
        mine: list[dict] = []
        # dates where the status changes: period begins and ends, a flexible worker's sixth month
        edges = [p["begndate"] for p in emps if p["psn_no"] == pid]
        edges += [p["enddate"] for p in emps if p["psn_no"] == pid and p["enddate"]]
        edges += [add_months(p["begndate"], 6) for p in emps if p["psn_no"] == pid and p["flexible"]]
        edges = [e for e in edges if Y0 <= e <= dt.date(2026, 3, 31)]
        for _ in range(draw(st.integers(0, 10))):
            when = dt.datetime(2025, 1, 1, 8) + dt.timedelta(days=draw(st.integers(0, 450)),
                                                             minutes=draw(st.integers(0, 600)))
            if edges and draw(st.integers(0, 2)) == 0:
                edge = draw(st.sampled_from(edges)) + dt.timedelta(days=draw(st.integers(-2, 2)))
                when = dt.datetime.combine(edge, dt.time(8)) + dt.timedelta(minutes=draw(st.integers(0, 600)))
            if mine and draw(st.integers(0, 3)) == 0:  # another visit the same day
                when = mine[-1]["setl_time"] + dt.timedelta(seconds=draw(st.integers(1, 3000)))
            med_type = draw(st.sampled_from(MED_TYPES))
            inst = draw(st.sampled_from(HOSPITALS + (["XYP"] * 3 if med_type in ("41", "11") else [])))
            group = "stay" if med_type in STAY_MED_TYPES else "chronic" if med_type in CERT_MED_TYPES else "outpatient"
            a_max, b_max = SIZES[draw(st.sampled_from(SIZE_CHOICES[group]))]
            row = line(pid, when.strftime("%Y-%m-%d %H:%M:%S"), inst, med_type=med_type, insutype="310",
                       a=draw(st.integers(0, a_max) | st.integers(a_max // 2, a_max)), b=draw(st.integers(0, b_max)),
                       own=draw(st.integers(0, 50_000)), over=draw(st.integers(0, 5_000)),
                       offsite_type=draw(st.sampled_from([None, "101", "903"])),
                       is_emergency_rescue=draw(st.booleans()),
                       presc_fixmedins_code=draw(st.sampled_from([None, "XY1", "XY2", "XY3"])) if inst == "XYP" else None)
            # an interim settlement of an earlier stay (not an emergency visit: merging 13 into a stay is §3.5's)
            stays = [m for m in mine if m["med_type"] in STAY_MED_TYPES and m["med_type"] != "13"]
            if med_type in STAY_MED_TYPES and med_type != "13" and stays and draw(st.integers(0, 2)) == 0:
                row["mdtrt_id"] = draw(st.sampled_from(stays))["mdtrt_id"]
            if med_type in (*CERT_MED_TYPES, "41"):  # validation lets only a valid certification through (A-25: 41 too)
                valid = [c[1] for c in certs if c[0] == pid and _cert_valid(c, when.date())]
                row["dise_cert_code"] = draw(st.sampled_from([None, *valid]))
            mine.append(row)
        rows += mine + draw(reversals(mine, certs))
        # §1.12: emergency lines and the stay they turned into, in one month, across months and years
        rows += draw(merged_stays(pid, HOSPITALS, insutype="310"))
    draw(residents(persons, certs, rows))
    binds, openings = draw(families(persons))
    return persons, emps, (certs, binds, openings), rows


def _regs(persons, emps, extra):
    certs, binds, openings = extra
    r = registers(persons, certifications=certs, employment=emps)
    r["family_bindings"] = pl.DataFrame(binds, schema=BIND_SCHEMA, orient="row")
    r["account_balances"] = pl.DataFrame(openings, schema=BAL_SCHEMA, orient="row")
    return r


def _reference(rows: list[dict], regs: dict[str, pl.DataFrame]) -> tuple[list[dict], dict]:
    """The reference adjudicator end to end: funds, then personal accounts (it calls the accounts twin)."""
    return adjudicate_reference(lines(rows).to_dicts(), {k: v.to_dicts() for k, v in regs.items()}, POL)


@settings(max_examples=examples(35), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(population())
def test_engine_equals_reference(pop):
    persons, emps, certs, rows = pop
    regs = _regs(persons, emps, certs)
    res = adjudicate(lines(rows), regs, POL)
    if not rows:
        assert res.adjudicated.height == 0
        return
    ref, state = _reference(rows, regs)
    got = res.adjudicated.sort("setl_id")
    want = sorted(ref, key=lambda r: r["setl_id"])
    event(f"family accounts paid: {bool((got['acct_mulaid_pay'] > 0).any())}")
    event(f"own account short (cash after account): {bool(((got['acct_pay'] > 0) & (got['psn_cash_pay'] > 0)).any())}")
    event(f"Xiangyang resident lines paid: {bool(got.filter(pl.col('scheme') == 'resident')['hifp_pay'].gt(0).any())}")
    # Two periods of a person beginning on the same day: the status tie rule (status.py) is this module's; the
    # accounts stage picks its period on its own (transforms/accounts.py), so compare the funds only there.
    starts = [(e["psn_no"], e["begndate"]) for e in emps]
    cols = COMPARED if len(set(starts)) == len(starts) else [c for c in COMPARED if c not in ACCOUNT_COLUMNS]
    assert got.select(["setl_id", *cols]).to_dicts() == [{k: r[k] for k in ["setl_id", *cols]} for r in want]
    assert len(got) == len(rows)
    # status and benefit period on every line that is not a reversal
    fwd = got.filter(pl.col("orig_setl_id").is_null())
    want_fwd = [r for r in want if "benefit_block" in r]
    fwd = fwd.filter(pl.col("scheme") == "employee")
    assert fwd.select("setl_id", "benefit_block", "acct_allowed", "emp_status").to_dicts() == [
        {k: r[k] for k in ("setl_id", "benefit_block", "acct_allowed", "emp_status")} for r in want_fwd]
    # every accumulator ends where the reference's does
    acc = {(r["psn_no"], r["year"], r["name"]): r["value"] for r in res.accumulators.to_dicts()
           if r["name"].startswith(("emp_", "xyr_")) and r["value"] != 0}
    assert acc == {k: v for k, v in state.items() if v != 0}
    # outside the benefit period nothing is paid and nothing counts; a blocked line is all the person's
    # (a stay line that settles a merged stay there is owed nothing and recovers what its emergency lines were
    # paid, §1.12 A-31: never more than nothing)
    settles = fwd.filter(pl.col("benefit_block").is_not_null() & pl.col("merged_setl_ids").is_not_null())
    assert (settles["hifp_pay"] <= 0).all()
    blocked = fwd.filter(pl.col("benefit_block").is_not_null() & pl.col("merged_setl_ids").is_null())
    assert blocked.select(pl.col("hifp_pay").abs().sum() + pl.col("act_pay_dedc").abs().sum()).item() == 0
    assert (blocked["psn_part_amt"] == blocked["medfee_sumamt"]).all()
    # no critical illness, no assistance for employees nor for these Xiangyang residents (§4.7)
    assert got.select(pl.col("hifmi_pay").abs().sum() + pl.col("maf_pay").abs().sum()
                      + pl.col("maf_tilt_pay").abs().sum()).item() == 0
    codes = ",".join(got["reason_codes"].to_list())
    from transforms.line_reasons import LINE_REASONS
    assert {c for c in codes.split(",") if c} <= set(LINE_REASONS)


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(population(twins=False))
def test_month_by_month_equals_one_run(pop):
    """DESIGN 'Incremental months': the carried emp_* accumulators (and account balances) make monthly runs
    equal one run. Without same-day twin periods: the accounts stage's choice between them is its own."""
    persons, emps, certs, rows = pop
    regs = _regs(persons, emps, certs)
    whole = adjudicate(lines(rows), regs, POL).adjudicated.sort("setl_id")
    done = [r.adjudicated for r in month_by_month(rows, lambda m, **kw: adjudicate(lines(m), regs, POL, **kw),
                                                  accounts=ACCOUNTS)]
    monthly = pl.concat(done, how="diagonal_relaxed").sort("setl_id") if done else whole.clear()
    assert monthly.select(whole.columns).to_dicts() == whole.to_dicts()
