"""An emergency visit and the stay it turned into (急诊转住院), settled in the same or in different months.

POLICY §1.11–§1.12, A-31. Lines sharing `mdtrt_id` with a stay line (med_type 21, 22, 24) form one stay within
one year (the key is psn_no, year, mdtrt_id):
  - an emergency line (13, not a rescue) settled before any stay line of its mdtrt_id is general outpatient
    care at its time (§3.2, §4.3): the engine adjudicates it as any outpatient line;
  - the first stay line that is not held (§3.6, A-28: a held trauma line does not settle) is the *settling*
    line: it settles the merged stay. The engine does it in three moves, all at the settling line's time:
      1. a give-back row per earlier emergency line E (`E>S`): a reversal of E (§1.7 mechanics, the same code
         path as any reversal) that takes back what E was paid and what E added to every accumulator
         (outpatient-pooling cap and daily usage, two-disease ceiling, employee outpatient deductible and cap,
         the basic fund's annual cap used);
      2. the settling line adjudicated on the merged cost (its own amounts plus every E's), with the stay's
         rules: class-B pre-self-pay (A-16) on all of it, one per-stay deductible, the stay's rates, the
         stay's accumulators (annual cap, critical-illness burden, assistance bases);
      3. `fold`: the give-back rows are folded into the settling line — each fund pays what the merged stay is
         owed minus what the emergency lines were paid (negative: a recovery, reason EMERGENCY_MERGED) — and
         dropped. The settling line keeps its own total cost (medfee_sumamt and the amounts it was billed);
         its in-scope cost, pre-self-pay, deductible and rate columns are those of the merged stay (DATA.md §4:
         the hifp_pay bound of such a line is the merged stay's in-scope cost); `merged_setl_ids` names the
         emergency lines it merged. Only the in-catalogue cost is merged: out-of-catalogue and over-limit amounts
         enter no fund, and §3.10 judges the out-of-scope share on each settlement line's own amounts.
  - a 13 settled after the settling line (same key) is a line of that stay (`after_stay_line`: ledger
    inpatient, shares the per-stay deductible);
  - a 13 in another year than the stay line is not merged (the key has the year);
  - an emergency line already reversed is not merged (its reversal undid it); reversing an emergency line
    after its merge is rejected by validation (REVERSAL_AFTER_MERGE, transforms/validate.py).

Earlier months' lines come from the store as `earlier` (adjudicated rows of the same persons and mdtrt_ids,
flows/store.py `stay_history`): emergency lines stored as outpatient care and not yet merged, and whether a
settling line was already stored (a stored non-held 21/22/24).
"""

from __future__ import annotations

import polars as pl

from flows.policies import Policies
from transforms.enrich import REGION_BY_CITY
from transforms.explain import code_if, fen_text, when_text
from transforms.params import in_dated_list

STAY_LINE_TYPES = ["21", "22", "24"]
EMERGENCY = "13"
KEY = ["psn_no", "year", "mdtrt_id"]
# The in-catalogue amounts a settling line is adjudicated on: its own plus its emergency lines' (DATA.md §2). Its
# out-of-catalogue and over-limit amounts and its total stay its own: they enter no fund, and §3.10 judges the
# out-of-scope share per settlement line, on its own amounts.
MERGED_AMOUNTS = ["cls_a_amt", "cls_b_amt"]
# A give-back row negates every amount, as a reversal does (§1.7).
AMOUNTS = ["medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "cls_a_amt", "cls_b_amt"]
# What the settling line pays: what the merged stay is owed minus what the emergency lines were paid.
FOLDED = ["hifp_pay", "hifmi_pay", "maf_pay", "maf_tilt_pay", "hosp_part_amt"]
REPORTED = ["hifp_pay", "hifmi_pay", "maf_pay", "acct_pay", "acct_mulaid_pay", "psn_cash_pay"]
EVENT_SCHEMA = {"setl_id": pl.String, "psn_no": pl.String, "year": pl.Int32, "mdtrt_id": pl.String,
                "med_type": pl.String, "setl_time": pl.Datetime("us"), "orig_setl_id": pl.String,
                "emergency": pl.Boolean, "held": pl.Boolean, "stored": pl.Boolean}


def _batch_events(lines: pl.DataFrame, registers: dict[str, pl.DataFrame], policies: Policies,
                  used: set | None) -> pl.DataFrame:
    """The batch's 13/21/22/24 lines, with whether each is an emergency line that may be merged (13, not a
    rescue) and whether a stay line is held (§3.6, A-6/A-28: a Suizhou resident's trauma stay without a report
    in a county that requires one)."""
    ev = lines.filter(pl.col("med_type").is_in([EMERGENCY, *STAY_LINE_TYPES])).select(
        "setl_id", "psn_no", "mdtrt_id", "med_type", "orig_setl_id", "insutype", "trauma_report_no",
        pl.col("setl_time").cast(pl.Datetime("us")), pl.col("setl_time").dt.date().alias("setl_date"),
        pl.col("setl_time").dt.year().cast(pl.Int32).alias("year"),
        ((pl.col("med_type") == EMERGENCY) & ~pl.col("is_emergency_rescue").fill_null(False)).alias("emergency"))
    ev = ev.with_columns(held_lines(ev, registers, policies, used))
    return ev.select(*[c for c in EVENT_SCHEMA if c != "stored"], pl.lit(False).alias("stored"))


def held_lines(lines: pl.DataFrame, registers: dict[str, pl.DataFrame], policies: Policies | None,
               used: set | None = None) -> pl.Series:
    """Whether each line (setl_id, psn_no, med_type, insutype, trauma_report_no, setl_date) is a held trauma stay
    line (§3.6, A-6/A-28): a Suizhou resident's 22 without a report, insured in a county that requires one. Without
    policies (validation run on its own), every 22 without a report counts as held (it settles nothing)."""
    persons = registers["persons"].select("psn_no", "insuplc_admdvs").unique("psn_no", keep="first")
    ev = lines.select("psn_no", "med_type", "insutype", "trauma_report_no", "setl_date").join(
        persons, on="psn_no", how="left", maintain_order="left")
    maybe = ((pl.col("med_type") == "22") & pl.col("trauma_report_no").is_null() & (pl.col("insutype") == "390")
             & (pl.col("insuplc_admdvs").str.slice(0, 4).replace_strict(REGION_BY_CITY, default=None) == "suizhou")
             ).fill_null(False)
    held = ev.select(maybe.alias("held"))["held"]
    if policies is None or not held.any():
        return held
    idx = held.arg_true()
    hit = in_dated_list(ev[idx], policies, "suizhou", "resident", "inpatient.trauma_report_required_counties",
                        "insuplc_admdvs", need=pl.lit(True), used=used)
    return held.scatter(idx, hit)


def _stored_events(earlier: pl.DataFrame) -> pl.DataFrame:
    """Stored lines of earlier months: an emergency line still general outpatient care (ledger outpatient_pool,
    not named by a stored settling line's merged_setl_ids), stay lines held or not (their reason codes)."""
    merged = (earlier["merged_setl_ids"].drop_nulls().str.split(",").explode().to_list()
              if "merged_setl_ids" in earlier.columns else [])
    return earlier.filter(pl.col("med_type").is_in([EMERGENCY, *STAY_LINE_TYPES])).select(
        "setl_id", "psn_no", pl.col("setl_time").dt.year().cast(pl.Int32).alias("year"), "mdtrt_id", "med_type",
        pl.col("setl_time").cast(pl.Datetime("us")), "orig_setl_id",
        ((pl.col("med_type") == EMERGENCY) & (pl.col("ledger") == "outpatient_pool")
         & ~pl.col("setl_id").is_in(merged)).alias("emergency"),
        pl.col("reason_codes").fill_null("").str.contains("HELD_FOR_REVIEW").alias("held"),
        pl.lit(True).alias("stored"))


def plan(lines: pl.DataFrame, registers: dict[str, pl.DataFrame], policies: Policies,
         earlier: pl.DataFrame | None, used: set | None = None) -> pl.DataFrame:
    """One row per emergency line merged by a settling line of the batch (emergency_id, settling_id), plus rows
    (emergency_id = null) naming the batch's 13 lines settled after their stay's settling line (`after_id`)."""
    ev = _batch_events(lines, registers, policies, used)
    keys = ev.select(KEY).unique()
    if earlier is not None and earlier.height:
        old = _stored_events(earlier).join(keys, on=KEY, how="semi")
        ev = pl.concat([old.cast(EVENT_SCHEMA), ev.cast(EVENT_SCHEMA)])
    ev = ev.sort(["psn_no", "setl_time", "setl_id"])
    revs = ev.filter(pl.col("orig_setl_id").is_not_null()).select(
        pl.col("orig_setl_id").alias("setl_id"), pl.col("setl_time").alias("r_time"), pl.col("setl_id").alias("r_id"))
    settling = (ev.filter(pl.col("med_type").is_in(STAY_LINE_TYPES) & pl.col("orig_setl_id").is_null()
                          & ~pl.col("held"))
                .group_by(KEY, maintain_order=True)
                .agg(pl.col("setl_id").first().alias("settling_id"), pl.col("setl_time").first().alias("s_time"),
                     pl.col("stored").first().alias("s_stored")))
    em = ev.filter(pl.col("med_type") == EMERGENCY).join(settling, on=KEY, how="inner")

    def precedes(t: str, i: str) -> pl.Expr:  # (time, id) order of §1.2
        return (pl.col(t) < pl.col("s_time")) | ((pl.col(t) == pl.col("s_time")) & (pl.col(i) < pl.col("settling_id")))

    before = precedes("setl_time", "setl_id")
    # an emergency line reversed before the settling line is not part of the stay any more (its reversal undid it)
    gone = (em.join(revs, on="setl_id", how="inner").filter(precedes("r_time", "r_id"))
            .select("setl_id").unique())
    merged = em.filter(before & pl.col("emergency") & pl.col("orig_setl_id").is_null()
                       & ~pl.col("setl_id").is_in(gone["setl_id"].implode()) & ~pl.col("s_stored"))
    after = em.filter(~before & ~pl.col("stored") & pl.col("orig_setl_id").is_null())
    return pl.concat([
        merged.select(pl.col("setl_id").alias("emergency_id"), "settling_id", pl.lit(None, pl.String).alias("after_id")),
        after.select(pl.lit(None, pl.String).alias("emergency_id"), pl.lit(None, pl.String).alias("settling_id"),
                     pl.col("setl_id").alias("after_id")),
    ])


def expand(lines: pl.DataFrame, registers: dict[str, pl.DataFrame], policies: Policies,
           earlier: pl.DataFrame | None, used: set | None = None) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    """The batch's lines with every settling line's merge laid out (see the module doc): give-back rows added,
    settling lines' amounts merged (own amounts kept as own_*), 13 lines after their settling line marked
    `after_stay_line`; and the stored adjudicated rows of the merged emergency lines (the give-back rows'
    originals). Columns __sort_id / __sort_sub put each give-back row just before its settling line."""
    p = plan(lines, registers, policies, earlier, used)
    after_ids = p["after_id"].drop_nulls()
    if earlier is not None and earlier.height:  # a reversal of a stored line of a stay follows its original
        after_ids = pl.concat([after_ids, earlier.filter((pl.col("med_type") == EMERGENCY)
                                                         & (pl.col("ledger") == "inpatient"))["setl_id"]])
    after = pl.col("setl_id").is_in(after_ids.implode()) | pl.col("orig_setl_id").is_in(after_ids.implode())
    base = lines.with_columns(
        after.fill_null(False).alias("after_stay_line"),
        pl.lit(False).alias("merge_give_back"), pl.lit(None, pl.String).alias("merged_setl_ids"),
        pl.col("setl_id").alias("__sort_id"), pl.lit(1, pl.Int8).alias("__sort_sub"),
        pl.lit(None, pl.Int64).alias("merged_medfee_sumamt"), *[pl.col(c).alias(f"own_{c}") for c in MERGED_AMOUNTS])
    pairs = p.filter(pl.col("emergency_id").is_not_null()).select("emergency_id", "settling_id")
    if pairs.height == 0:
        return base, None
    stored = None
    in_batch = lines.join(pairs.rename({"emergency_id": "setl_id"}), on="setl_id", how="inner")
    missing = pairs.filter(~pl.col("emergency_id").is_in(lines["setl_id"].implode()))
    if missing.height:
        stored = earlier.join(missing.select(pl.col("emergency_id").alias("setl_id")), on="setl_id", how="semi")
        rows = stored.join(missing.rename({"emergency_id": "setl_id"}), on="setl_id").with_columns(
            pl.col("offsite_type_eff").alias("offsite_type"))  # what the line was adjudicated with (§1.9)
        rows = rows.select([(pl.col(c) if c in rows.columns else pl.lit(None)).cast(t).alias(c)
                            for c, t in lines.schema.items()] + ["settling_id"])
        in_batch = pl.concat([in_batch, rows.with_columns(pl.lit(False).alias("is_emergency_rescue"))],
                             how="vertical_relaxed")
    stay = lines.select(pl.col("setl_id").alias("settling_id"), pl.col("setl_time").alias("__s_time"))
    give = (in_batch.join(stay, on="settling_id")
            .with_columns(pl.col("setl_id").alias("orig_setl_id"),
                          (pl.col("setl_id") + pl.lit(">") + pl.col("settling_id")).alias("setl_id"),
                          pl.col("__s_time").alias("setl_time"),
                          *[(-pl.col(c)).alias(c) for c in AMOUNTS],
                          *[pl.lit(None, lines.schema[c]).alias(c) for c in REPORTED if c in lines.columns]))
    if "month" in lines.columns:
        give = give.with_columns(pl.col("setl_time").dt.strftime("%Y-%m").alias("month"))
    sums = (in_batch.group_by("settling_id")
            .agg(*[pl.col(c).sum().alias(f"__add_{c}") for c in AMOUNTS],
                 pl.col("setl_id").sort().str.join(",").alias("__ids")))
    base = base.drop("merged_medfee_sumamt").join(sums.rename({"settling_id": "setl_id"}), on="setl_id", how="left",
                                                  maintain_order="left")
    base = base.with_columns(
        *[(pl.col(c) + pl.col(f"__add_{c}").fill_null(0)).alias(c) for c in MERGED_AMOUNTS],
        (pl.col("medfee_sumamt") + pl.col("__add_medfee_sumamt")).alias("merged_medfee_sumamt"),
        pl.col("__ids").alias("merged_setl_ids")).drop([f"__add_{c}" for c in AMOUNTS] + ["__ids"])
    give = give.with_columns(
        pl.lit(False).alias("after_stay_line"), pl.lit(True).alias("merge_give_back"),
        pl.lit(None, pl.String).alias("merged_setl_ids"), pl.col("settling_id").alias("__sort_id"),
        pl.lit(0, pl.Int8).alias("__sort_sub"), pl.lit(None, pl.Int64).alias("merged_medfee_sumamt"),
        *[pl.col(c).alias(f"own_{c}") for c in MERGED_AMOUNTS])
    out = pl.concat([base, give.select(base.columns)], how="vertical_relaxed")
    return out, stored


def fold(df: pl.DataFrame) -> pl.DataFrame:
    """Step 3: each settling line pays, fund by fund, the merged stay's amount plus its give-back rows' (the
    emergency lines' payments negated); it keeps its own billed amounts; the give-back rows are dropped."""
    give = df.filter(pl.col("merge_give_back"))
    if give.height == 0:
        return df.with_columns([pl.lit(None, pl.Int64).alias(f"merged_{c}") for c in FOLDED])
    back = (give.group_by(pl.col("__sort_id").alias("setl_id"))
            .agg(*[pl.col(c).sum().alias(f"__back_{c}") for c in FOLDED]))
    df = df.filter(~pl.col("merge_give_back")).join(back, on="setl_id", how="left", maintain_order="left")
    merged = pl.col("merged_setl_ids").is_not_null()
    df = df.with_columns(
        *[pl.when(merged).then(pl.col(c)).otherwise(None).alias(f"merged_{c}") for c in FOLDED],
        *[(pl.col(c) + pl.col(f"__back_{c}").fill_null(0)).alias(c) for c in FOLDED])
    df = df.with_columns(
        (pl.col("hifp_pay") + pl.col("hifmi_pay") + pl.col("maf_pay") + pl.col("maf_tilt_pay")).alias("fund_pay_sumamt"))
    df = df.with_columns((pl.col("medfee_sumamt") - pl.col("fund_pay_sumamt") - pl.col("hosp_part_amt"))
                         .alias("psn_part_amt"))
    df = df.with_columns((pl.col("psn_part_amt") - pl.col("acct_pay") - pl.col("acct_mulaid_pay")).alias("psn_cash_pay"))
    return df.drop([f"__back_{c}" for c in FOLDED])


def finish(df: pl.DataFrame) -> pl.DataFrame:
    """After the explanation (written on the merged stay's amounts): the settling line's own billed amounts
    back, its reason EMERGENCY_MERGED where a fund recovers (A-31), and what the merge did, in words (§1.10)."""
    if "merge_give_back" not in df.columns:
        return df
    if df["merged_setl_ids"].null_count() == df.height:  # no stay settled a merge in these lines
        return df.drop([f"own_{c}" for c in MERGED_AMOUNTS])
    y = fen_text
    m = pl.col("merged_setl_ids").is_not_null()
    parts = []
    for c, name in (("hifp_pay", "basic"), ("hifmi_pay", "critical illness"), ("maf_pay", "assistance"),
                    ("maf_tilt_pay", "tilt"), ("hosp_part_amt", "institution")):
        parts += [pl.lit(f", {name} owed "), y(pl.col(f"merged_{c}")), pl.lit(" − paid before "),
                  y(pl.col(f"merged_{c}") - pl.col(c)), pl.lit(" = "), y(pl.col(c))]
    text = when_text(m, "merged stay with emergency lines ", pl.col("merged_setl_ids"), " (POLICY §1.12, A-31): "
                     "adjudicated on their in-catalogue cost together (class A ", y(pl.col("cls_a_amt")), ", class B ",
                     y(pl.col("cls_b_amt")), "; total cost of the stay so far ", y(pl.col("merged_medfee_sumamt")), ")",
                     *parts)
    code = code_if(recovered(), "EMERGENCY_MERGED")
    df = df.with_columns(
        pl.when(code.is_null()).then(pl.col("reason_codes"))
        .when(pl.col("reason_codes") == "").then(code)
        .otherwise(pl.col("reason_codes") + pl.lit(",") + code).alias("reason_codes"),
        pl.when(m).then(pl.concat_str([pl.col("explanation"), text], separator="; ", ignore_nulls=True))
        .otherwise(pl.col("explanation")).alias("explanation"),
        *[pl.col(f"own_{c}").alias(c) for c in MERGED_AMOUNTS])
    return df.drop([f"own_{c}" for c in MERGED_AMOUNTS])


def recovered() -> pl.Expr:
    """A-31: a fund's difference is negative on the settling line (a recovery of what an emergency line was
    overpaid)."""
    return pl.col("merged_setl_ids").is_not_null() & pl.any_horizontal([pl.col(c) < 0 for c in FOLDED])
