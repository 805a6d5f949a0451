"""Reference twin of transforms/resident/chronic.py: Suizhou resident chronic/special outpatient and
special drugs (POLICY §3.4), one line at a time. See that module for the rules and their readings.
"""

from __future__ import annotations

from typing import Any

from flows.policies import MissingParameter
from transforms.money import apply_rate, rate_to_bp
from transforms.params import UNLIMITED, yuan_to_fen
from transforms.reference.adjudicate import Ctx, record

DISEASE_KINDS = ("chronic", "special", "special_transplant", "special_dialysis", "special_mental")
SPECIAL_KINDS = ("special", "special_transplant", "special_dialysis", "special_mental")


def by_kind(ctx: Ctx, name: str, kind: str) -> Any:
    """A parameter keyed by certification kind; special_mental without a value of its own is special."""
    table = {str(k): v for k, v in (ctx.val(name) or {}).items()}
    value = table.get(kind)
    if value is None and kind == "special_mental":
        value = table.get("special")
    if value is None:
        raise MissingParameter(ctx.region, ctx.scheme, f"{name}[{kind}]", ctx.on)
    return value


def icd_category(code: str | None) -> str:
    return (code or "").strip().upper()[:3]


def special_disease_rate(ctx: Ctx) -> int | None:
    """The highest rate of a certified special disease valid today whose ICD-10 category is the drug's — the
    qualification's (A-29), or with special_drug_disease_icd_from = line_diagnosis the line's diagnosis, else the
    qualification's; None when the drug belongs to none."""
    source = ctx.val("chronic.special_drug_disease_icd_from")
    if source not in ("qualification", "line_diagnosis"):
        raise NotImplementedError(f"chronic.special_drug_disease_icd_from = {source!r} (A-29)")
    line_icd = ctx.line.get("dise_codg") if source == "line_diagnosis" else None
    drug_icd = icd_category(line_icd or (ctx.cert or {}).get("dise_codg"))
    if not drug_icd:
        return None
    rates = [rate_to_bp(by_kind(ctx, "chronic.fund_rate", c["kind"])) for c in ctx.certs
             if c["kind"] in SPECIAL_KINDS and icd_category(c["dise_codg"]) == drug_icd]
    return max(rates) if rates else None


def within_disease_limit(res: dict, ctx: Ctx, name: str, in_scope: int, limit) -> int:
    """The yearly limit per certified disease (A-21; every scheme, transforms/chronic_limit.py): the in-scope
    cost counted within it, recorded in the accumulator `name` ("none" = no limit, all of it counted)."""
    within = in_scope if limit == UNLIMITED else min(in_scope, max(0, yuan_to_fen(limit) - ctx.acc(name)))
    record(res, ctx, name, within)
    return within


def chronic(res: dict, ctx: Ctx) -> int:
    """§3.4 for ledgers chronic and special_drug: rate by kind, no deductible, yearly limit per disease."""
    if yuan_to_fen(ctx.val("chronic.deductible")) != 0:
        raise NotImplementedError("chronic.deductible is not 0: a chronic/special deductible is not implemented (A-3)")
    in_scope = max(res["inscp_scp_amt"], 0)
    cert = ctx.cert
    kind = cert["kind"] if cert else None
    if ctx.ledger == "special_drug":
        rate = rate_to_bp(ctx.val("chronic.special_drug_rate"))
        if ctx.val("chronic.special_drug_takes_disease_rate"):
            disease = special_disease_rate(ctx)
            rate = rate if disease is None else disease
    elif kind in DISEASE_KINDS:
        rate = rate_to_bp(by_kind(ctx, "chronic.fund_rate", kind))
    else:  # not certified: nothing paid, nothing enters critical illness or assistance
        res["chronic_over_limit_amt"], res["burden_excluded_amt"] = 0, in_scope
        return 0
    within = within_disease_limit(res, ctx, f"chronic_limit_used:{cert['dise_cert_code']}", in_scope,
                                  by_kind(ctx, "chronic.annual_limit_per_disease", kind))
    raw = apply_rate(within, rate)
    res["pool_prop_selfpay"] = within - raw
    res["chronic_over_limit_amt"] = res["burden_excluded_amt"] = in_scope - within
    return raw
