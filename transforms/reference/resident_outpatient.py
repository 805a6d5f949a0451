"""Reference rules of Suizhou resident outpatient pooling (§3.2), two-disease outpatient (§3.3) and
pharmacy purchases, line by line: the definition transforms/resident/outpatient.py is tested against.

Each function returns the basic fund before the annual cap (§3.7) and records what the line adds:
`op_pool_paid` (toward the 350 cap), `two_disease_paid` (the shared ceiling is the sum of both) and the
payment of the day at the institution, under the name ("op_day", date, institution) — a day lies within
one month, so this key is only ever read by later lines of the same batch and is never carried. What they
record is what the fund actually pays after the annual cap (§3.2: an amount the 150,000 cut uses none of
these limits), `paid_after_annual_cap`.
A reversal takes every recorded amount back (adjudicate._one_line).
"""

from __future__ import annotations

from transforms.money import apply_rate, rate_to_bp
from transforms.params import yuan_to_fen
from transforms.reference.adjudicate import Ctx, record

CONDITIONS = ("hypertension", "diabetes")
CHRONIC_KINDS = ("chronic", "special", "special_transplant", "special_dialysis", "special_mental")


def _require(ctx: Ctx, name: str, expected: object, convert=lambda v: v) -> None:
    if convert(ctx.val(name)) != expected:
        raise NotImplementedError(f"{name} = {ctx.val(name)!r}: only {expected!r} is implemented")


def at_pharmacy(ctx: Ctx) -> bool:
    return ctx.inst.get("fixmedins_type") == "pharmacy" or ctx.inst.get("facility") == "pharmacy"


def _category(codg: str | None) -> str | None:
    return codg.strip().upper()[:3] if codg else None


def conditions(ctx: Ctx) -> tuple[set[str], set[str]]:
    """(conditions held on the date net of chronic/special coverage, conditions so covered) — §3.3, A-23."""
    held = {c["kind"] for c in ctx.certs if c["kind"] in CONDITIONS}
    if not held:
        return set(), set()
    ranges = ctx.val("two_disease.chronic_certification_icd_ranges")
    covered = set()
    for cond in CONDITIONS:
        lo, hi = (str(x).strip().upper() for x in ranges[cond])
        for c in ctx.certs:
            cat = _category(c.get("dise_codg"))
            if c["kind"] in CHRONIC_KINDS and cat is not None and lo <= cat <= hi:
                covered.add(cond)
    return held - covered, covered


def ceiling(ctx: Ctx, held: set[str]) -> int | None:
    """The two-disease ceiling by what the person holds on the date (None: holds nothing)."""
    if not held:
        return None
    key = "both" if len(held) == 2 else next(iter(held))
    return yuan_to_fen(ctx.keyed("two_disease.annual_cap", key))


def outpatient_pool(res: dict, ctx: Ctx) -> int:
    """§3.2: level 1 and below (51 anywhere), out of the city only where enabled; 50%; daily limit per
    person, day and institution (A-20, not for 51); 350 a year (51 included, A-1); the two-disease
    ceiling when the person holds a condition (§3.3)."""
    line, inst, in_scope = ctx.line, ctx.inst, res["inscp_scp_amt"]
    _require(ctx, "outpatient_pool.deductible", 0, yuan_to_fen)
    if at_pharmacy(ctx):
        return 0
    exempt = line["med_type"] in [str(m) for m in ctx.val("outpatient_pool.exempt_med_types")]
    level_ok = str(inst["dedc_hosp_lv"]) in [str(v) for v in ctx.val("outpatient_pool.levels_allowed")]
    if not (level_ok or exempt):
        return 0
    if not ctx.in_city and ctx.val("outpatient_pool.offsite_requires_enabled") and not inst.get(
            "offsite_outpatient_enabled"):
        return 0
    _require(ctx, "two_disease.cap_includes_outpatient_pool", True, bool)
    raw = apply_rate(in_scope, rate_to_bp(ctx.keyed("outpatient_pool.fund_rate", inst["dedc_hosp_lv"])))
    res["pool_prop_selfpay"] = in_scope - raw
    paid = raw
    day_key = None
    if not exempt:
        scope = [str(c) for c in ctx.val("outpatient_pool.daily_limit_scope")]
        day_key = ("op_day", *[ctx.on if c == "setl_date" else line[c] for c in scope if c != "psn_no"])
        limit = yuan_to_fen(ctx.keyed("outpatient_pool.daily_limit", inst["facility"]))
        paid = min(paid, max(0, limit - ctx.acc(day_key)))
    counts = not exempt or bool(ctx.val("outpatient_pool.exempt_counts_toward_cap"))
    if counts:
        cap = yuan_to_fen(ctx.val("outpatient_pool.annual_cap"))
        paid = min(paid, max(0, cap - ctx.acc("op_pool_paid")))
        top = ceiling(ctx, conditions(ctx)[0])
        if top is not None:
            paid = min(paid, max(0, top - ctx.acc("op_pool_paid") - ctx.acc("two_disease_paid")))
    kept = paid_after_annual_cap(ctx, paid)
    if counts:
        record(res, ctx, "op_pool_paid", kept)
    if day_key is not None:
        record(res, ctx, day_key, kept)
    return paid


def paid_after_annual_cap(ctx: Ctx, paid: int) -> int:
    """What the fund will actually pay of `paid` under the 150,000 annual cap (§3.7) — the amount the outpatient
    limits count (§3.2); the caller (adjudicate._one_line) applies the same cap to the returned amount."""
    if not paid:
        return 0
    return min(paid, max(0, yuan_to_fen(ctx.val("annual_cap.hifp")) - ctx.acc("hifp_paid")))


def two_disease(res: dict, ctx: Ctx) -> int:
    """§3.3: the line's hypertension/diabetes certification, not covered by a chronic/special one (A-23);
    50% at any level (a pharmacy: the prescribing institution's level); the ceiling shared with §3.2."""
    _require(ctx, "two_disease.deductible", 0, yuan_to_fen)
    _require(ctx, "two_disease.daily_limit", "none")
    _require(ctx, "two_disease.cap_includes_outpatient_pool", True, bool)
    kind = ctx.cert["kind"] if ctx.cert else None
    if kind not in CONDITIONS:
        return 0
    held, _ = conditions(ctx)
    if kind not in held:
        return 0
    level = ctx.inst.get("dedc_hosp_lv") or (ctx.presc_inst or {}).get("dedc_hosp_lv")
    if level is None:
        return 0
    in_scope = res["inscp_scp_amt"]
    raw = apply_rate(in_scope, rate_to_bp(ctx.keyed("two_disease.fund_rate", level)))
    res["pool_prop_selfpay"] = in_scope - raw
    top = ceiling(ctx, held)
    paid = min(raw, max(0, top - ctx.acc("op_pool_paid") - ctx.acc("two_disease_paid")))
    record(res, ctx, "two_disease_paid", paid_after_annual_cap(ctx, paid))
    return paid


def pharmacy(res: dict, ctx: Ctx) -> int:
    """A retail purchase without a special-drug qualification: no resident outpatient benefit (§3.2)."""
    return 0
