"""The vectorized adjudicator: typed accepted lines in, adjudicated lines and accumulators out.

Pipeline (DESIGN.md "Order of funds"): enrich → class-B pre-self-pay and in-scope cost →
ledger rules (basic fund before caps) → annual cap of the basic fund → critical illness →
assistance → institution share → accounts → cash. Every stage is a frame → frame function;
every running total is one of the primitives of transforms/accumulate.py over person-year
partitions in line order (POLICY §1.2), starting from the state carried in from earlier months.

Reversals (POLICY §1.7): a line with orig_setl_id takes every amount of its original negated
and moves every accumulator back by what the original added; it is not recomputed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import polars as pl

from flows.policies import Policies
from transforms import merged_stays
from transforms.accounts import (
    AccountInputs,
    append_account_note,
    apply_accounts,
    empty_ledger,
    empty_state,
    period_of,
)
from transforms.accumulate import capped_payment
from transforms.employee import stages as employee_stages
from transforms.enrich import enrich
from transforms.explain import code_if, fen_text, join_codes, join_fragments, when_text
from transforms.frames import join_left
from transforms.params import attach, yuan_to_fen
from transforms.resident import outpatient as resident_outpatient
from transforms.resident import stages as resident_stages
from transforms.resident import xiangyang as xy_resident
from transforms.resident.inpatient import class_b_preselfpay
from transforms.shards import combine, family_groups, restrict, shard_of_persons

PERSON_YEAR = ["psn_no", "year"]

ALL_STAGES = [*resident_stages.BASIC, *resident_stages.LATER, *employee_stages.ALL, *xy_resident.ALL]

# Accumulators carried across months (name → the per-line column that adds to it).
ACCUMULATORS: dict[str, str] = {
    "hifp_paid": "hifp_pay",  # basic fund paid this year, against the annual cap (§3.7)
}
for _stage in ALL_STAGES:
    ACCUMULATORS.update(_stage.accumulators)


def keyed_family(name: str) -> tuple[str, str] | None:
    """A per-key accumulator family is declared as "prefix:{key_col}" (e.g.
    "chronic_limit_used:{dise_cert_code}"): one stored accumulator per value of the line's key
    column, named "prefix:<value>", carried in as `carried_<prefix>` (the value for the line's own
    key, 0 if none). None for a plain name."""
    m = re.fullmatch(r"(\w+):\{(\w+)\}", name)
    return (m[1], m[2]) if m else None


PLAIN_ACCUMULATORS = {n: c for n, c in ACCUMULATORS.items() if keyed_family(n) is None}
# prefix → (key column, per-line column that adds to it)
KEYED_ACCUMULATORS = {f[0]: (f[1], c) for n, c in ACCUMULATORS.items() if (f := keyed_family(n))}

# Money columns of an adjudicated row (DATA.md §4), all Int64 fen inside the engine.
MONEY_COLUMNS = [
    "medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "cls_a_amt", "cls_b_amt",
    "inscp_scp_amt", "preselfpay_amt", "offsite_preselfpay_amt", "act_pay_dedc",
    "hifp_pay", "pool_prop_selfpay", "hifp_cap_cut", "hifmi_pay", "maf_pay", "maf_tilt_pay",
    "hosp_part_amt", "fund_pay_sumamt", "psn_part_amt", "acct_pay", "acct_mulaid_pay", "psn_cash_pay",
]

ADJUDICATED_COLUMNS = [
    "setl_id", "psn_no", "month", "region", "insutype", "scheme", "ledger", "med_type", "mdtrt_id",
    "fixmedins_code", "hosp_lv", "in_county", "in_city", "in_province", "offsite_type_eff",
    "setl_time", "orig_setl_id", *MONEY_COLUMNS, "deposit_waived", "reason_codes", "explanation",
    "chronic_over_limit_amt", "burden_excluded_amt",  # ours (§3.4, A-21): null outside chronic/special_drug
    "acct_allowed", "emp_status", "benefit_block",  # ours (§4.3): employees' status and benefit period
    "identity_group",  # ours (§2): s1 / s2 / s3 / ordinary for Suizhou residents, else the scheme
    "oos_limit_bp",  # ours (§3.10): the out-of-scope limit the stay was judged by (basis points), null if none
    "merged_setl_ids",  # ours (§1.12, A-31): the emergency lines a settling stay line merged, comma-separated
]


@dataclass
class Adjudication:
    adjudicated: pl.DataFrame
    accumulators: pl.DataFrame  # psn_no, year, name, value: the state after these lines
    used: set = field(default_factory=set)  # (region, scheme, parameter, assumption) actually used
    # §4.2/§4.5 (transforms/accounts.py): every account movement, and each account's state after the period
    account_ledger: pl.DataFrame = field(default_factory=empty_ledger)
    account_balances: pl.DataFrame = field(default_factory=empty_state)

    @property
    def assumptions(self) -> list[str]:
        return sorted({a for (_, _, _, a) in self.used if a}, key=lambda a: int(a.split("-")[1]))


def empty_carried() -> pl.DataFrame:
    return pl.DataFrame(schema={"psn_no": pl.String, "year": pl.Int32, "name": pl.String, "value": pl.Int64})


def adjudicate(lines: pl.DataFrame, registers: dict[str, pl.DataFrame], policies: Policies,
               carried: pl.DataFrame | None = None, originals: pl.DataFrame | None = None,
               balances: pl.DataFrame | None = None, original_ledger: pl.DataFrame | None = None,
               period: tuple | None = None, earlier_stays: pl.DataFrame | None = None) -> Adjudication:
    """Adjudicate accepted lines (any number of months of one year or several years).

    carried: accumulators at the end of the month before the first line (psn_no, year, name, value).
    originals: adjudicated rows of earlier runs that reversals in `lines` may name.
    balances: personal-account state at the end of the previous month (psn_no, as_of, balc), any year;
    original_ledger: account_ledger rows of earlier runs naming the originals; period: (first, last day)
    whose month starts are credited, default the lines' months (transforms/accounts.py).
    earlier_stays: stored adjudicated rows of earlier months of the lines' stays (same psn_no and mdtrt_id as a
    13/21/22/24 line here; flows/store.py stay_history): the emergency lines a stay line of these lines merges
    (POLICY §1.12, transforms/merged_stays.py).
    """
    carried = carried if carried is not None else empty_carried()
    # §1.12: give-back rows for the emergency lines each settling stay line merges; they are reversals of those
    # lines (originals: stored rows here, or this batch's own, resolved by the in-batch pass below)
    lines, stored = merged_stays.expand(lines, registers, policies, earlier_stays)
    if stored is not None:
        originals = pl.concat([x for x in (originals, stored) if x is not None and x.height], how="diagonal_relaxed")
    acct = AccountInputs(balances=balances, original_ledger=original_ledger, period=period or period_of(lines))
    rev_ids = lines.filter(pl.col("orig_setl_id").is_not_null())["orig_setl_id"]
    in_batch = lines.filter(pl.col("setl_id").is_in(rev_ids.implode()))
    res = _adjudicate_once(lines, registers, policies, carried, originals, acct)
    if in_batch.height == 0:
        return res
    # Reversals of lines of this same batch: the original's result depends only on lines before it,
    # so iterate until the originals' results are stable (at most the depth of reversal chains). Only the
    # family groups of the persons concerned are adjudicated again (transforms/shards.py: a group's result
    # does not depend on anyone outside it); everyone else keeps the first pass.
    groups = family_groups(registers, engine_persons(lines, carried, acct.balances))
    mine = groups.filter(pl.col("group").is_in(
        groups.filter(pl.col("psn_no").is_in(in_batch["psn_no"].implode()))["group"].implode())).select("psn_no")
    sub = _restricted(mine, lines, registers, carried, acct)
    prev = res.adjudicated.filter(pl.col("setl_id").is_in(in_batch["setl_id"].implode()))
    again = res
    for _ in range(len(rev_ids) + 1):
        known = pl.concat([x for x in (originals, prev) if x is not None], how="diagonal_relaxed")
        again = _adjudicate_once(sub["lines"], sub["registers"], policies, sub["carried"], known, sub["acct"])
        got = again.adjudicated.filter(pl.col("setl_id").is_in(in_batch["setl_id"].implode()))
        if got.equals(prev):
            break
        prev = got
    return combine_adjudications([_without(res, mine), again], used=res.used | again.used)


def _restricted(persons: pl.DataFrame, lines: pl.DataFrame, registers: dict[str, pl.DataFrame],
                carried: pl.DataFrame, acct: AccountInputs) -> dict:
    """The engine's inputs for these persons only (whole family groups; transforms/shards.py)."""
    return {"lines": restrict(lines, persons), "registers": {k: restrict(v, persons) for k, v in registers.items()},
            "carried": restrict(carried, persons),
            "acct": AccountInputs(balances=restrict(acct.balances, persons),
                                  original_ledger=restrict(acct.original_ledger, persons), period=acct.period)}


def _without(res: Adjudication, persons: pl.DataFrame) -> Adjudication:
    """The result minus every row of these persons."""
    def drop(f: pl.DataFrame) -> pl.DataFrame:
        return f.filter(~pl.col("psn_no").is_in(persons["psn_no"].implode()))
    return Adjudication(adjudicated=drop(res.adjudicated), accumulators=drop(res.accumulators), used=res.used,
                        account_ledger=drop(res.account_ledger), account_balances=drop(res.account_balances))


def engine_persons(lines: pl.DataFrame, *frames: pl.DataFrame | None) -> pl.Series:
    """Every psn_no the engine's output can hold: the lines' and those of the carried state (accounts carry
    their balances even in months without lines), so that a split by family group loses no one."""
    return pl.concat([lines["psn_no"], *[f["psn_no"] for f in frames if f is not None and "psn_no" in f.columns]])


def combine_adjudications(parts: list[Adjudication], used: set | None = None) -> Adjudication:
    """Results over disjoint family groups as one result, in the order of a single run (shards.combine)."""
    return Adjudication(adjudicated=combine([p.adjudicated for p in parts]),
                        accumulators=combine([p.accumulators for p in parts]),
                        used=used if used is not None else set().union(*[p.used for p in parts]),
                        account_ledger=combine([p.account_ledger for p in parts]),
                        account_balances=combine([p.account_balances for p in parts]))


def adjudicate_shards(lines: pl.DataFrame, registers: dict[str, pl.DataFrame], policies: Policies, shards: int,
                      carried: pl.DataFrame | None = None, originals: pl.DataFrame | None = None,
                      balances: pl.DataFrame | None = None, original_ledger: pl.DataFrame | None = None,
                      period: tuple | None = None, earlier_stays: pl.DataFrame | None = None) -> Adjudication:
    """`adjudicate` shard by shard (persons split by family group): the same result as one call."""
    acct = AccountInputs(balances=balances, original_ledger=original_ledger, period=period or period_of(lines))
    carried = carried if carried is not None else empty_carried()
    assign = shard_of_persons(family_groups(registers, engine_persons(lines, carried, balances)), shards)
    parts = []
    for s in range(shards):
        sub = _restricted(assign.filter(pl.col("shard") == s).select("psn_no"), lines, registers, carried, acct)
        parts.append(adjudicate(sub["lines"], sub["registers"], policies, carried=sub["carried"], originals=originals,
                                balances=sub["acct"].balances, original_ledger=sub["acct"].original_ledger,
                                period=acct.period, earlier_stays=earlier_stays))
    return combine_adjudications(parts)


def _adjudicate_once(lines: pl.DataFrame, registers: dict[str, pl.DataFrame], policies: Policies,
                     carried: pl.DataFrame, originals: pl.DataFrame | None,
                     acct: AccountInputs | None = None) -> Adjudication:
    used: set = set()
    # (psn, time, id) order (§1.2); a give-back row sorts just before its settling line (§1.12)
    order = ["__sort_id", "__sort_sub", "setl_id"] if "__sort_id" in lines.columns else ["setl_id"]
    df = enrich(lines, registers, policies, used).sort(["psn_no", "setl_time", *order]).with_row_index("__line")
    df = df.with_columns(pl.col("setl_time").dt.strftime("%Y-%m").alias("month"))
    df = _reversal_years(df, originals)
    df = _join_carried(df, carried)
    df = _join_originals(df, originals)

    parts = []
    for (region, scheme), part in df.group_by(["region", "scheme"], maintain_order=True):
        if region == "suizhou" and scheme == "resident":
            parts.append(_suizhou_resident(part, policies, used))
        elif region == "xiangyang" and scheme == "employee":
            parts.append(_xiangyang_employee(part, policies, used, registers))
        elif region == "xiangyang" and scheme == "resident":
            parts.append(_xiangyang_resident(part, policies, used))
        else:
            parts.append(_pending(part))
    out = pl.concat(parts, how="diagonal_relaxed") if parts else _pending(df)
    out = out.sort("__line")  # back in (person, time) order: one integer key, not three string ones
    out = _totals(_apply_reversals(_zero_missing(out)))
    acc = _accumulators_after(out, carried)  # the give-back rows of merged stays move accumulators too (§1.12)
    if "merge_give_back" in out.columns:
        out = merged_stays.fold(out)
    out, accounts = apply_accounts(out, registers, policies, acct, used)  # own account, family accounts, cash
    out = merged_stays.finish(append_account_note(_explain(out)))
    adjudicated = out.select([c for c in ADJUDICATED_COLUMNS if c in out.columns])
    check_invariants(adjudicated)
    return Adjudication(adjudicated=adjudicated, accumulators=acc, used=used,
                        account_ledger=accounts.ledger, account_balances=accounts.balances)


def _join_carried(df: pl.DataFrame, carried: pl.DataFrame) -> pl.DataFrame:
    plain = list(PLAIN_ACCUMULATORS)
    wide = carried.filter(pl.col("name").is_in(plain)).pivot(
        on="name", index=PERSON_YEAR, values="value", aggregate_function="last")
    for name in plain:
        if name not in wide.columns:
            wide = wide.with_columns(pl.lit(0, pl.Int64).alias(name))
    wide = wide.select(PERSON_YEAR + [pl.col(n).cast(pl.Int64).fill_null(0).alias(f"carried_{n}") for n in plain])
    df = join_left(df, wide.with_columns(pl.col("year").cast(pl.Int32)), PERSON_YEAR)
    df = df.with_columns([pl.col(f"carried_{n}").fill_null(0) for n in plain])
    for prefix, (key, _) in KEYED_ACCUMULATORS.items():  # one value per line: the one of its own key
        mine = (carried.filter(pl.col("name").str.starts_with(f"{prefix}:"))
                .select("psn_no", pl.col("year").cast(pl.Int32), pl.col("name").str.slice(len(prefix) + 1).alias(key),
                        pl.col("value").cast(pl.Int64).alias(f"carried_{prefix}"))
                .unique(subset=[*PERSON_YEAR, key], keep="last", maintain_order=True))
        df = join_left(df, mine, [*PERSON_YEAR, key])
        df = df.with_columns(pl.col(f"carried_{prefix}").fill_null(0))
    return df


# Amounts a reversal takes from its original, negated (the input amounts are negated already).
REVERSED_COLUMNS = [c for c in MONEY_COLUMNS if c not in
                    ("medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "cls_a_amt", "cls_b_amt")]


def _reversal_years(df: pl.DataFrame, originals: pl.DataFrame | None) -> pl.DataFrame:
    """POLICY §1.7: a reversal gives back to the accumulators of its original's year, whatever month it arrives
    in — a January reversal of a December line lowers December's year and leaves the new year untouched. The
    accumulator year of a line (`year`, the partition of every running total and of the carried state) is
    therefore the original's settlement year on a reversal: from the stored original, or from an original of
    the same batch; the reversal's own year when neither is known (validation requires one)."""
    known = [df.select(pl.col("setl_id").alias("orig_setl_id"),
                       pl.col("setl_time").dt.year().cast(pl.Int32).alias("__orig_year"))]
    if originals is not None and originals.height and "setl_time" in originals.columns:
        known.append(originals.select(pl.col("setl_id").alias("orig_setl_id"),
                                      pl.col("setl_time").cast(pl.Datetime("us")).dt.year().cast(pl.Int32)
                                      .alias("__orig_year")))
    years = pl.concat(known).unique("orig_setl_id", keep="first", maintain_order=True)
    df = join_left(df, years, "orig_setl_id")
    return df.with_columns(
        pl.when(pl.col("orig_setl_id").is_not_null()).then(pl.coalesce("__orig_year", "year"))
        .otherwise(pl.col("year")).alias("year")).drop("__orig_year")


def _join_originals(df: pl.DataFrame, originals: pl.DataFrame | None) -> pl.DataFrame:
    df = df.with_columns(pl.col("orig_setl_id").is_not_null().alias("is_reversal"))
    if originals is None or originals.height == 0:
        originals = pl.DataFrame(schema={"setl_id": pl.String, **{c: pl.Int64 for c in REVERSED_COLUMNS}})
    # The original's reason codes tell later stages what it was eligible for on its own date (§3.9 MAF_CLASS_n).
    codes = pl.col("reason_codes") if "reason_codes" in originals.columns else pl.lit(None, pl.String)
    orig = originals.select(pl.col("setl_id").alias("orig_setl_id"),
                            *[(-pl.col(c).cast(pl.Int64)).alias(f"rev_{c}") for c in REVERSED_COLUMNS],
                            codes.alias("rev_reason_codes"))
    return join_left(df, orig.unique("orig_setl_id", keep="last", maintain_order=True), "orig_setl_id")


def _apply_reversals(df: pl.DataFrame) -> pl.DataFrame:
    """POLICY §1.7: a reversal pays back exactly what its original was paid, fund by fund."""
    return df.with_columns([
        pl.when(pl.col("is_reversal")).then(pl.col(f"rev_{c}").fill_null(0)).otherwise(pl.col(c)).alias(c)
        for c in REVERSED_COLUMNS if c not in ("fund_pay_sumamt", "psn_part_amt", "psn_cash_pay")
    ])


def _identity_group(part: pl.DataFrame, policies: Policies, used: set, region: str, scheme: str) -> pl.Series:
    """POLICY §2 block of the person on the line's date (the most protected block wins)."""
    from transforms.resident.inpatient import in_list_on_date
    group = pl.Series("g", ["ordinary"] * part.height, dtype=pl.String)
    for block in ("s3", "s2", "s1"):
        # informational: a missing block list does not stop the run (need=False)
        hit = in_list_on_date(part, policies, region, scheme, f"identities.{block}", used, "identities",
                              need=pl.lit(False))
        group = pl.select(pl.when(hit).then(pl.lit(block)).otherwise(group)).to_series()
    return group


def _suizhou_resident(part: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    region, scheme = "suizhou", "resident"
    part = part.with_columns(_identity_group(part, policies, used, region, scheme).alias("identity_group"))
    part = class_b_preselfpay(part, policies, used, region, scheme, "inpatient")
    part = part.with_columns(pl.lit(0, pl.Int64).alias("hifp_raw"), pl.lit(False).alias("handled"),
                             pl.lit(0, pl.Int64).alias("pool_prop_selfpay"))
    for stage in resident_stages.BASIC:
        part = stage.run(part, policies, used)
    part = part.with_columns((~pl.col("handled")).alias("rule_pending"))
    part = _annual_cap(part, policies, used, region, scheme)
    part = resident_outpatient.after_annual_cap(part, policies, used)  # §3.2: limits count what was paid
    for stage in resident_stages.LATER:
        part = stage.run(part, policies, used)
    return part


def _xiangyang_employee(part: pl.DataFrame, policies: Policies, used: set,
                        registers: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """§4: status and benefit period, outpatient pooling, stays, chronic; the employee annual cap (A-17) over
    annual_cap.hifp_ledgers (transforms/employee/stages.py)."""
    part = employee_stages.prepare(part, registers, policies, used)
    return _stages(part, policies, used, employee_stages.BASIC, [employee_stages.CAP, *employee_stages.LATER])


def _stages(part: pl.DataFrame, policies: Policies, used: set, basic: list, after: list) -> pl.DataFrame:
    """The basic-fund stages, then the lines none of them handled are RULE_PENDING, then the stages after them
    (annual cap, later funds)."""
    for stage in basic:
        part = stage.run(part, policies, used)
    part = part.with_columns((~pl.col("handled")).alias("rule_pending"))
    for stage in after:
        part = stage.run(part, policies, used)
    return part


def _xiangyang_resident(part: pl.DataFrame, policies: Policies, used: set) -> pl.DataFrame:
    """§4.7: lines needing a missing parameter stop the run; general outpatient, chronic; the annual cap over
    annual_cap.hifp_ledgers (transforms/resident/xiangyang.py)."""
    part = xy_resident.prepare(part, policies, used)
    return _stages(part, policies, used, xy_resident.BASIC, [xy_resident.CAP, *xy_resident.LATER])


def _annual_cap(part: pl.DataFrame, policies: Policies, used: set, region: str, scheme: str) -> pl.DataFrame:
    """§3.7: the basic fund's yearly maximum over every ledger, in line order."""
    part = attach(part, policies, region, scheme, "annual_cap.hifp", "hifp_cap", convert=yuan_to_fen,
                  need=pl.col("hifp_raw") != 0, used=used)
    part = part.with_columns(
        pl.col("hifp_cap").fill_null(0),
        pl.when(pl.col("is_reversal")).then(pl.col("rev_hifp_pay").fill_null(0)).otherwise(pl.col("hifp_raw"))
        .alias("hifp_raw"),
    )
    part = part.with_columns(
        capped_payment(pl.col("hifp_raw"), pl.col("hifp_cap"), pl.col("carried_hifp_paid"), PERSON_YEAR)
        .alias("hifp_pay")
    )
    return part.with_columns(
        (pl.col("hifp_raw") - pl.col("hifp_pay")).alias("hifp_cap_cut"),
        (pl.col("carried_hifp_paid") + pl.col("hifp_pay").cum_sum().over(PERSON_YEAR) - pl.col("hifp_pay"))
        .alias("hifp_paid_before"),
    )


def _pending(part: pl.DataFrame) -> pl.DataFrame:
    """Lines of a region/scheme whose rules are not implemented yet: no fund is computed, and the
    line says so (RULE_PENDING). Never a guessed payment."""
    return part.with_columns(
        pl.lit(0, pl.Int64).alias("preselfpay_amt"),
        (pl.col("cls_a_amt") + pl.col("cls_b_amt")).alias("inscp_scp_amt"),
        pl.lit(True).alias("rule_pending"),
    )


def _zero_missing(df: pl.DataFrame) -> pl.DataFrame:
    group = pl.col("identity_group") if "identity_group" in df.columns else pl.lit(None, pl.String)
    df = df.with_columns(pl.coalesce(group, pl.col("scheme"), pl.lit("unknown")).alias("identity_group"))
    zero_if_missing = ["offsite_preselfpay_amt", "act_pay_dedc", "hifp_pay", "pool_prop_selfpay", "hifp_cap_cut",
                       "hifmi_pay", "maf_pay", "maf_tilt_pay", "hosp_part_amt", "acct_pay", "acct_mulaid_pay",
                       *ACCUMULATORS.values()]
    df = df.with_columns([
        (pl.col(c).fill_null(0) if c in df.columns else pl.lit(0, pl.Int64)).cast(pl.Int64).alias(c)
        for c in dict.fromkeys(zero_if_missing)
    ])
    defaults: dict[str, pl.DataType] = {"hifp_raw": pl.Int64, "hifp_cap": pl.Int64, "hifp_paid_before": pl.Int64}
    for stage in ALL_STAGES:
        defaults.update(stage.defaults)
    df = df.with_columns([pl.lit(None, t).alias(c) for c, t in defaults.items() if c not in df.columns])
    for flag in ("rule_pending", "handled", *[c for c, t in defaults.items() if t == pl.Boolean]):
        df = df.with_columns((pl.col(flag).fill_null(False) if flag in df.columns else pl.lit(False)).alias(flag))
    # §4.3: the personal account may pay, except in an employee's waiting/enrolment-month/termination periods
    allowed = pl.col("acct_allowed").fill_null(True) if "acct_allowed" in df.columns else pl.lit(True)
    df = df.with_columns(allowed.alias("acct_allowed"))
    return df


def _totals(df: pl.DataFrame) -> pl.DataFrame:
    df = df.with_columns(
        (pl.col("hifp_pay") + pl.col("hifmi_pay") + pl.col("maf_pay") + pl.col("maf_tilt_pay")).alias("fund_pay_sumamt")
    )
    df = df.with_columns((pl.col("medfee_sumamt") - pl.col("fund_pay_sumamt") - pl.col("hosp_part_amt")).alias("psn_part_amt"))
    df = df.with_columns((pl.col("psn_part_amt") - pl.col("acct_pay") - pl.col("acct_mulaid_pay")).alias("psn_cash_pay"))
    # §3.9 pay-after-treatment: informational flag on stays of rural low-income persons in their county.
    # (set by the assistance stage, transforms/resident/assistance.py; false where no stage set it)
    waived = pl.col("deposit_waived").fill_null(False) if "deposit_waived" in df.columns else pl.lit(False)
    return df.with_columns(waived.alias("deposit_waived"))


def _scheme_fragments(basic: list, later: list) -> tuple[list[pl.Expr], list[pl.Expr]]:
    """Reason-code and explanation fragments of one scheme's lines (its stages, in pipeline order, POLICY
    §1.10), around the fragments every line has."""
    y = fen_text
    annual_capped = pl.col("hifp_paid_before").is_not_null()  # lines the basic fund's annual cap applied to
    codes = [
        code_if(pl.col("is_reversal"), "REVERSAL"),
        code_if(pl.col("rule_pending"), "RULE_PENDING"),
        *[e for stage in basic for e in stage.reasons()],
        code_if((pl.col("hifp_cap_cut") > 0) & (pl.col("hifp_pay") == 0) & annual_capped, "CAP_REACHED"),
        code_if((pl.col("hifp_cap_cut") > 0) & (pl.col("hifp_pay") > 0) & annual_capped, "CAP_PARTLY"),
        *[e for stage in later for e in stage.reasons()],
    ]
    where = (
        pl.when(pl.col("in_city")).then(pl.lit("in city"))
        .otherwise(pl.concat_str([pl.lit("out of city ("), pl.col("offsite_type_eff").fill_null(""), pl.lit(")")]))
    )
    cap_left = pl.col("hifp_cap") - pl.col("hifp_paid_before")
    text = [
        when_text(pl.col("is_reversal"), "reversal of ", pl.col("orig_setl_id"),
                  ": every amount of the original negated, its accumulators given back to ",
                  pl.col("year").cast(pl.String), "'s (POLICY §1.7)"),
        pl.concat_str([pl.col("ledger"), pl.lit(", level "), pl.col("hosp_lv").fill_null("?"), pl.lit(" "), where]),
        when_text(pl.col("rule_pending"), "rules for this ledger not implemented yet: funds not computed"),
        pl.concat_str([pl.lit("in scope "), y(pl.col("inscp_scp_amt")), pl.lit(" = class A "), y(pl.col("cls_a_amt")),
                       pl.lit(" + class B "), y(pl.col("cls_b_amt")), pl.lit(" − class-B pre-self-pay "),
                       y(pl.col("preselfpay_amt"))]),
        *[e for stage in basic for e in stage.explain()],
        when_text(pl.col("hifp_paid_before").is_not_null() & ~pl.col("rule_pending"),
                  "annual cap ", y(pl.col("hifp_cap")), ": left before ", y(cap_left), ", after ",
                  y(cap_left - pl.col("hifp_pay"))),
        when_text(pl.col("hifp_cap_cut") > 0, "cap cut ", y(pl.col("hifp_cap_cut"))),
        *[e for stage in later for e in stage.explain()],
        pl.concat_str([pl.lit("funds pay "), y(pl.col("fund_pay_sumamt")), pl.lit(" (basic "), y(pl.col("hifp_pay")),
                       pl.lit(", critical illness "), y(pl.col("hifmi_pay")), pl.lit(", assistance "),
                       y(pl.col("maf_pay")), pl.lit(", tilt "), y(pl.col("maf_tilt_pay")), pl.lit("); person pays "),
                       y(pl.col("psn_part_amt"))]),
    ]
    return codes, text


def _explain(df: pl.DataFrame) -> pl.DataFrame:
    """reason_codes and explanation of every line. Each scheme's stages explain only its own lines (§4:
    Xiangyang employees; §4.7: Xiangyang residents; everything else: the Suizhou resident stages): the text is
    built per scheme on the few columns it reads (not masked fragment by fragment over the whole wide frame)
    and set back in line order."""
    emp = ((pl.col("region") == "xiangyang") & (pl.col("scheme") == "employee")).fill_null(False)
    xyr = ((pl.col("region") == "xiangyang") & (pl.col("scheme") == "resident")).fill_null(False)
    schemes = [
        (~emp & ~xyr, _scheme_fragments(resident_stages.BASIC, resident_stages.LATER)),
        (emp, _scheme_fragments(employee_stages.BASIC, [employee_stages.CAP, *employee_stages.LATER])),
        (xyr, _scheme_fragments(xy_resident.BASIC, [xy_resident.CAP, *xy_resident.LATER])),
    ]
    exprs = [emp, xyr, *[e for _, (codes, text) in schemes for e in (*codes, *text)]]
    needed = sorted({c for e in exprs for c in e.meta.root_names()})
    narrow = df.select(needed).with_row_index("__row")
    pieces = [narrow.filter(mask).select("__row", join_codes(codes).alias("reason_codes"),
                                         join_fragments(text).alias("explanation"))
              for mask, (codes, text) in schemes]
    done = pl.concat(pieces).sort("__row")
    return df.with_columns(done["reason_codes"], done["explanation"])


def _accumulators_after(df: pl.DataFrame, carried: pl.DataFrame) -> pl.DataFrame:
    """State after the lines, for every person-year present (carried + what the lines added)."""
    sums = df.group_by(PERSON_YEAR).agg([pl.col(col).sum().alias(name) for name, col in PLAIN_ACCUMULATORS.items()])
    long = sums.unpivot(index=PERSON_YEAR, variable_name="name", value_name="value")
    for prefix, (key, col) in KEYED_ACCUMULATORS.items():  # only the keys the lines moved
        keyed = (df.filter(pl.col(key).is_not_null() & (pl.col(col) != 0))
                 .group_by([*PERSON_YEAR, key]).agg(pl.col(col).sum().alias("value"))
                 .select(*PERSON_YEAR, (pl.lit(f"{prefix}:") + pl.col(key)).alias("name"), "value"))
        long = pl.concat([long, keyed], how="vertical_relaxed")
    prev = carried.select(PERSON_YEAR + ["name", pl.col("value").alias("prev")]).with_columns(pl.col("year").cast(pl.Int32))
    long = long.join(prev, on=PERSON_YEAR + ["name"], how="left").with_columns(
        (pl.col("value") + pl.col("prev").fill_null(0)).cast(pl.Int64).alias("value")
    ).drop("prev")
    return long.select("psn_no", pl.col("year").cast(pl.Int32), "name", "value").sort(PERSON_YEAR + ["name"])


def moved_accumulators(after: pl.DataFrame, carried: pl.DataFrame) -> pl.DataFrame:
    """The rows of `after` (Adjudication.accumulators) whose value differs from the carried-in one (absent = 0):
    what the month changed. The store keeps only these — the state at any month end is each accumulator's
    latest stored row, absent = 0 (flows/store.py carried_accumulators) — instead of every accumulator of every
    person present (about twelve rows per person, most of them zero or unchanged)."""
    prev = carried.select(*PERSON_YEAR, "name", pl.col("value").alias("__prev")).with_columns(
        pl.col("year").cast(pl.Int32))
    return (after.join(prev, on=[*PERSON_YEAR, "name"], how="left", maintain_order="left")
            .filter(pl.col("value") != pl.col("__prev").fill_null(0)).drop("__prev"))


class InvariantViolation(AssertionError):
    pass


def check_invariants(adj: pl.DataFrame) -> None:
    """DATA.md §4: the run fails rather than write a row that breaks one."""
    # negative amounts: reversals, and a stay line's recoveries of what its merged emergency lines were paid
    # (§1.12, A-31), whose hifp_pay bound is the merged stay's in-scope cost (its stored inscp_scp_amt)
    merged = pl.col("merged_setl_ids").is_not_null() if "merged_setl_ids" in adj.columns else pl.lit(False)
    rev = pl.col("orig_setl_id").is_not_null() | merged
    neg = pl.any_horizontal([pl.col(c) < 0 for c in MONEY_COLUMNS])
    bad = adj.filter(
        (~rev & neg)
        | (pl.col("fund_pay_sumamt") + pl.col("hosp_part_amt") + pl.col("acct_pay") + pl.col("acct_mulaid_pay")
           + pl.col("psn_cash_pay") != pl.col("medfee_sumamt"))
        | (pl.col("orig_setl_id").is_null() & (pl.col("hifp_pay") > pl.col("inscp_scp_amt")))
    )
    if bad.height:
        r = bad.row(0, named=True)
        raise InvariantViolation(f"{bad.height} adjudicated rows break an invariant, first setl_id={r['setl_id']}")
