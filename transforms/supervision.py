"""Fund-supervision rules (基金监管规则, issue 17): settlements whose pattern is a known abuse.

Pure polars: the month's lines and the earlier lines a rule needs to look back at (passed in by the flow)
in, one row per finding out (DATA.md §4 `violations`, named after the national platform's rule-check output:
`rule_id`, `rule_name`, `sev_deg`, `vola_amt`, `vola_bhvr_type`, `vola_evid`, `vola_cont`). Thresholds,
severities, names and switches are the dated parameters of `policies/<region>/<scheme>/supervision.yaml`,
looked up per (region, scheme) on the month's last day; a rule runs over the lines of one region and scheme.

Lines (`current` and `history`) carry: setl_id, mdtrt_id, psn_no, region, scheme, month, fixmedins_code, hosp_lv,
med_type, ledger, begndate, enddate, setl_time, dise_codg, orig_setl_id, medfee_sumamt, fulamt_ownpay_amt,
overlmt_selfpay, cls_a_amt, cls_b_amt, fund_pay_sumamt (money Int64 fen).

A finding belongs to the month of its latest evidence line: a month's run reports only findings with at least
one line of the month (the earlier ones were reported by earlier months). Reversals and the originals they
reverse (within the lines given) are not evidence: a cancelled settlement paid nothing.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl

RULES = ("split_admission", "duplicate_settlement", "overlapping_stays", "same_day_outpatient",
         "short_stay_high_cost", "institution_out_of_scope_ratio", "institution_cost_per_stay")
RULE_IDS = {r: r.upper() for r in RULES}  # rule_id: the parameter's name, upper case (stable, documented)

VIOLATION_SCHEMA: dict[str, pl.DataType] = {
    "rule_id": pl.String, "rule_name": pl.String, "rule_name_en": pl.String, "sev_deg": pl.String,
    "vola_amt": pl.Int64, "vola_bhvr_type": pl.String, "vola_cont": pl.String, "vola_evid": pl.String,
    "evid_count": pl.Int64, "psn_no": pl.String, "fixmedins_code": pl.String, "hosp_lv": pl.String,
    "region": pl.String, "scheme": pl.String, "finding_key": pl.String,
}
LINE_COLUMNS = ["setl_id", "mdtrt_id", "psn_no", "region", "scheme", "month", "fixmedins_code", "hosp_lv", "med_type",
                "ledger", "begndate", "enddate", "setl_time", "dise_codg", "orig_setl_id", "medfee_sumamt",
                "fulamt_ownpay_amt", "overlmt_selfpay", "cls_a_amt", "cls_b_amt", "fund_pay_sumamt"]
_AMOUNTS = ["medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "cls_a_amt", "cls_b_amt"]


def empty_violations() -> pl.DataFrame:
    return pl.DataFrame(schema=VIOLATION_SCHEMA)


def rule_settings(policies, region: str, scheme: str, on: dt.date) -> dict[str, dict]:
    """rule → its setting on `on` for a region and scheme (a missing parameter stops the run, naming it)."""
    return {r: dict(policies.value(region, scheme, f"supervision.{r}", on)) for r in RULES}


def history_since(current: pl.DataFrame, policies, on: dt.date) -> dt.date | None:
    """The earliest end date an earlier line needs to be seen by the rules: the month's earliest begin date less
    the longest readmission window of the month's regions and schemes (an earlier copy of a duplicate, an
    overlapping stay, the stay before a readmission all end on or after it). None: no line in the month."""
    if current.height == 0 or current["begndate"].drop_nulls().len() == 0:
        return None
    pairs = current.select("region", "scheme").drop_nulls().unique().iter_rows()
    window = max([int(rule_settings(policies, r, s, on)["split_admission"]["readmission_days"]) for r, s in pairs],
                 default=0)
    return current["begndate"].min() - dt.timedelta(days=window)


def supervise(current: pl.DataFrame, history: pl.DataFrame | None, policies, on: dt.date) -> pl.DataFrame:
    """Every enabled rule over the month's lines (`current`) and the earlier lines (`history`), per region and
    scheme; one row per finding (VIOLATION_SCHEMA), sorted by rule and finding."""
    cur = current.select(LINE_COLUMNS).with_columns(pl.lit(True).alias("is_current"))
    hist = (history.select(LINE_COLUMNS).with_columns(pl.lit(False).alias("is_current"))
            if history is not None and history.height else None)
    lines = pl.concat([cur, hist], how="vertical_relaxed") if hist is not None else cur
    reversed_ids = lines["orig_setl_id"].drop_nulls().unique().implode()
    lines = lines.filter(pl.col("orig_setl_id").is_null() & ~pl.col("setl_id").is_in(reversed_ids))
    out = []
    for (region, scheme), part in lines.group_by("region", "scheme"):
        if region is None or scheme is None:
            continue
        settings = rule_settings(policies, region, scheme, on)
        for rule, fn in RULE_FUNCTIONS.items():
            s = settings[rule]
            if not s.get("enabled"):
                continue
            found = fn(part, s)
            if found.height:
                out.append(found.with_columns(
                    pl.lit(RULE_IDS[rule]).alias("rule_id"), pl.lit(str(s["rule_name"])).alias("rule_name"),
                    pl.lit(str(s["rule_name_en"])).alias("rule_name_en"), pl.lit(str(s["sev_deg"])).alias("sev_deg"),
                    pl.lit(str(s["vola_bhvr_type"])).alias("vola_bhvr_type"),
                    pl.lit(region).alias("region"), pl.lit(scheme).alias("scheme")))
    if not out:
        return empty_violations()
    v = pl.concat([f.select(
        "rule_id", "rule_name", "rule_name_en", "sev_deg", "vola_amt", "vola_bhvr_type", "vola_cont",
        pl.col("evid").list.sort().list.join(",").alias("vola_evid"), pl.col("evid").list.len().cast(pl.Int64)
        .alias("evid_count"), "psn_no", "fixmedins_code", "hosp_lv", "region", "scheme") for f in out],
        how="vertical_relaxed")
    v = v.with_columns(pl.concat_str(["rule_id", "vola_evid"], separator=":").alias("finding_key"))
    return v.select([pl.col(c).cast(t) for c, t in VIOLATION_SCHEMA.items()]).sort("rule_id", "finding_key")


# ---------------------------------------------------------------- helpers

def _stays(lines: pl.DataFrame, ledgers: list[str]) -> pl.DataFrame:
    """One row per stay (person × mdtrt_id) of these ledgers: its dates, institution, diagnosis, cost, fund
    payment, settlement ids, and whether a line of the month is among them."""
    return (lines.filter(pl.col("ledger").is_in(ledgers))
            .sort("setl_time", "setl_id")
            .group_by("psn_no", "mdtrt_id", maintain_order=True)
            .agg(pl.col("begndate").min(), pl.col("enddate").max(), pl.col("fixmedins_code").first(),
                 pl.col("hosp_lv").first(), pl.col("dise_codg").drop_nulls().first(),
                 pl.col("medfee_sumamt").sum(), pl.col("fund_pay_sumamt").sum(), pl.col("setl_id").alias("evid"),
                 pl.col("is_current").any(), pl.col("setl_time").max()))


def _yuan(fen: pl.Expr) -> pl.Expr:
    """Fen (a median may be a half fen: rounded) as yuan text for vola_cont, e.g. 1234.50."""
    f = fen.round(0).cast(pl.Int64)
    return pl.format("{}{}.{}", pl.when(f < 0).then(pl.lit("-")).otherwise(pl.lit("")), f.abs() // 100,
                     (f.abs() % 100).cast(pl.String).str.zfill(2))


def _days(a: str, b: str) -> pl.Expr:
    return (pl.col(a) - pl.col(b)).dt.total_days()


def _score_ok(value: pl.Expr, median: pl.Expr, mad: pl.Expr, s: dict) -> pl.Expr:
    """The modified z-score mad_scale × (value − median) / MAD reaches min_score (MAD > 0), compared as
    mad_scale × (value − median) ≥ min_score × MAD in floating point: a score, not money (the amounts at stake
    are fen); the parameters are written as decimal strings in the policy file."""
    scale, cut = Decimal(str(s["mad_scale"])), Decimal(str(s["min_score"]))
    return (mad > 0) & (float(scale) * (value - median) >= float(cut) * mad)


def _score(value: pl.Expr, median: pl.Expr, mad: pl.Expr, s: dict) -> pl.Expr:
    return (float(Decimal(str(s["mad_scale"]))) * (value - median) / mad).round(2)


def _robust(df: pl.DataFrame, value: str, by: list[str]) -> pl.DataFrame:
    """Adds the median and the MAD (median absolute deviation) of `value` within `by`, and the group's size."""
    df = df.with_columns(pl.col(value).cast(pl.Float64).median().over(by).alias("__med"),
                         pl.len().over(by).alias("__n"))
    return df.with_columns((pl.col(value) - pl.col("__med")).abs().median().over(by).alias("__mad"))


# ---------------------------------------------------------------- rules

def split_admission(lines: pl.DataFrame, s: dict) -> pl.DataFrame:
    """分解住院: a stay begun 0…readmission_days days after the discharge of the person's previous stay at the same
    institution, same ICD-10 category; amount at stake: the readmission's fund payment."""
    k = int(s["diagnosis_category_chars"])
    st = _stays(lines, list(s["ledgers"])).sort("psn_no", "fixmedins_code", "begndate", "enddate", "mdtrt_id")
    g = ["psn_no", "fixmedins_code"]
    st = st.with_columns(*[pl.col(c).shift(1).over(g).alias(f"prev_{c}")
                           for c in ("enddate", "dise_codg", "evid", "is_current", "mdtrt_id")])
    gap = _days("begndate", "prev_enddate")
    hit = st.filter(pl.col("prev_enddate").is_not_null() & (gap >= 0) & (gap <= int(s["readmission_days"]))
                    & (pl.col("dise_codg").str.slice(0, k) == pl.col("prev_dise_codg").str.slice(0, k))
                    & (pl.col("is_current") | pl.col("prev_is_current")))
    return hit.select(
        "psn_no", "fixmedins_code", "hosp_lv", pl.col("fund_pay_sumamt").alias("vola_amt"),
        pl.format("readmitted {} days after discharge ({} → {}), diagnosis {} / {}", gap, pl.col("prev_enddate"),
                  pl.col("begndate"), pl.col("prev_dise_codg"), pl.col("dise_codg")).alias("vola_cont"),
        pl.concat_list("prev_evid", "evid").alias("evid"))


def duplicate_settlement(lines: pl.DataFrame, s: dict) -> pl.DataFrame:
    """重复结算: the same person, institution, med_type, dates and amounts under different setl_id; amount at stake:
    the fund payments of every copy but the first settled."""
    if int(s.get("amount_tolerance_fen", 0)) != 0:
        raise ValueError("supervision.duplicate_settlement.amount_tolerance_fen: only an exact match (0) is implemented")
    key = ["psn_no", "fixmedins_code", "med_type", "begndate", "enddate", *_AMOUNTS]
    g = (lines.sort("setl_time", "setl_id").group_by(key, maintain_order=True)
         .agg(pl.col("setl_id").alias("evid"), pl.col("fund_pay_sumamt").slice(1).sum().alias("vola_amt"),
              pl.col("is_current").any(), pl.col("hosp_lv").first(), pl.len().alias("n"))
         .filter((pl.col("n") >= 2) & pl.col("is_current")))
    return g.select("psn_no", "fixmedins_code", "hosp_lv", "vola_amt",
                    pl.format("{} settlements of the same visit ({}–{}, total {} yuan each)", pl.col("n"), "begndate",
                              "enddate", _yuan(pl.col("medfee_sumamt"))).alias("vola_cont"), "evid")


def overlapping_stays(lines: pl.DataFrame, s: dict) -> pl.DataFrame:
    """住院时间重叠: two stays of one person at different institutions overlapping by min_overlap_days or more;
    amount at stake: the fund payment of the later-admitted stay."""
    st = _stays(lines, list(s["ledgers"])).with_row_index("__i")
    cols = ["__i", "psn_no", "mdtrt_id", "begndate", "enddate", "fixmedins_code", "hosp_lv", "fund_pay_sumamt",
            "evid", "is_current"]
    a, b = st.select(cols), st.select(cols)
    pairs = a.join(b, on="psn_no", suffix="_b").filter(
        (pl.col("fixmedins_code") != pl.col("fixmedins_code_b"))
        & ((pl.col("begndate") < pl.col("begndate_b"))
           | ((pl.col("begndate") == pl.col("begndate_b")) & (pl.col("__i") < pl.col("__i_b"))))
        & (pl.col("is_current") | pl.col("is_current_b")))
    overlap = (pl.min_horizontal("enddate", "enddate_b") - pl.max_horizontal("begndate", "begndate_b")).dt.total_days()
    hit = pairs.filter(overlap >= int(s["min_overlap_days"]))
    return hit.select(
        "psn_no", pl.col("fixmedins_code_b").alias("fixmedins_code"), pl.col("hosp_lv_b").alias("hosp_lv"),
        pl.col("fund_pay_sumamt_b").alias("vola_amt"),
        pl.format("stays overlap {} days: {} {}–{} and {} {}–{}", overlap, "fixmedins_code", "begndate", "enddate",
                  "fixmedins_code_b", "begndate_b", "enddate_b").alias("vola_cont"),
        pl.concat_list("evid", "evid_b").alias("evid"))


def same_day_outpatient(lines: pl.DataFrame, s: dict) -> pl.DataFrame:
    """同日多机构就诊: outpatient lines of one person on one day at min_institutions or more institutions; amount
    at stake: that day's fund payments. The institution named is the last one settled that day."""
    g = (lines.filter(pl.col("ledger").is_in(list(s["ledgers"]))).sort("setl_time", "setl_id")
         .group_by("psn_no", "begndate", maintain_order=True)
         .agg(pl.col("fixmedins_code").n_unique().alias("n"), pl.col("fixmedins_code").last(),
              pl.col("hosp_lv").last(), pl.col("fund_pay_sumamt").sum().alias("vola_amt"),
              pl.col("setl_id").alias("evid"), pl.col("is_current").any(),
              pl.col("fixmedins_code").unique(maintain_order=True).str.join(",").alias("where"))
         .filter((pl.col("n") >= int(s["min_institutions"])) & pl.col("is_current")))
    return g.select("psn_no", "fixmedins_code", "hosp_lv", "vola_amt",
                    pl.format("{} institutions on {}: {}", "n", "begndate", "where").alias("vola_cont"), "evid")


def short_stay_high_cost(lines: pl.DataFrame, s: dict) -> pl.DataFrame:
    """短期住院高费用: a stay of at most max_stay_days days whose cost scores min_score or more among the month's
    stays at the same level (at least min_peers of them); amount at stake: the stay's fund payment."""
    st = _robust(_stays(lines, list(s["ledgers"])).filter(pl.col("is_current")), "medfee_sumamt", ["hosp_lv"])
    hit = st.filter((_days("enddate", "begndate") <= int(s["max_stay_days"])) & (pl.col("__n") >= int(s["min_peers"]))
                    & _score_ok(pl.col("medfee_sumamt"), pl.col("__med"), pl.col("__mad"), s))
    return hit.select(
        "psn_no", "fixmedins_code", "hosp_lv", pl.col("fund_pay_sumamt").alias("vola_amt"),
        pl.format("{}-day stay costing {} yuan; level {} median {}, MAD {}, score {}", _days("enddate", "begndate"),
                  _yuan(pl.col("medfee_sumamt")), "hosp_lv", _yuan(pl.col("__med")), _yuan(pl.col("__mad")),
                  _score(pl.col("medfee_sumamt"), pl.col("__med"), pl.col("__mad"), s)).alias("vola_cont"), "evid")


def _institution_month(lines: pl.DataFrame, s: dict) -> pl.DataFrame:
    """Per institution: the month's stay lines (count of stays, cost, out-of-scope cost, ids), those with at
    least min_stays stays."""
    return (lines.filter(pl.col("is_current") & pl.col("ledger").is_in(list(s["ledgers"])))
            .group_by("fixmedins_code")
            .agg(pl.col("hosp_lv").first(), pl.col("mdtrt_id").n_unique().alias("stays"),
                 pl.col("medfee_sumamt").sum().alias("total"),
                 (pl.col("fulamt_ownpay_amt") + pl.col("overlmt_selfpay")).sum().alias("oos"),
                 pl.col("setl_id").alias("evid"))
            .filter((pl.col("stays") >= int(s["min_stays"])) & (pl.col("total") > 0)))


def _institution_outlier(inst: pl.DataFrame, value: str, s: dict, at_stake: pl.Expr, what: str) -> pl.DataFrame:
    r = _robust(inst, value, ["hosp_lv"])
    hit = r.filter((pl.col("__n") >= int(s["min_peers"])) & _score_ok(pl.col(value), pl.col("__med"), pl.col("__mad"), s))
    return hit.select(
        pl.lit(None, pl.String).alias("psn_no"), "fixmedins_code", "hosp_lv",
        at_stake.round(0).cast(pl.Int64).alias("vola_amt"),
        pl.format("{} {} over {} stays; level {} median of {} institutions {}, MAD {}, score {}", pl.lit(what),
                  pl.col(value).round(4), "stays", "hosp_lv", "__n", pl.col("__med").round(4), pl.col("__mad").round(4),
                  _score(pl.col(value), pl.col("__med"), pl.col("__mad"), s)).alias("vola_cont"), "evid")


def institution_out_of_scope_ratio(lines: pl.DataFrame, s: dict) -> pl.DataFrame:
    """机构政策范围外费用占比异常: amount at stake: out-of-scope cost above the peer median ratio × total."""
    inst = _institution_month(lines, s).with_columns((pl.col("oos") / pl.col("total")).alias("ratio"))
    return _institution_outlier(inst, "ratio", s, pl.col("oos") - pl.col("__med") * pl.col("total"),
                                "out-of-scope ratio")


def institution_cost_per_stay(lines: pl.DataFrame, s: dict) -> pl.DataFrame:
    """机构次均住院费用异常: amount at stake: cost above the peer median average × stays."""
    inst = _institution_month(lines, s).with_columns((pl.col("total") / pl.col("stays")).alias("avg"))
    return _institution_outlier(inst, "avg", s, pl.col("total") - pl.col("__med") * pl.col("stays"),
                                "cost per stay (fen)")


RULE_FUNCTIONS = {
    "split_admission": split_admission, "duplicate_settlement": duplicate_settlement,
    "overlapping_stays": overlapping_stays, "same_day_outpatient": same_day_outpatient,
    "short_stay_high_cost": short_stay_high_cost, "institution_out_of_scope_ratio": institution_out_of_scope_ratio,
    "institution_cost_per_stay": institution_cost_per_stay,
}
