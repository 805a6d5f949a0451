"""Reference rules of the Suizhou resident scheme (POLICY §3), line by line.

BASIC: ledger → function(res, ctx) returning the basic fund before the annual cap (it may fill
res fields such as act_pay_dedc). LATER: functions(res, ctx) after the annual cap, in order.
"""

from __future__ import annotations

from transforms.money import apply_rate, rate_to_bp, round_half_up_div
from transforms.params import yuan_to_fen
from transforms.reference.adjudicate import Ctx, record
from transforms.reference.resident_assistance import assistance


def class_b(res: dict, ctx: Ctx) -> None:
    """§1.4: class-B pre-self-pay on the ledgers of A-16; in-scope cost of every line."""
    a, b = ctx.line["cls_a_amt"], ctx.line["cls_b_amt"]
    if b != 0 and ctx.ledger in ctx.val("inpatient.class_b_preselfpay_ledgers"):
        res["preselfpay_amt"] = apply_rate(b, rate_to_bp(ctx.val("inpatient.class_b_preselfpay_rate")))
    res["inscp_scp_amt"] = a + b - res["preselfpay_amt"]


def stay(res: dict, ctx: Ctx) -> int:
    """§3.5–§3.6: pre-self-pay out of the city, deductible per stay, rate by level."""
    line, in_scope = ctx.line, res["inscp_scp_amt"]
    offsite = None
    if not ctx.in_city:
        offsite = "101" if line.get("is_emergency_rescue") else ctx.offsite()  # §3.5, A-2
        res["offsite_preselfpay_amt"] = apply_rate(in_scope, rate_to_bp(ctx.keyed("inpatient.offsite_preselfpay_rate",
                                                                                  offsite)))
    base = in_scope - res["offsite_preselfpay_amt"]
    exempt = bool(ctx.ids & set(ctx.val("inpatient.deductible_exempt_identities") or []))
    if ctx.ledger == "day_surgery" or exempt:
        deductible = 0
    else:
        name = "inpatient.deductible_in_city" if ctx.in_city else "inpatient.deductible_out_of_city"
        deductible = yuan_to_fen(ctx.keyed(name, ctx.level))
    held = (line["med_type"] == "22" and not line.get("trauma_report_no")
            and ctx.person["insuplc_admdvs"] in [str(c) for c in ctx.val("inpatient.trauma_report_required_counties")])
    res["_held"] = held
    res["_held_inert"] = held and bool(ctx.val("inpatient.held_line_moves_nothing"))
    # one deductible per stay (mdtrt_id), shared by its lines (A-5, §3.5); a held line takes none of it
    name = f"stay_ded_used:{line['mdtrt_id']}"
    taken = 0 if res["_held_inert"] else min(max(base, 0), max(0, deductible - ctx.acc(name)))
    record(res, ctx, name, taken)
    after = max(base - taken, 0)
    res["act_pay_dedc"] = taken
    raw = 0 if held else apply_rate(after, rate_to_bp(ctx.keyed("inpatient.fund_rate", ctx.level)))
    res["pool_prop_selfpay"] = after - raw
    return raw


def band_value(x: int, bands: list[dict]) -> int:
    """F(x), summed exactly in basis-point fen and rounded half-up once (POLICY §1.3)."""
    total = 0
    for b in bands:
        lo = yuan_to_fen(b["from"])
        hi = None if b["to"] == "none" else yuan_to_fen(b["to"])
        inside = max(0, x - lo) if hi is None else min(max(0, x - lo), hi - lo)
        total += inside * rate_to_bp(b["rate"])
    return round_half_up_div(total, 10_000)


def critical_illness(res: dict, ctx: Ctx) -> None:
    """§3.8: burden = in_scope − hifp (A-7); pay F(after) − F(before) by group; then the group's cap."""
    if not res.get("_handled") or res.get("_held") or ctx.ledger not in ctx.val("critical_illness.ledgers"):
        return
    group = "s1" if ctx.ids & set(ctx.val("critical_illness.favoured_identities")) else "others"
    burden = res["inscp_scp_amt"] - res["hifp_pay"] - res.get("burden_excluded_amt", 0)  # §3.4: over the limit
    before = ctx.acc("hifmi_burden")
    record(res, ctx, "hifmi_burden", burden)
    bands = ctx.val("critical_illness.bands")[group]
    raw = band_value(before + burden, bands) - band_value(before, bands)
    cap = ctx.val("critical_illness.annual_cap")[group]
    paid_before = ctx.acc("hifmi_paid")
    paid = raw if cap == "none" else min(raw, max(0, yuan_to_fen(cap) - paid_before))
    record(res, ctx, "hifmi_paid", paid)
    res["hifmi_pay"] = paid


BASIC = {"inpatient": stay, "maternity": stay, "day_surgery": stay}
LATER = [critical_illness, assistance]

from transforms.reference.resident_out_of_scope import out_of_scope  # noqa: E402  (§3.10)

LATER.append(out_of_scope)

from transforms.reference.resident_chronic import chronic  # noqa: E402  (§3.4)

BASIC.update(chronic=chronic, special_drug=chronic)

from transforms.reference import resident_outpatient  # noqa: E402  (§3.2–§3.3)

BASIC.update(outpatient_pool=resident_outpatient.outpatient_pool, two_disease=resident_outpatient.two_disease,
             pharmacy=resident_outpatient.pharmacy)
