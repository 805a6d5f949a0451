"""Reference twin of transforms/resident/out_of_scope.py: POLICY §3.10, one stay at a time.

A stay of a rural low-income person (A-9) whose out-of-scope share is above the limit of its
institution's relation to the person's county and level: the excess `out_of_scope − limit × total`
(rounded half-up to the fen once: round(out_of_scope − limit × total)) is borne by the institution when it is
inside Suizhou. A line held for review (§3.6, A-28) is not judged.
"""

from __future__ import annotations

from transforms.money import BP, rate_to_bp, round_half_up_div
from transforms.reference.adjudicate import Ctx

FUNDS = ("hifp_pay", "hifmi_pay", "maf_pay", "maf_tilt_pay")


def relation(ctx: Ctx) -> str:
    if ctx.in_county:
        return "in_county"
    return "out_of_county_in_province" if ctx.in_province else "out_of_province"


def rural_low_income(ctx: Ctx) -> bool:
    """A-9: an identity of the rural low-income list valid on the date, and rural when required."""
    if not ctx.ids & set(ctx.val("identities.rural_low_income_identities") or []):
        return False
    return bool(ctx.person.get("rural")) or not ctx.val("identities.rural_low_income_requires_rural")


def out_of_scope(res: dict, ctx: Ctx) -> None:
    if res.get("_held_inert") or not rural_low_income(ctx) or ctx.ledger not in ctx.val("out_of_scope.ledgers"):
        return
    table = {str(k): {str(lv): v for lv, v in by_lv.items()} for k, by_lv in ctx.val("out_of_scope.limit").items()}
    limit = table[relation(ctx)][ctx.level]
    if limit == "none":
        return
    bp = rate_to_bp(limit)
    line = ctx.line
    total, oos = line["medfee_sumamt"], line["fulamt_ownpay_amt"] + line["overlmt_selfpay"]
    if total <= 0 or oos * BP <= bp * total:
        return
    excess = round_half_up_div(oos * BP - bp * total, BP)  # rounded once (§3.10)
    if ctx.in_city and ctx.val("out_of_scope.excess_borne_by_institution_in_city"):
        left = total - sum(res[f] for f in FUNDS)
        res["hosp_part_amt"] = min(excess, max(left, 0))
