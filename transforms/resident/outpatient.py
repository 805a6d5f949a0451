"""Suizhou resident outpatient pooling (门诊统筹, POLICY §3.2) and two-disease outpatient drugs
(高血压/糖尿病"两病", §3.3): the basic fund on the ledgers `outpatient_pool`, `two_disease` and `pharmacy`.

Outpatient pooling (`outpatient_pool`: med_type 11, 13 that is not a rescue, 51):
  eligible  = level in levels_allowed (1 and below), or med_type in exempt_med_types (51: no level
              restriction); out of the city also offsite_outpatient_enabled (offsite_requires_enabled)
  raw       = fund_rate(level) × in_scope                  (no deductible; no class-B pre-self-pay, A-16)
  day       = min(raw, daily_limit(facility) − paid today)   per person, day and institution (A-20); not 51
  pool cap  = min(day, 350 − op_pool_paid)                   51 counts too (exempt_counts_toward_cap, A-1)
  ceiling   = min(pool cap, ceiling − op_pool_paid − two_disease_paid) when the person holds a two-disease
              condition on the date (§3.3: one ceiling over both ledgers, DESIGN primitive 5)
Two-disease (`two_disease`: med_type 9901, drug costs):
  eligible  = the line is claimed (dise_cert_code) under a `hypertension` or `diabetes` certification valid on
              the date, and that disease is not covered by a chronic/special certification of the person
              (certifications.dise_codg category in the parameter's ICD-10 range, A-23)
  raw       = fund_rate(level) × in_scope, at any level; paid = min(raw, ceiling − op_pool_paid − two_disease_paid)
  ceiling   = annual_cap[hypertension | diabetes | both] by the conditions the person holds on the date; a
              condition covered by a chronic/special certification is not held (it gets no two-disease benefit)
  At a pharmacy (no level of its own) the prescribing institution's level gives the rate (A-11 by analogy);
  without a prescribing institution the line is not covered.
Pharmacy (`pharmacy`: med_type 41 without a special-drug qualification), and any outpatient-pooling line at
  a pharmacy: the Suizhou source gives residents outpatient pooling only at designated medical institutions of
  level 1 and below (§3.2) and no pharmacy benefit (A-11 is the Xiangyang employees' rule, §4.3). The bureau
  expects such a purchase to be adjudicated, not left pending: basic fund 0, reason PHARMACY_NOT_COVERED.

What accumulates (the state a reversal takes back, POLICY §1.7): every amount is what the basic fund
actually paid on the line, after the 150,000 annual cap of §3.7 (`hifp_pay`; §3.2: an amount the annual cap
cut is not paid and uses none of these limits):
  op_pool_paid      outpatient-pooling payments of the year that count toward the 350 cap
  two_disease_paid  two-disease payments of the year; the shared total is op_pool_paid + two_disease_paid
  (the day)         paid today at an institution: within one day, hence one month, so it is never carried.

A reversal's accumulators move back by what its original added, the original's `hifp_pay` (the engine gives
it negated as `rev_hifp_pay`); when the original is in the same batch and on the same day, the reversal frees
its room under the daily limit too.

The stage runs before the annual cap and sets `hifp_raw` (what these limits let through). Where the annual
cap then cut a line of these ledgers, the limits of the later lines were counted with the cut amount:
`after_annual_cap` walks those person-years line by line again, every ledger's line in order, with the annual
cap and these limits together — so persons far from the 150,000 (nearly all) are never walked.

Vectorized exactly (DESIGN primitives 2, 4 and 5): a candidate from the sequential primitives (daily limit,
then the pool cap, then the shared ceiling), then a check that the candidate satisfies the line-by-line
recursion on every line. Wherever it does not (a ceiling that changes within the year after it bit, a
reversal between lines of one day), the person-year is walked line by line — the same rule, so the result
never depends on the path.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from flows.policies import MissingParameter, Policies
from transforms.accumulate import capped_payment, daily_limited, running_before
from transforms.explain import bp_text, code_if, fen_text, when_text
from transforms.frames import join_left
from transforms.money import expr_apply_rate
from transforms.params import attach, rate, yuan_to_fen
from transforms.resident.inpatient import in_list_on_date
from transforms.stage import Stage, mark_handled

REGION, SCHEME = "suizhou", "resident"
PERSON_YEAR = ["psn_no", "year"]
OP, TWO, PHARMACY = "outpatient_pool", "two_disease", "pharmacy"
LEDGERS = (OP, TWO, PHARMACY)
CONDITIONS = ("hypertension", "diabetes")  # certification kinds of §3.3 (DATA.md §3)
# Certification kinds that are chronic/special-disease certifications (§3.4); special_drug is a drug
# qualification, not a disease certification, and excludes nothing.
CHRONIC_KINDS = ("chronic", "special", "special_transplant", "special_dialysis", "special_mental")
NO_LIMIT = 10**15  # fen: stands for "no limit on this line" inside the capped primitives
# Columns the daily limit's scope (outpatient_pool.daily_limit_scope) may name.
DAY_SCOPE_COLUMNS = ("psn_no", "setl_date", "fixmedins_code")


# --------------------------------------------------------------------------- parameters


def _require(df: pl.DataFrame, policies: Policies, used: set, name: str, need: pl.Expr, expected: object,
             convert=lambda v: v) -> None:
    """A parameter whose only implemented value is `expected` (e.g. no deductible): any other value on a
    needed line's date stops the run and names it, rather than being ignored."""
    dates = df.filter(need)["setl_date"].unique().to_list()
    for on in sorted(dates):
        dv = policies.at(REGION, SCHEME, name, on)
        used.add((REGION, SCHEME, name, dv.assumption))
        if convert(dv.value) != expected:
            raise NotImplementedError(f"{REGION}/{SCHEME}/{name} = {dv.value!r} on {on}: only {expected!r} is "
                                      "implemented (POLICY §3.2–§3.3)")


def day_scope(policies: Policies, used: set, dates: list[dt.date]) -> list[str]:
    """Columns of one daily limit (A-20: person, day, institution); one scope per run."""
    scopes = set()
    for on in dates:
        dv = policies.at(REGION, SCHEME, "outpatient_pool.daily_limit_scope", on)
        used.add((REGION, SCHEME, "outpatient_pool.daily_limit_scope", dv.assumption))
        scopes.add(tuple(str(c) for c in dv.value))
    if not scopes:
        return list(DAY_SCOPE_COLUMNS)
    if len(scopes) > 1 or "psn_no" not in next(iter(scopes)) or not set(next(iter(scopes))) <= set(DAY_SCOPE_COLUMNS):
        raise NotImplementedError(f"outpatient_pool.daily_limit_scope {sorted(scopes)}: one scope over "
                                  f"{DAY_SCOPE_COLUMNS} including psn_no is implemented")
    return list(next(iter(scopes)))


def _ranges(v) -> str:
    """The ICD-10 ranges {hypertension: [lo, hi], diabetes: [lo, hi]} as "lo_h|hi_h|lo_d|hi_d"."""
    out = []
    for condition in CONDITIONS:
        if condition not in (v or {}) or len(v[condition]) != 2:
            raise MissingParameter(REGION, SCHEME, f"two_disease.chronic_certification_icd_ranges[{condition}]")
        out += [str(x).strip().upper() for x in v[condition]]
    return "|".join(out)


def _conditions(df: pl.DataFrame, policies: Policies, used: set, mine: pl.Expr) -> pl.DataFrame:
    """Two-disease conditions the person holds on the date, net of chronic/special coverage (§3.3, A-23).

    Adds td_holds_h / td_holds_d (a hypertension / diabetes certification valid on the date),
    td_excl_h / td_excl_d (covered by a chronic/special certification whose ICD-10 category is in the
    range), td_conditions ("hypertension", "diabetes", "both" or null).
    """
    kinds = pl.col("certs_on_date").list.eval(pl.element().struct.field("kind"))
    df = df.with_columns(kinds.list.contains("hypertension").fill_null(False).alias("td_holds_h"),
                         kinds.list.contains("diabetes").fill_null(False).alias("td_holds_d"))
    need = mine & (pl.col("td_holds_h") | pl.col("td_holds_d"))
    name = "two_disease.chronic_certification_icd_ranges"
    df = attach(df, policies, REGION, SCHEME, name, "__ranges", convert=_ranges, dtype=pl.String, need=need,
                used=used)
    bounds = pl.col("__ranges").str.split("|")
    df = df.with_columns([bounds.list.get(i, null_on_oob=True).alias(c)
                          for i, c in enumerate(("__h_lo", "__h_hi", "__d_lo", "__d_hi"))]).drop("__ranges")
    df = df.with_row_index("__crow")
    long = (df.filter(need).select("__crow", "certs_on_date", "__h_lo", "__h_hi", "__d_lo", "__d_hi")
            .explode("certs_on_date").unnest("certs_on_date"))
    cat = pl.col("dise_codg").str.strip_chars().str.to_uppercase().str.slice(0, 3)
    chronic = pl.col("kind").is_in(list(CHRONIC_KINDS))
    excl = long.group_by("__crow").agg(
        (chronic & cat.is_between(pl.col("__h_lo"), pl.col("__h_hi"))).any().alias("td_excl_h"),
        (chronic & cat.is_between(pl.col("__d_lo"), pl.col("__d_hi"))).any().alias("td_excl_d"),
    )
    df = join_left(df, excl, "__crow").drop("__crow", "__h_lo", "__h_hi", "__d_lo", "__d_hi")
    df = df.with_columns(pl.col("td_excl_h").fill_null(False), pl.col("td_excl_d").fill_null(False))
    h = pl.col("td_holds_h") & ~pl.col("td_excl_h")
    d = pl.col("td_holds_d") & ~pl.col("td_excl_d")
    return df.with_columns(
        pl.when(h & d).then(pl.lit("both")).when(h).then(pl.lit("hypertension")).when(d).then(pl.lit("diabetes"))
        .otherwise(pl.lit(None, pl.String)).alias("td_conditions"))


# --------------------------------------------------------------------------- the stage


def adjudicate_outpatient(df: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """Sets hifp_raw and handled on the lines of the three ledgers; adds the op_/td_ columns of STAGE."""
    given = set(df.columns)
    ledger, rev = pl.col("ledger"), pl.col("is_reversal")
    mine = ledger.is_in(list(LEDGERS))
    if not df.select(mine.any()).item():
        return df  # nothing of ours here: the engine null-fills this stage's columns (Stage.defaults)
    is_op, is_td = ledger == OP, ledger == TWO
    fwd = mine & ~rev
    at_pharmacy = ((pl.col("fixmedins_type") == "pharmacy") | (pl.col("facility") == "pharmacy")).fill_null(False)
    df = df.with_columns(mine.alias("op_mine"), (is_op & ~at_pharmacy).alias("__op_inst"))
    op_line = pl.col("__op_inst")  # outpatient pooling at a medical institution (not a pharmacy)

    # ---- outpatient pooling: who is eligible (§3.2)
    _require(df, policies, used, "outpatient_pool.deductible", fwd & is_op, 0, yuan_to_fen)
    exempt = in_list_on_date(df, policies, REGION, SCHEME, "outpatient_pool.exempt_med_types", used, "med_type",
                             need=fwd & op_line)
    level_ok = in_list_on_date(df, policies, REGION, SCHEME, "outpatient_pool.levels_allowed", used, "hosp_lv",
                               need=fwd & op_line)
    df = df.with_columns(exempt.alias("op_exempt"), level_ok.alias("op_level_ok"))
    df = attach(df, policies, REGION, SCHEME, "outpatient_pool.offsite_requires_enabled", "__req_enabled",
                dtype=pl.Boolean, convert=bool, need=fwd & op_line & ~pl.col("in_city"), used=used)
    df = df.with_columns(
        (op_line & (pl.col("op_exempt") | pl.col("op_level_ok"))).alias("__level_pass"),
        (op_line & (pl.col("in_city") | ~pl.col("__req_enabled").fill_null(True)
                    | pl.col("offsite_outpatient_enabled"))).alias("__offsite_pass"),
    )
    df = df.with_columns((op_line & ~pl.col("in_city") & pl.col("__req_enabled").fill_null(False)
                          & ~pl.col("offsite_outpatient_enabled")).alias("op_offsite_blocked"))
    op_elig = fwd & op_line & pl.col("__level_pass") & pl.col("__offsite_pass")
    df = df.with_columns(op_elig.fill_null(False).alias("__op_elig"))
    df = attach(df, policies, REGION, SCHEME, "outpatient_pool.exempt_counts_toward_cap", "__exempt_counts",
                dtype=pl.Boolean, convert=bool, need=is_op & pl.col("op_exempt"), used=used)
    counts = is_op & (~pl.col("op_exempt").fill_null(False) | pl.col("__exempt_counts").fill_null(False))
    df = df.with_columns(counts.alias("__counts"),
                         (pl.col("__op_elig") & ~pl.col("op_exempt")).alias("__dl"))

    # ---- two-disease: who is eligible (§3.3)
    _require(df, policies, used, "two_disease.deductible", fwd & is_td, 0, yuan_to_fen)
    _require(df, policies, used, "two_disease.daily_limit", fwd & is_td, "none")
    _require(df, policies, used, "two_disease.cap_includes_outpatient_pool", fwd & mine, True, bool)
    df = _conditions(df, policies, used, mine)
    disease = pl.when(pl.col("cert_kind").is_in(list(CONDITIONS))).then(pl.col("cert_kind"))
    excluded = ((disease == "hypertension") & pl.col("td_excl_h")) | ((disease == "diabetes") & pl.col("td_excl_d"))
    df = df.with_columns(
        pl.when(fwd & is_td).then(disease).alias("td_disease"),
        pl.coalesce(pl.col("hosp_lv"), pl.col("presc_hosp_lv")).alias("__td_level"),
    )
    df = df.with_columns(
        (fwd & is_td & pl.col("td_disease").is_null()).alias("td_not_certified"),
        (fwd & is_td & excluded.fill_null(False)).alias("td_excluded"),
    )
    df = df.with_columns(
        (fwd & is_td & pl.col("td_disease").is_not_null() & ~pl.col("td_excluded") & pl.col("__td_level").is_null())
        .alias("__td_no_level"))
    td_elig = (fwd & is_td & pl.col("td_disease").is_not_null() & ~pl.col("td_excluded")
               & pl.col("__td_level").is_not_null())
    df = df.with_columns(td_elig.alias("__td_elig"))
    df = df.with_columns((pl.col("__op_elig") | pl.col("__td_elig")).alias("op_eligible"))

    # ---- rates and raw amounts
    df = attach(df, policies, REGION, SCHEME, "outpatient_pool.fund_rate", "__op_rate", convert=rate,
                keyed_by="hosp_lv", need=pl.col("__op_elig"), used=used)
    df = df.with_columns(pl.col("__td_level").alias("__lvkey"))
    df = attach(df, policies, REGION, SCHEME, "two_disease.fund_rate", "__td_rate", convert=rate,
                keyed_by="__lvkey", need=pl.col("__td_elig"), used=used).drop("__lvkey")
    df = df.with_columns(
        pl.when(pl.col("__op_elig")).then(pl.col("__op_rate")).when(pl.col("__td_elig")).then(pl.col("__td_rate"))
        .otherwise(None).alias("op_rate_bp"))
    df = df.with_columns(
        pl.when(pl.col("op_eligible")).then(expr_apply_rate(pl.col("inscp_scp_amt"), pl.col("op_rate_bp")))
        .otherwise(0).alias("op_raw"))

    # ---- limits: daily (by facility), pool cap, shared ceiling (by conditions)
    df = attach(df, policies, REGION, SCHEME, "outpatient_pool.daily_limit", "op_day_limit", convert=yuan_to_fen,
                keyed_by="facility", need=pl.col("__dl"), used=used)
    df = df.with_columns(pl.when(pl.col("__dl")).then(pl.col("op_day_limit")).alias("op_day_limit"))
    df = attach(df, policies, REGION, SCHEME, "outpatient_pool.annual_cap", "op_cap", convert=yuan_to_fen,
                need=pl.col("__counts"), used=used)
    df = df.with_columns(pl.when(pl.col("__counts")).then(pl.col("op_cap")).alias("op_cap"))
    shared = (pl.col("__td_elig") | (pl.col("__op_elig") & pl.col("__counts"))) & pl.col("td_conditions").is_not_null()
    df = df.with_columns(shared.alias("__shared"))
    df = attach(df, policies, REGION, SCHEME, "two_disease.annual_cap", "td_cap", convert=yuan_to_fen,
                keyed_by="td_conditions", need=pl.col("__shared"), used=used)
    df = df.with_columns(pl.when(pl.col("__shared")).then(pl.col("td_cap")).alias("td_cap"))

    # ---- reversals: what the original added, and its day (when it is in this batch)
    scope = day_scope(policies, used, df.filter(is_op)["setl_date"].unique().sort().to_list())
    orig = df.select(pl.col("setl_id").alias("orig_setl_id"), pl.col("setl_date").alias("__o_date"),
                     pl.col("fixmedins_code").alias("__o_inst"), pl.col("__dl").alias("__o_dl"))
    df = join_left(df, orig, "orig_setl_id")
    df = df.with_columns(
        pl.when(rev & mine).then(pl.col("rev_hifp_pay").fill_null(0)).otherwise(0).alias("__rev_amt"),
        (rev & is_op & pl.col("__o_dl").fill_null(False)).alias("__rev_day"),
        pl.when(pl.col("__o_date").is_not_null() & rev).then(pl.col("__o_date")).otherwise(pl.col("setl_date"))
        .alias("__day_date"),
        pl.when(pl.col("__o_date").is_not_null() & rev).then(pl.col("__o_inst")).otherwise(pl.col("fixmedins_code"))
        .alias("__day_inst"),
    )
    by_day = ["psn_no", *(("__day_date",) if "setl_date" in scope else ()),
              *(("__day_inst",) if "fixmedins_code" in scope else ())]

    # ---- candidate from the sequential primitives
    r = pl.col("op_raw")
    x_day = pl.when(pl.col("__dl")).then(r).when(pl.col("__rev_day")).then(pl.col("__rev_amt")).otherwise(0)
    df = df.with_columns(
        pl.when(pl.col("__dl"))
        .then(daily_limited(x_day, pl.col("op_day_limit").fill_null(NO_LIMIT), by_day))
        .otherwise(r).alias("__c_day"))
    op_counted_fwd = pl.col("__op_elig") & pl.col("__counts")
    x_op = (pl.when(op_counted_fwd).then(pl.col("__c_day"))
            .when(rev & pl.col("__counts")).then(pl.col("__rev_amt")).otherwise(0))
    df = df.with_columns(
        pl.when(op_counted_fwd)
        .then(capped_payment(x_op, pl.col("op_cap").fill_null(NO_LIMIT), pl.col("carried_op_pool_paid"),
                             PERSON_YEAR))
        .otherwise(pl.col("__c_day")).alias("__c_op"))
    in_shared_fwd = pl.col("__td_elig") | op_counted_fwd
    x_sh = (pl.when(in_shared_fwd).then(pl.col("__c_op"))
            .when(rev & (is_td | pl.col("__counts"))).then(pl.col("__rev_amt")).otherwise(0))
    carried_shared = pl.col("carried_op_pool_paid") + pl.col("carried_two_disease_paid")
    df = df.with_columns(
        pl.when(in_shared_fwd)
        .then(capped_payment(x_sh, pl.col("td_cap").fill_null(NO_LIMIT), carried_shared, PERSON_YEAR))
        .otherwise(pl.col("__c_op")).alias("op_pay"))
    df = df.with_columns(pl.when(fwd).then(pl.col("op_pay")).otherwise(0).alias("op_pay"))

    # ---- check the recursion line by line; walk the person-years where the candidate is not it
    df = _befores_and_cuts(df, by_day)
    bad = fwd & (pl.col("__expected") != pl.col("op_pay"))
    df = df.with_columns(bad.any().over(PERSON_YEAR).alias("__walk"))
    if df["__walk"].any():
        df = _walk(df, by_day)
        df = _befores_and_cuts(df, by_day)

    df = df.with_columns(
        pl.when(fwd & is_op & pl.col("__counts")).then(pl.col("op_pay"))
        .when(rev & is_op & pl.col("__counts")).then(pl.col("__rev_amt")).otherwise(0).alias("op_pool_add"),
        pl.when(fwd & is_td).then(pl.col("op_pay")).when(rev & is_td).then(pl.col("__rev_amt")).otherwise(0)
        .alias("td_add"),
        pl.when(fwd & pl.col("op_eligible")).then(pl.col("inscp_scp_amt") - pl.col("op_raw"))
        .when(fwd).then(0).otherwise(pl.col("pool_prop_selfpay")).alias("pool_prop_selfpay"),
        (fwd & at_pharmacy & (is_op | (ledger == PHARMACY))).fill_null(False).alias("op_pharmacy"),
    )
    df = df.with_columns((fwd & is_td & pl.col("__td_no_level")).alias("op_pharmacy_td"))
    df = mark_handled(df, mine, pl.col("op_pay"))
    # what after_annual_cap needs to walk these lines again
    df = df.with_columns([pl.col(c).alias(f"opx{c[1:]}") for c in KEPT_FOR_CAP])
    return df.drop([c for c in df.columns if c.startswith("__") and c not in given])


# Internal columns of the stage that after_annual_cap reads (kept as opx_…)
KEPT_FOR_CAP = ("__dl", "__rev_day", "__rev_amt", "__counts", "__op_elig", "__shared", "__day_date", "__day_inst")


def after_annual_cap(df: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """§3.2 (§3.7): the 350 cap, the daily limits and the two-disease ceiling count what the fund actually paid
    after the annual cap. The stage counted its own payment (before the cap); that is exact in every person-year
    where the annual cap cut no line of these ledgers. The others are walked line by line here — every line of
    the person-year in order, the annual cap and these limits together — and their basic-fund columns, the
    limits' befores and cuts and what they add to op_pool_paid / two_disease_paid are set from the walk."""
    if "opx_dl" not in df.columns:
        return df
    kept = [f"opx{c[1:]}" for c in KEPT_FOR_CAP]
    fwd = pl.col("op_mine").fill_null(False) & ~pl.col("is_reversal")
    walk = (fwd & (pl.col("hifp_cap_cut") != 0)).any().over(PERSON_YEAR)
    df = df.with_columns(walk.alias("__walk"))
    if not df["__walk"].any():
        return df.drop("__walk", *kept)
    # a line whose payment was 0 before may pay now (more room): the annual cap in force on it
    df = attach(df, policies, REGION, SCHEME, "annual_cap.hifp", "__cap", convert=yuan_to_fen,
                need=pl.col("__walk") & ((pl.col("hifp_raw") != 0) | (fwd & (pl.col("op_raw") != 0))), used=used)
    scope = day_scope(policies, used, df.filter(pl.col("ledger") == OP)["setl_date"].unique().sort().to_list())
    by_day = ["psn_no", *(("opx_day_date",) if "setl_date" in scope else ()),
              *(("opx_day_inst",) if "fixmedins_code" in scope else ())]
    cols = ["psn_no", "year", *by_day[1:], "op_mine", "is_reversal", "ledger", "opx_dl", "opx_rev_day", "opx_rev_amt",
            "opx_counts", "opx_op_elig", "opx_shared", "op_raw", "op_day_limit", "op_cap", "td_cap", "hifp_raw",
            "__cap", "carried_op_pool_paid", "carried_two_disease_paid", "carried_hifp_paid"]
    idx = df.with_row_index("__i").filter(pl.col("__walk"))
    annual: dict[tuple, int] = {}
    pool: dict[tuple, int] = {}
    two: dict[tuple, int] = {}
    day: dict[tuple, int] = {}
    out: dict[str, list] = {c: [] for c in ("hifp_raw", "hifp_pay", "hifp_paid_before", "op_pay", "op_day_before",
                                            "op_pool_before", "td_before", "op_day_cut", "op_cap_cut", "td_cap_cut",
                                            "op_pool_add", "td_add")}
    for row in idx.select(cols).iter_rows(named=True):
        py = (row["psn_no"], row["year"])
        annual.setdefault(py, row["carried_hifp_paid"])
        pool.setdefault(py, row["carried_op_pool_paid"])
        two.setdefault(py, row["carried_two_disease_paid"])
        dk = (row["psn_no"], *[row[c] for c in by_day[1:]])
        is_op, is_td = row["ledger"] == OP, row["ledger"] == TWO
        mine, rev = bool(row["op_mine"]), row["is_reversal"]
        raw = row["hifp_raw"] or 0
        day_before, pool_before, two_before = day.get(dk, 0), pool[py], two[py]
        cuts = (0, 0, 0)
        if mine and not rev:
            a_day = raw = row["op_raw"] or 0
            if row["opx_dl"]:
                a_day = min(raw, max(0, row["op_day_limit"] - day_before))
            a_op = a_day
            if row["opx_op_elig"] and row["opx_counts"]:
                a_op = min(a_day, max(0, row["op_cap"] - pool_before))
            raw = a_op
            if row["opx_shared"]:
                raw = min(a_op, max(0, row["td_cap"] - pool_before - two_before))
            cuts = (row["op_raw"] - a_day, a_day - a_op, a_op - raw) if row["op_raw"] else (0, 0, 0)
        pay = min(raw, max(0, (row["__cap"] or 0) - annual[py])) if raw else 0
        annual_before = annual[py]
        annual[py] += pay
        add_op = add_td = 0
        if mine:
            amount = row["opx_rev_amt"] if rev else pay  # §3.2: what the fund paid; a reversal what its original did
            if row["opx_dl"] or (rev and row["opx_rev_day"]):
                day[dk] = day_before + amount
            if is_op and row["opx_counts"]:
                pool[py] += amount
                add_op = amount
            if is_td:
                two[py] += amount
                add_td = amount
        for c, v in (("hifp_raw", raw), ("hifp_pay", pay), ("hifp_paid_before", annual_before),
                     ("op_pay", raw if mine and not rev else 0), ("op_day_before", day_before if row["opx_dl"] else None),
                     ("op_pool_before", pool_before), ("td_before", two_before), ("op_day_cut", cuts[0]),
                     ("op_cap_cut", cuts[1]), ("td_cap_cut", cuts[2]), ("op_pool_add", add_op), ("td_add", add_td)):
            out[c].append(v)
    at = idx["__i"]
    df = df.with_columns([df[c].cast(pl.Int64).scatter(at, pl.Series(v, dtype=pl.Int64)).alias(c)
                          for c, v in out.items()])
    df = df.with_columns(
        pl.when(pl.col("__walk")).then(pl.col("hifp_raw") - pl.col("hifp_pay")).otherwise(pl.col("hifp_cap_cut"))
        .alias("hifp_cap_cut"),
        pl.when(pl.col("__walk")).then(pl.col("op_pool_before") + pl.col("td_before"))
        .otherwise(pl.col("td_shared_before")).alias("td_shared_before"),
    )
    return df.drop("__walk", "__cap", *kept)


def _befores_and_cuts(df: pl.DataFrame, by_day: list[str]) -> pl.DataFrame:
    """From the payments: the state before each line (day, pool, shared) and what each limit took.

    `__expected` is the line-by-line rule evaluated on that state; it equals op_pay on every line
    exactly when op_pay is the walk's result (by induction over the lines of a person-year).
    """
    rev, fwd = pl.col("is_reversal"), pl.col("op_mine") & ~pl.col("is_reversal")
    is_op, is_td = pl.col("ledger") == OP, pl.col("ledger") == TWO
    p = pl.col("op_pay")
    c_day = pl.when(pl.col("__dl")).then(p).when(pl.col("__rev_day")).then(pl.col("__rev_amt")).otherwise(0)
    c_op = (pl.when(fwd & is_op & pl.col("__counts")).then(p)
            .when(rev & is_op & pl.col("__counts")).then(pl.col("__rev_amt")).otherwise(0))
    c_td = pl.when(fwd & is_td).then(p).when(rev & is_td).then(pl.col("__rev_amt")).otherwise(0)
    df = df.with_columns(
        pl.when(pl.col("__dl")).then(running_before(c_day, 0, by_day)).alias("op_day_before"),
        running_before(c_op, pl.col("carried_op_pool_paid"), PERSON_YEAR).alias("op_pool_before"),
        running_before(c_td, pl.col("carried_two_disease_paid"), PERSON_YEAR).alias("td_before"),
    )
    df = df.with_columns((pl.col("op_pool_before") + pl.col("td_before")).alias("td_shared_before"))
    r = pl.col("op_raw")

    def room(cap: str, before: str) -> pl.Expr:
        return (pl.col(cap) - pl.col(before)).clip(lower_bound=0)

    after_day = pl.when(pl.col("__dl")).then(pl.min_horizontal(r, room("op_day_limit", "op_day_before"))).otherwise(r)
    df = df.with_columns(after_day.alias("__a_day"))
    after_op = (pl.when(pl.col("__op_elig") & pl.col("__counts"))
                .then(pl.min_horizontal(pl.col("__a_day"), room("op_cap", "op_pool_before")))
                .otherwise(pl.col("__a_day")))
    df = df.with_columns(after_op.alias("__a_op"))
    after_sh = (pl.when(pl.col("__shared")).then(pl.min_horizontal(pl.col("__a_op"), room("td_cap", "td_shared_before")))
                .otherwise(pl.col("__a_op")))
    df = df.with_columns(pl.when(fwd).then(after_sh).otherwise(0).alias("__expected"))
    return df.with_columns(
        pl.when(fwd).then(r - pl.col("__a_day")).otherwise(0).alias("op_day_cut"),
        pl.when(fwd).then(pl.col("__a_day") - pl.col("__a_op")).otherwise(0).alias("op_cap_cut"),
        pl.when(fwd).then(pl.col("__a_op") - pl.col("__expected")).otherwise(0).alias("td_cap_cut"),
    )


def _walk(df: pl.DataFrame, by_day: list[str]) -> pl.DataFrame:
    """The rule line by line, for the person-years flagged `__walk` (rows already in line order)."""
    cols = ["psn_no", "year", *by_day[1:], "op_mine", "is_reversal", "ledger", "__dl", "__rev_day", "__rev_amt",
            "__counts", "__op_elig", "__shared", "op_raw", "op_day_limit", "op_cap", "td_cap",
            "carried_op_pool_paid", "carried_two_disease_paid"]
    idx = df.with_row_index("__i").filter(pl.col("__walk"))
    pool: dict[tuple, int] = {}
    two: dict[tuple, int] = {}
    day: dict[tuple, int] = {}
    paid: list[int] = []
    for row in idx.select(cols).iter_rows(named=True):
        py = (row["psn_no"], row["year"])
        pool.setdefault(py, row["carried_op_pool_paid"])
        two.setdefault(py, row["carried_two_disease_paid"])
        dk = (row["psn_no"], *[row[c] for c in by_day[1:]])
        is_op, is_td = row["ledger"] == OP, row["ledger"] == TWO
        p = 0
        if row["op_mine"] and row["is_reversal"]:
            amount = row["__rev_amt"]
            if row["__rev_day"]:
                day[dk] = day.get(dk, 0) + amount
            if is_op and row["__counts"]:
                pool[py] += amount
            if is_td:
                two[py] += amount
        elif row["op_mine"]:
            p = row["op_raw"]
            if row["__dl"]:
                p = min(p, max(0, row["op_day_limit"] - day.get(dk, 0)))
            if row["__op_elig"] and row["__counts"]:
                p = min(p, max(0, row["op_cap"] - pool[py]))
            if row["__shared"]:
                p = min(p, max(0, row["td_cap"] - pool[py] - two[py]))
            if row["__dl"]:
                day[dk] = day.get(dk, 0) + p
            if is_op and row["__counts"]:
                pool[py] += p
            if is_td:
                two[py] += p
        paid.append(p)
    walked = pl.Series("op_pay", df["op_pay"]).scatter(idx["__i"], pl.Series(paid, dtype=pl.Int64))
    return df.with_columns(walked.alias("op_pay"))


# --------------------------------------------------------------------------- reasons and explanation


def _reasons() -> list[pl.Expr]:
    fwd = pl.col("op_mine") & ~pl.col("is_reversal")
    op = fwd & (pl.col("ledger") == OP) & ~pl.col("op_pharmacy")
    elig = fwd & pl.col("op_eligible")
    return [
        code_if(fwd & (pl.col("op_pharmacy") | pl.col("op_pharmacy_td")), "PHARMACY_NOT_COVERED"),
        code_if(op & ~pl.col("op_level_ok") & ~pl.col("op_exempt"), "NOT_ELIGIBLE_LEVEL"),
        code_if(op & pl.col("op_offsite_blocked"), "OFFSITE_NOT_ENABLED"),
        code_if(elig & (pl.col("ledger") == OP) & pl.col("op_exempt"), "ANTENATAL_EXEMPT"),
        code_if(pl.col("td_not_certified"), "TWO_DISEASE_NOT_CERTIFIED"),
        code_if(pl.col("td_excluded"), "TWO_DISEASE_CHRONIC_EXCLUDED"),
        code_if(elig & (pl.col("inscp_scp_amt") <= 0), "NO_IN_SCOPE_COST"),
        code_if(elig & (pl.col("op_day_cut") > 0), "DAILY_LIMIT"),
        code_if(elig & (pl.col("op_cap_cut") > 0) & (pl.col("op_pay") == 0), "OP_POOL_CAP_REACHED"),
        code_if(elig & (pl.col("op_cap_cut") > 0) & (pl.col("op_pay") > 0), "OP_POOL_CAP_PARTLY"),
        code_if(elig & (pl.col("td_cap_cut") > 0) & (pl.col("op_pay") == 0), "TWO_DISEASE_CAP_REACHED"),
        code_if(elig & (pl.col("td_cap_cut") > 0) & (pl.col("op_pay") > 0), "TWO_DISEASE_CAP_PARTLY"),
    ]


def _explain() -> list[pl.Expr]:
    y = fen_text
    fwd = pl.col("op_mine") & ~pl.col("is_reversal")
    elig = fwd & pl.col("op_eligible")
    is_op, is_td = pl.col("ledger") == OP, pl.col("ledger") == TWO
    op = fwd & is_op & ~pl.col("op_pharmacy")

    def left(cap: str, before: str, after: bool) -> pl.Expr:
        used = pl.col(before) + (pl.col("op_pay") if after else 0)
        return y((pl.col(cap) - used).clip(lower_bound=0))

    return [
        when_text(fwd & pl.col("op_pharmacy"), "pharmacy purchase: Suizhou residents have outpatient pooling only at "
                  "designated medical institutions of level 1 and below, no pharmacy benefit (§3.2)"),
        when_text(fwd & pl.col("op_pharmacy_td"), "two-disease drugs at a pharmacy without a prescribing institution: "
                  "no level to pay at (§3.3)"),
        when_text(op & ~pl.col("op_level_ok") & ~pl.col("op_exempt"), "outpatient pooling pays only at institutions "
                  "of level 1 and below (§3.2)"),
        when_text(op & pl.col("op_offsite_blocked"), "out of the city: outpatient pooling only at institutions with "
                  "cross-region outpatient settlement enabled (§3.2)"),
        when_text(op & pl.col("op_exempt"), "med_type ", pl.col("med_type"), ": no daily limit and no level "
                  "restriction (§3.2); counts toward the outpatient-pooling cap (A-1)"),
        when_text(pl.col("td_not_certified"), "two-disease line not claimed under a hypertension or diabetes "
                  "certification valid on the date (§3.3)"),
        when_text(pl.col("td_excluded"), pl.col("td_disease"), " is covered by a chronic/special-disease "
                  "certification: no two-disease benefit for it (§3.3, A-23)"),
        when_text(elig & is_op, "outpatient pooling ", bp_text(pl.col("op_rate_bp")), " × in scope ",
                  y(pl.col("inscp_scp_amt")), " = ", y(pl.col("op_raw")), ", no deductible (§3.2)"),
        when_text(elig & is_td, "two-disease (", pl.col("td_disease"), ") ", bp_text(pl.col("op_rate_bp")),
                  " × in scope ", y(pl.col("inscp_scp_amt")), " = ", y(pl.col("op_raw")), ", no deductible (§3.3)"),
        when_text(elig & pl.col("op_day_limit").is_not_null(), "daily limit ", y(pl.col("op_day_limit")), " (",
                  pl.col("facility"), ") per person, day and institution (A-20): left before ",
                  left("op_day_limit", "op_day_before", False), ", after ", left("op_day_limit", "op_day_before", True)),
        when_text(elig & is_op & pl.col("op_cap").is_not_null(), "outpatient-pooling cap ", y(pl.col("op_cap")),
                  ": left before ", left("op_cap", "op_pool_before", False), ", after ",
                  left("op_cap", "op_pool_before", True)),
        when_text(elig & pl.col("td_cap").is_not_null(), "two-disease ceiling ", y(pl.col("td_cap")), " (",
                  pl.col("td_conditions"), "), shared by outpatient pooling and two-disease (§3.3): left before ",
                  left("td_cap", "td_shared_before", False), ", after ", left("td_cap", "td_shared_before", True)),
        when_text(elig, "outpatient benefit pays ", y(pl.col("op_pay"))),
    ]


STAGE = Stage(
    name="resident outpatient pooling and two-disease (§3.2–§3.3)",
    run=adjudicate_outpatient,
    accumulators={"op_pool_paid": "op_pool_add", "two_disease_paid": "td_add"},
    defaults={
        "op_mine": pl.Boolean, "op_eligible": pl.Boolean, "op_exempt": pl.Boolean, "op_level_ok": pl.Boolean,
        "op_offsite_blocked": pl.Boolean, "op_pharmacy": pl.Boolean, "op_pharmacy_td": pl.Boolean,
        "td_not_certified": pl.Boolean, "td_excluded": pl.Boolean, "td_disease": pl.String,
        "td_conditions": pl.String, "op_rate_bp": pl.Int64, "op_raw": pl.Int64, "op_pay": pl.Int64,
        "op_day_limit": pl.Int64, "op_day_before": pl.Int64, "op_cap": pl.Int64, "op_pool_before": pl.Int64,
        "td_cap": pl.Int64, "td_shared_before": pl.Int64, "op_day_cut": pl.Int64, "op_cap_cut": pl.Int64,
        "td_cap_cut": pl.Int64,
    },
    reasons=_reasons,
    explain=_explain,
)
