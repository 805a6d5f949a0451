"""Reference rules of the Xiangyang residents (POLICY §4.7), one line at a time: the plain-Python twin of
transforms/resident/xiangyang.py (read that module for the rules and their readings). Reversals are handled
before this is called (transforms/reference/adjudicate.py).

Accumulators (ctx.state, per person and year): xyr_op_cost (outpatient cost counted toward the year's 800),
xyr_op_paid (general outpatient paid, against 400), xyr_chronic_used:<dise_cert_code> (in-scope cost within a
disease's limit), xyr_chronic_ded (the yearly 600 taken), xyr_hifp_paid (basic fund on annual_cap.hifp_ledgers).
"""

from __future__ import annotations

from transforms.enrich import STAY_LEDGERS
from transforms.money import apply_rate, rate_to_bp
from transforms.params import yuan_to_fen
from transforms.reference.adjudicate import Ctx, record
from transforms.reference.resident import class_b
from transforms.reference.resident_chronic import DISEASE_KINDS, within_disease_limit


def _require(ctx: Ctx, name: str, expected) -> None:
    if ctx.val(name) != expected:
        raise NotImplementedError(f"{name} = {ctx.val(name)!r}: only {expected!r} is implemented")


def stop_where_missing(ctx: Ctx) -> None:
    """A line §4.7 gives no rule for: looking its parameter up raises MissingParameter naming it."""
    if ctx.ids & set(ctx.val("assistance.assistance_identities")):
        ctx.val("assistance.class_by_identity")
    if ctx.ledger in ctx.val("critical_illness.ledgers"):
        ctx.val("critical_illness.threshold")
    if ctx.ledger in STAY_LEDGERS:
        if ctx.in_city and ctx.ledger != "day_surgery":
            ctx.val("inpatient.deductible_in_city")
        if not ctx.in_city:
            ctx.val("inpatient.offsite_preselfpay_rate")
            if ctx.ledger != "day_surgery":
                ctx.val("inpatient.deductible_out_of_city")
        ctx.val("inpatient.fund_rate")
        raise NotImplementedError("Xiangyang resident stays are not implemented")
    if ctx.ledger == "two_disease":
        ctx.val("two_disease.fund_rate")
    if ctx.ledger == "special_drug":
        ctx.val("chronic.special_drug_rate")


def outpatient(res: dict, ctx: Ctx) -> tuple[int, int]:
    """General outpatient: 50% of the year's first 800 of in-scope cost, then the 400 cap; (raw, paid)."""
    if ctx.ledger == "pharmacy" or ctx.inst.get("fixmedins_type") == "pharmacy" or ctx.inst.get("facility") == "pharmacy":
        return 0, 0
    if yuan_to_fen(ctx.val("outpatient_pool.deductible")) != 0:
        raise NotImplementedError("outpatient_pool.deductible is not 0")
    if ctx.level not in [str(v) for v in ctx.val("outpatient_pool.levels_allowed")]:
        return 0, 0
    if not ctx.in_city and ctx.val("outpatient_pool.offsite_requires_enabled") and not ctx.inst.get(
            "offsite_outpatient_enabled"):
        return 0, 0
    x = max(res["inscp_scp_amt"], 0)
    counted = min(x, max(0, yuan_to_fen(ctx.val("outpatient_pool.annual_cost_limit")) - ctx.acc("xyr_op_cost")))
    record(res, ctx, "xyr_op_cost", counted)
    raw = apply_rate(counted, rate_to_bp(ctx.keyed("outpatient_pool.fund_rate", ctx.level)))
    paid = min(raw, max(0, yuan_to_fen(ctx.val("outpatient_pool.annual_cap")) - ctx.acc("xyr_op_paid")))
    record(res, ctx, "xyr_op_paid", paid)
    res["pool_prop_selfpay"] = counted - raw
    return raw, paid


def chronic(res: dict, ctx: Ctx) -> tuple[int, int]:
    """37 diseases: the disease's limit, then the person's yearly 600, then the kind's rate."""
    kind = ctx.cert["kind"] if ctx.cert else None
    if kind not in DISEASE_KINDS:
        res["chronic_over_limit_amt"] = 0
        return 0, 0
    _require(ctx, "chronic.deductible_scope", "person")
    in_scope = max(res["inscp_scp_amt"], 0)
    within = within_disease_limit(res, ctx, f"xyr_chronic_used:{ctx.cert['dise_cert_code']}", in_scope,
                                  ctx.keyed("chronic.annual_limit_per_disease", kind))
    taken = min(within, max(0, yuan_to_fen(ctx.val("chronic.deductible")) - ctx.acc("xyr_chronic_ded")))
    record(res, ctx, "xyr_chronic_ded", taken)
    raw = apply_rate(within - taken, rate_to_bp(ctx.keyed("chronic.fund_rate", kind)))
    res["act_pay_dedc"], res["pool_prop_selfpay"] = taken, within - taken - raw
    res["chronic_over_limit_amt"] = in_scope - within
    return raw, raw


BASIC = {"outpatient_pool": outpatient, "pharmacy": outpatient, "chronic": chronic}


def adjudicate(res: dict, ctx: Ctx) -> None:
    """One non-reversal line of a Xiangyang resident: fills res."""
    class_b(res, ctx)
    stop_where_missing(ctx)
    rule = BASIC.get(ctx.ledger)
    res["_handled"] = rule is not None
    if rule is None:
        return
    raw, paid = rule(res, ctx)
    if ctx.ledger in [str(x) for x in ctx.val("annual_cap.hifp_ledgers")]:
        cap = yuan_to_fen(ctx.val("annual_cap.hifp")) if raw else 0
        paid = min(paid, max(0, cap - ctx.acc("xyr_hifp_paid")))
        record(res, ctx, "xyr_hifp_paid", paid)
    res["hifp_pay"], res["hifp_cap_cut"] = paid, raw - paid
