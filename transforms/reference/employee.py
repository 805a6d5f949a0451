"""Reference rules of the Xiangyang employee scheme (POLICY §4), one line at a time: the plain-Python twin of
transforms/employee/ (status.py, outpatient.py, inpatient.py, chronic.py, stages.py — read those for the rules
and their readings). Reversals are handled before this is called (transforms/reference/adjudicate.py: every
amount and every recorded accumulator of the original taken back).

Accumulators (ctx.state, per person and year): emp_op_ded (eligible in-catalogue outpatient cost toward the
deductible), emp_op_paid (outpatient pooling paid, against its cap), emp_chronic_used:<dise_cert_code> (in-scope
cost counted within a disease's limit), emp_stay_ded_used:<mdtrt_id> (deductible taken by a stay's lines),
emp_hifp_paid (basic fund paid on annual_cap.hifp_ledgers, A-17).
"""

from __future__ import annotations

import calendar
import datetime as dt
from typing import Any

from flows.policies import MissingParameter
from transforms.money import apply_rate, rate_to_bp
from transforms.params import yuan_to_fen
from transforms.reference.adjudicate import Ctx, record, valid_on
from transforms.reference.resident_chronic import within_disease_limit

STAYS = ("inpatient", "maternity", "day_surgery")
OUTPATIENT = ("outpatient_pool", "pharmacy")
CHRONIC = ("chronic", "special_drug")
DISEASE_KINDS = ("chronic", "special", "special_transplant", "special_dialysis", "special_mental")
STATUS_BY_PSN_TYPE = {"11": "in_service", "12": "retired"}


def add_months(d: dt.date, n: int) -> dt.date:
    """d + n calendar months, the day clamped to the month's last (31 Aug + 6 → 28/29 Feb)."""
    y, m = divmod(d.month - 1 + n, 12)
    year, month = d.year + y, m + 1
    return dt.date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def _require(ctx: Ctx, name: str, expected: Any) -> None:
    if ctx.val(name) != expected:
        raise NotImplementedError(f"{name} = {ctx.val(name)!r}: only {expected!r} is implemented")


def status(ctx: Ctx) -> dict[str, Any]:
    """The period valid on the date (latest begin; ties: normal, retired, not flexible, benefit name) and the
    benefit period: {status, flexible, benefit, block, acct_allowed}."""
    periods = ctx.employment
    valid = sorted((p for p in periods if valid_on(p, ctx.on)),
                   key=lambda p: (-p["begndate"].toordinal(), p["benefit"] != "normal", p["psn_type"] != "12",
                                  bool(p["flexible"]), p["benefit"]))
    period = valid[0] if valid else None
    flex = [p["begndate"] for p in periods if p["flexible"]]
    employer = [p["begndate"] for p in periods if not p["flexible"]]
    on = ctx.on
    months = ctx.val("outpatient_pool.flexible_waiting_months")
    waiting = bool(period and period["flexible"] and flex and min(flex) <= on < add_months(min(flex), months))
    enrol = bool(ctx.val("outpatient_pool.employer_enrolment_month_waiting") and employer
                 and (min(employer).year, min(employer).month) == (on.year, on.month))
    benefit = period["benefit"] if period else None
    no_acct_state = benefit in [str(s) for s in ctx.val("outpatient_pool.no_fund_no_account_states") or []]
    acct_state = benefit in [str(s) for s in ctx.val("outpatient_pool.no_fund_account_allowed_states") or []]
    if no_acct_state:
        block = benefit.upper()
    elif waiting:
        block = "WAITING_PERIOD"
    elif enrol:
        block = "EMPLOYER_ENROLMENT_MONTH"
    elif period is None:
        block = "NO_EMPLOYMENT_PERIOD"
    elif acct_state:
        block = benefit.upper()
    else:
        block = None
    # no period on the date is the hard kind; A-26: the hard kind bars the account on outpatient-type lines
    no_period_hard = period is None and ctx.val("outpatient_pool.no_employment_period_kind") == "hard"
    hard = no_acct_state or waiting or enrol or no_period_hard
    bar = ctx.ledger in [str(x) for x in ctx.val("outpatient_pool.hard_exclusion_account_bar_ledgers") or []]
    return {"status": STATUS_BY_PSN_TYPE.get(period["psn_type"]) if period else None,
            "flexible": bool(period and period["flexible"]), "benefit": benefit, "block": block,
            "acct_allowed": not (hard and bar)}


def class_b(res: dict, ctx: Ctx) -> None:
    """§1.4: class-B pre-self-pay on the ledgers of A-16 (employee values); in-scope cost of every line."""
    a, b = ctx.line["cls_a_amt"], ctx.line["cls_b_amt"]
    if b != 0 and ctx.ledger in ctx.val("inpatient.class_b_preselfpay_ledgers"):
        res["preselfpay_amt"] = apply_rate(b, rate_to_bp(ctx.val("inpatient.class_b_preselfpay_rate")))
    res["inscp_scp_amt"] = a + b - res["preselfpay_amt"]


def outpatient(res: dict, ctx: Ctx, st: dict) -> tuple[int, int]:
    """§4.3: (raw, paid after the outpatient cap); fills act_pay_dedc, pool_prop_selfpay."""
    if not ctx.val("outpatient_pool.in_force"):
        return 0, 0
    at_pharmacy = ctx.inst.get("fixmedins_type") == "pharmacy" or ctx.inst.get("facility") == "pharmacy"
    if ctx.ledger == "pharmacy" or at_pharmacy:
        _require(ctx, "outpatient_pool.pharmacy_level_from", "prescribing_institution")
        level = ctx.presc_inst["dedc_hosp_lv"] if ctx.presc_inst else None
    else:
        level = ctx.inst["dedc_hosp_lv"]
    _require(ctx, "outpatient_pool.deductible_cost_columns", ["cls_a_amt", "cls_b_amt"])
    _require(ctx, "outpatient_pool.continuous_across_retirement", True)
    _require(ctx, "outpatient_pool.separate_from_chronic", True)
    if level is None or str(level) not in [str(v) for v in ctx.val("outpatient_pool.levels_allowed")]:
        return 0, 0
    level = str(level)
    x = ctx.line["cls_a_amt"] + ctx.line["cls_b_amt"]
    deductible = yuan_to_fen(ctx.keyed("outpatient_pool.deductible", st["status"]))
    taken = min(max(deductible - ctx.acc("emp_op_ded"), 0), x)
    record(res, ctx, "emp_op_ded", x)
    after = x - taken
    name = "outpatient_pool.fund_rate_retired" if st["status"] == "retired" else "outpatient_pool.fund_rate_in_service"
    raw = apply_rate(after, rate_to_bp(ctx.keyed(name, level)))
    cap = yuan_to_fen(ctx.keyed("outpatient_pool.annual_cap", st["status"]))
    paid = min(raw, max(0, cap - ctx.acc("emp_op_paid")))
    record(res, ctx, "emp_op_paid", paid)
    res["act_pay_dedc"], res["pool_prop_selfpay"] = taken, after - raw
    return raw, paid


def stay(res: dict, ctx: Ctx, st: dict) -> tuple[int, int]:
    """§4.4 (resident pattern of §3.5–§3.6, employee values A-12): deductible per stay, rate by level."""
    line, in_scope = ctx.line, res["inscp_scp_amt"]
    rescue = bool(line.get("is_emergency_rescue"))
    if line["med_type"] == "13" and rescue:
        _require(ctx, "emergency_day_surgery.rescue_without_stay_as_inpatient", True)
        _require(ctx, "emergency_day_surgery.rescue_deductible_applies", True)
    if ctx.ledger == "day_surgery":
        _require(ctx, "emergency_day_surgery.day_surgery_fund_rate_from", "inpatient.fund_rate")
    if not ctx.in_city:
        offsite = str(ctx.val("emergency_day_surgery.rescue_offsite_type")) if rescue else ctx.offsite()
        res["offsite_preselfpay_amt"] = apply_rate(in_scope, rate_to_bp(ctx.keyed("inpatient.offsite_preselfpay_rate",
                                                                                  offsite)))
    base = in_scope - res["offsite_preselfpay_amt"]
    if ctx.ledger == "day_surgery":
        deductible = yuan_to_fen(ctx.val("emergency_day_surgery.day_surgery_deductible"))
    else:
        name = "inpatient.deductible_in_city" if ctx.in_city else "inpatient.deductible_out_of_city"
        deductible = yuan_to_fen(ctx.keyed(name, ctx.level))
    name = f"emp_stay_ded_used:{line['mdtrt_id']}"  # one deductible per stay, over its interim settlements
    taken = min(max(base, 0), max(0, deductible - ctx.acc(name)))
    record(res, ctx, name, taken)
    after = max(base - taken, 0)
    raw = apply_rate(after, rate_to_bp(ctx.keyed("inpatient.fund_rate", ctx.level)))
    res["act_pay_dedc"], res["pool_prop_selfpay"] = taken, after - raw
    return raw, raw


def chronic(res: dict, ctx: Ctx, st: dict) -> tuple[int, int]:
    """§4.4: no deductible, rate by certification kind, yearly in-scope limit per certified disease (A-21)."""
    if yuan_to_fen(ctx.val("chronic.deductible")) != 0:
        raise NotImplementedError("chronic.deductible is not 0: a chronic deductible is not implemented (A-12)")
    in_scope = max(res["inscp_scp_amt"], 0)
    cert = ctx.cert
    kind = cert["kind"] if cert else None
    if ctx.ledger == "special_drug":
        rate = rate_to_bp(ctx.val("chronic.special_drug_rate"))  # missing for employees: the run stops
    elif kind in DISEASE_KINDS:
        rate = rate_to_bp(ctx.keyed("chronic.fund_rate", kind))
    else:
        res["chronic_over_limit_amt"] = 0
        return 0, 0
    limits = {str(k): v for k, v in (ctx.val("chronic.annual_limit_per_disease") or {}).items()}
    if limits.get(kind) is None:
        raise MissingParameter(ctx.region, ctx.scheme, f"chronic.annual_limit_per_disease[{kind}]", ctx.on)
    within = within_disease_limit(res, ctx, f"emp_chronic_used:{cert['dise_cert_code']}", in_scope, limits[kind])
    raw = apply_rate(within, rate)
    res["pool_prop_selfpay"] = within - raw
    res["chronic_over_limit_amt"] = in_scope - within
    return raw, raw


BASIC = {"outpatient_pool": outpatient, "pharmacy": outpatient, "inpatient": stay, "maternity": stay,
         "day_surgery": stay, "chronic": chronic, "special_drug": chronic}


def adjudicate(res: dict, ctx: Ctx) -> None:
    """One non-reversal line of a Xiangyang employee: fills res (money, benefit_block, acct_allowed)."""
    class_b(res, ctx)
    st = status(ctx)
    res["benefit_block"], res["acct_allowed"], res["emp_status"] = st["block"], st["acct_allowed"], st["status"]
    rule = BASIC.get(ctx.ledger)
    res["_handled"] = rule is not None
    if rule is None or st["block"] is not None:  # RULE_PENDING, or outside the benefit period: nothing counts
        return
    raw, paid = rule(res, ctx, st)
    if ctx.ledger in [str(x) for x in ctx.val("annual_cap.hifp_ledgers")]:
        if ctx.ledger == "day_surgery":
            _require(ctx, "emergency_day_surgery.day_surgery_counts_toward_annual_cap", True)
        cap = yuan_to_fen(ctx.val("annual_cap.hifp")) if raw else 0
        paid = min(paid, max(0, cap - ctx.acc("emp_hifp_paid")))
        record(res, ctx, "emp_hifp_paid", paid)
    res["hifp_pay"], res["hifp_cap_cut"] = paid, raw - paid
