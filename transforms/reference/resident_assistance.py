"""Reference twins of Suizhou resident medical assistance (POLICY §3.9), line by line in plain Python.

`assistance(res, ctx)` is a LATER rule (after critical illness) of transforms/reference/resident.py:
basic assistance, then tilt assistance, then the pay-after-treatment flag. Reversals never reach it:
the reference adjudicator pays them the negated original and takes back every accumulator the
original recorded (`record` / `_acc`).

`apply_applications_reference` is the twin of transforms/resident/application.apply_applications:
on-application assistance, one application at a time.
"""

from __future__ import annotations

import calendar
import datetime as dt
from typing import Any

from flows.policies import Policies
from transforms.enrich import STAY_LEDGERS
from transforms.money import apply_rate, rate_to_bp
from transforms.params import yuan_to_fen
from transforms.reference.adjudicate import Ctx, record

NO_CAP = 10**15


def _cap(v: Any) -> int:
    return NO_CAP if v == "none" else yuan_to_fen(v)


def _keyed(table: dict, key: Any) -> Any:
    return {str(k): v for k, v in table.items()}[str(key)]


def class_of(ids: set[str] | list[str], class_map: dict) -> int | None:
    """Most favourable assistance class of a set of identities: the lowest class number; None if none."""
    classes = [int(c) for i, c in class_map.items() if i in ids]
    return min(classes) if classes else None


def _offsite(ctx: Ctx) -> str | None:
    """Effective out-of-city type: a rescue adjudicated as a stay is 101 (§3.5, A-2), else §1.9."""
    if ctx.in_city:
        return None
    if ctx.ledger in STAY_LEDGERS and ctx.line.get("is_emergency_rescue"):
        return "101"
    return ctx.offsite()


def assistance(res: dict, ctx: Ctx) -> None:
    _basic_and_tilt(res, ctx)
    _pay_after_treatment(res, ctx)


def _basic_and_tilt(res: dict, ctx: Ctx) -> None:
    if not ctx.ids:
        return
    cls = class_of(ctx.ids, ctx.val("assistance.class_by_identity"))
    if cls is None:
        return
    if not res.get("_handled") or res.get("_held") or ctx.ledger not in ctx.val("assistance.ledgers"):
        return
    if not ctx.in_city and _offsite(ctx) not in [str(t) for t in ctx.val("assistance.basic_offsite_types")]:
        return
    excluded = res.get("burden_excluded_amt", 0) or 0

    # basic assistance: annual deductible by class, rate by class, yearly cap
    base = max(res["inscp_scp_amt"] - res["hifp_pay"] - res["hifmi_pay"] - excluded, 0)
    before = ctx.acc("maf_base")
    record(res, ctx, "maf_base", base)
    deductible = yuan_to_fen(_keyed(ctx.val("assistance.basic_deductible"), cls))
    raw = _yearly_difference(before, base, deductible, rate_to_bp(_keyed(ctx.val("assistance.basic_rate"), cls)))
    cap = _cap(ctx.val("assistance.basic_annual_cap"))
    paid = min(raw, max(0, cap - ctx.acc("maf_paid")))
    record(res, ctx, "maf_paid", paid)
    res["maf_pay"] = paid

    # tilt assistance: inside Hubei only (A-8 thresholds by class and location)
    if ctx.val("assistance.tilt_in_province_only") and not ctx.in_province:
        return
    location = "in_city" if ctx.in_city else "out_of_city_in_province"
    tbase = max(res["inscp_scp_amt"] - res["hifp_pay"] - res["hifmi_pay"] - res["maf_pay"] - excluded, 0)
    tbefore = ctx.acc("tilt_base")
    record(res, ctx, "tilt_base", tbase)
    threshold = yuan_to_fen(_keyed(_keyed(ctx.val("assistance.tilt_threshold"), cls), location))
    traw = _yearly_difference(tbefore, tbase, threshold, rate_to_bp(_keyed(ctx.val("assistance.tilt_rate"), location)))
    tcap = _cap(_keyed(ctx.val("assistance.tilt_annual_cap"), cls))
    tpaid = min(traw, max(0, tcap - ctx.acc("tilt_paid")))
    record(res, ctx, "tilt_paid", tpaid)
    res["maf_tilt_pay"] = tpaid


def _yearly_difference(before: int, base: int, deductible: int, rate_bp: int) -> int:
    """§1.3: round(F(before + base)) − round(F(before)), F(B) = rate × max(0, B − deductible) (the yearly amount)."""
    return apply_rate(max(before + base - deductible, 0), rate_bp) - apply_rate(max(before - deductible, 0), rate_bp)


def _pay_after_treatment(res: dict, ctx: Ctx) -> None:
    """§3.9 先诊疗后付费: stays of rural low-income persons (A-9) in their county."""
    res["deposit_waived"] = False
    if ctx.ledger not in STAY_LEDGERS or not ctx.in_county:
        return
    if not ctx.ids & set(ctx.val("identities.rural_low_income_identities")):
        return
    if ctx.val("identities.rural_low_income_requires_rural") and not ctx.person.get("rural"):
        return
    res["deposit_waived"] = bool(ctx.val("assistance.pay_after_treatment"))


# --------------------------------------------------------------------------- on-application assistance


def minus_months(d: dt.date, months: int) -> dt.date:
    """The same day `months` calendar months earlier, clamped to that month's last day (29 Feb → 28 Feb)."""
    y, m0 = divmod(d.year * 12 + d.month - 1 - months, 12)
    return dt.date(y, m0 + 1, min(d.day, calendar.monthrange(y, m0 + 1)[1]))


def apply_applications_reference(applications: list[dict], adjudicated: list[dict], registers: dict[str, list[dict]],
                                 policies: Policies, previous: list[dict] = ()) -> list[dict]:
    """One record per application (see transforms/resident/application.py for the rules)."""
    from transforms.reference.adjudicate import REGIONS, SCHEMES, valid_on

    persons = {p["psn_no"]: p for p in registers["persons"]}
    reversed_ids = {r["orig_setl_id"] for r in adjudicated if r.get("orig_setl_id")}
    paid_count: dict[tuple[str, int], int] = {}
    for p in previous:
        if p.get("status") == "paid":
            k = (p["psn_no"], p["confirm_date"].year)
            paid_count[k] = paid_count.get(k, 0) + 1
    out = []
    for app in sorted(applications, key=lambda a: (a["confirm_date"], a["app_id"])):
        psn, on = app["psn_no"], app["confirm_date"]
        val = lambda name, on=on: policies.value("suizhou", "resident", name, on)  # noqa: E731
        start = minus_months(on, int(val("assistance.application_window_months")))
        rec = {"app_id": app["app_id"], "psn_no": psn, "confirm_date": on, "window_start": start, "window_end": on,
               "base_amt": 0, "paid_amt": 0, "lines": 0}
        person = persons.get(psn)
        if person is None or (REGIONS.get(person["insuplc_admdvs"][:4]), SCHEMES.get(person["insutype"])) != (
                "suizhou", "resident"):
            out.append({**rec, "status": "refused", "reason": "NOT_SUIZHOU_RESIDENT"})
            continue
        if app.get("identity"):
            ids = {app["identity"]}
        else:  # no identity on the application: the person's identities valid on the confirmation date
            ids = {r["identity"] for r in registers["identities"] if r["psn_no"] == psn and valid_on(r, on)}
        cls = class_of(ids, val("assistance.class_by_identity"))
        if cls is None or cls not in [int(c) for c in val("assistance.application_classes")]:
            out.append({**rec, "status": "refused", "reason": "NOT_ASSISTANCE_CLASS"})
            continue
        ledgers = set(val("assistance.application_ledgers"))
        base, n = 0, 0
        for r in adjudicated:
            if (r["psn_no"] != psn or r.get("orig_setl_id") or r["setl_id"] in reversed_ids
                    or r["ledger"] not in ledgers or not (start <= r["setl_time"].date() < on)):
                continue
            codes = set((r.get("reason_codes") or "").split(","))
            if codes & {"HELD_FOR_REVIEW", "RULE_PENDING"}:
                continue
            base += max(r["inscp_scp_amt"] - r["hifp_pay"] - r["hifmi_pay"] - r["maf_pay"] - r["maf_tilt_pay"]
                        - (r.get("burden_excluded_amt") or 0), 0)
            n += 1
        rec.update(base_amt=base, lines=n)
        if paid_count.get((psn, on.year), 0) >= int(val("assistance.application_per_year")):
            out.append({**rec, "status": "refused", "reason": "ALREADY_PAID_THIS_YEAR"})
            continue
        threshold = yuan_to_fen(val("assistance.application_threshold"))
        raw = apply_rate(max(base - threshold, 0), rate_to_bp(val("assistance.application_rate")))
        paid = min(raw, _cap(val("assistance.application_cap")))
        if paid <= 0:
            out.append({**rec, "status": "refused", "reason": "BELOW_THRESHOLD" if n else "NO_LINES_IN_WINDOW"})
            continue
        paid_count[(psn, on.year)] = paid_count.get((psn, on.year), 0) + 1
        out.append({**rec, "paid_amt": paid, "status": "paid", "reason": "CAPPED" if paid < raw else "PAID"})
    return out
