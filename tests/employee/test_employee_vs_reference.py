"""Xiangyang employees (POLICY §4): the vectorized engine equals the plain-Python reference to the fen, and
month-by-month runs equal one run — on random employees (in service, retired, retiring or returning to work
mid-year, flexible workers starting mid-year, new employer enrolments, suspended / arrears / unverified /
terminated months, gaps, overlapping periods), random lines of every employee ledger and reversals."""

from __future__ import annotations

import datetime as dt
import inspect

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.policies import load_policies
from tests.builders import employee, employment, line, lines, registers, reversal_of
from transforms.engine import MONEY_COLUMNS, adjudicate
from transforms.reference.adjudicate import adjudicate_reference
from transforms.reference.employee import add_months

try:  # the personal-account stage (transforms/accounts.py) and its twin, where this tree has them
    from transforms.reference.accounts import accounts_reference
except ImportError:  # pragma: no cover - accounts not merged: the engine leaves acct_pay at 0 as the reference does
    accounts_reference = None
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


def _day(draw, lo: int, hi: int) -> dt.date:
    return Y0 + dt.timedelta(days=draw(st.integers(lo, hi)))


@st.composite
def periods(draw, pid: str, twins: bool = True) -> list[dict]:
    kind = draw(st.sampled_from(["in_service", "retired", "retired", "retire_mid", "retire_mid", "unretire",
                                 "in_service", "flexible_mid", "flexible_switch", "new_employer", "none"]))
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
            if med_type in CERT_MED_TYPES:  # validation lets only a certification valid on the date through
                valid = [c[1] for c in certs if c[0] == pid and _cert_valid(c, when.date())]
                row["dise_cert_code"] = draw(st.sampled_from([None, *valid]))
            mine.append(row)
        rows += mine
        for orig in draw(st.lists(st.sampled_from(mine), max_size=2, unique_by=lambda r: r["setl_id"])) if mine else []:
            later = orig["setl_time"] + dt.timedelta(days=draw(st.integers(0, 60)), seconds=1)
            cert = next((c for c in certs if c[1] == orig["dise_cert_code"]), None)
            if cert is None or _cert_valid(cert, later.date()):
                rows.append(reversal_of(orig, later.strftime("%Y-%m-%d %H:%M:%S")))  # else CERT_INVALID
    return persons, emps, certs, rows


def _regs(persons, emps, certs):
    return registers(persons, certifications=certs, employment=emps)


def _reference(rows: list[dict], regs: dict[str, pl.DataFrame]) -> tuple[list[dict], dict]:
    """The reference funds (transforms/reference/employee.py), then the reference personal accounts
    (transforms/reference/accounts.py) over the person's share, as the engine chains them."""
    typed = lines(rows).to_dicts()
    plain = {k: v.to_dicts() for k, v in regs.items()}
    ref, state = adjudicate_reference(typed, plain, POL)
    if accounts_reference is None:
        return ref, state
    by_id = {r["setl_id"]: r for r in typed}
    asked = [{**{k: by_id[r["setl_id"]][k] for k in ("setl_id", "psn_no", "setl_time", "fixmedins_code", "insutype",
                                                     "orig_setl_id")},
              "psn_part_amt": r["psn_part_amt"], "ledger": r["ledger"], "rule_pending": not r.get("_handled", True),
              "acct_allowed": r.get("acct_allowed", True)} for r in ref]
    times = [r["setl_time"].date() for r in typed]
    period = (min(times).replace(day=1), max(times))
    period = (period[0], (period[1].replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1))
    paid, _, _ = accounts_reference(asked, plain, POL, period)
    for r in ref:
        r.update(paid[r["setl_id"]])
        r["psn_cash_pay"] = r["psn_part_amt"] - r["acct_pay"] - r["acct_mulaid_pay"]
    return ref, state


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
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
    # Two periods of a person beginning on the same day: the status tie rule (status.py) is this module's; the
    # accounts stage picks its period on its own (transforms/accounts.py), so compare the funds only there.
    starts = [(e["psn_no"], e["begndate"]) for e in emps]
    cols = COMPARED if len(set(starts)) == len(starts) else [c for c in COMPARED if c not in ACCOUNT_COLUMNS]
    assert got.select(["setl_id", *cols]).to_dicts() == [{k: r[k] for k in ["setl_id", *cols]} for r in want]
    assert len(got) == len(rows)
    # status and benefit period on every line that is not a reversal
    fwd = got.filter(pl.col("orig_setl_id").is_null())
    want_fwd = [r for r in want if "benefit_block" in r]
    assert fwd.select("setl_id", "benefit_block", "acct_allowed", "emp_status").to_dicts() == [
        {k: r[k] for k in ("setl_id", "benefit_block", "acct_allowed", "emp_status")} for r in want_fwd]
    # every accumulator ends where the reference's does
    acc = {(r["psn_no"], r["year"], r["name"]): r["value"] for r in res.accumulators.to_dicts()
           if r["name"].startswith("emp_") and r["value"] != 0}
    assert acc == {k: v for k, v in state.items() if v != 0}
    # outside the benefit period nothing is paid and nothing counts; a blocked line is all the person's
    blocked = fwd.filter(pl.col("benefit_block").is_not_null())
    assert blocked.select(pl.col("hifp_pay").abs().sum() + pl.col("act_pay_dedc").abs().sum()).item() == 0
    assert (blocked["psn_part_amt"] == blocked["medfee_sumamt"]).all()
    # no critical illness, no assistance for employees
    assert got.select(pl.col("hifmi_pay").abs().sum() + pl.col("maf_pay").abs().sum()
                      + pl.col("maf_tilt_pay").abs().sum()).item() == 0
    codes = ",".join(got["reason_codes"].to_list())
    from transforms.line_reasons import LINE_REASONS
    assert {c for c in codes.split(",") if c} <= set(LINE_REASONS)


def _split_by_month(rows):
    months = sorted({r["setl_time"].strftime("%Y-%m") for r in rows})
    return [(m, [r for r in rows if r["setl_time"].strftime("%Y-%m") == m]) for m in months]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(population(twins=False))
def test_month_by_month_equals_one_run(pop):
    """DESIGN 'Incremental months': the carried emp_* accumulators (and account balances) make monthly runs
    equal one run. Without same-day twin periods: the accounts stage's choice between them is its own."""
    persons, emps, certs, rows = pop
    regs = _regs(persons, emps, certs)
    whole = adjudicate(lines(rows), regs, POL).adjudicated.sort("setl_id")
    carried = balances = None
    done, ledgers = [], []
    for month, month_rows in _split_by_month(rows):
        year = int(month[:4])
        if carried is not None:
            carried = carried.filter(pl.col("year") == year)
        accounts = {"balances": balances, "original_ledger": pl.concat(ledgers) if ledgers else None} if ACCOUNTS else {}
        res = adjudicate(lines(month_rows), regs, POL, carried=carried,
                         originals=pl.concat(done, how="diagonal_relaxed") if done else None, **accounts)
        done.append(res.adjudicated)
        if ACCOUNTS:
            ledgers.append(res.account_ledger)
            balances = res.account_balances
        new = res.accumulators
        carried = new if carried is None else pl.concat([carried.join(new, on=["psn_no", "year", "name"], how="anti"),
                                                         new])
    monthly = pl.concat(done, how="diagonal_relaxed").sort("setl_id") if done else whole.clear()
    assert monthly.select(whole.columns).to_dicts() == whole.to_dicts()
