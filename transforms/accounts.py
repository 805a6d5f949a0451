"""Personal accounts (个人账户) and family mutual aid (个人账户家庭共济): POLICY §4.2, §4.5; A-13, A-14, A-24.

The last payer before cash (DESIGN "Order of funds"): after every fund, the person's own share
`psn_part_amt` is paid by the person's own account up to its balance (`acct_pay`); for a settlement
at a designated institution or pharmacy in Xiangyang, what is still short is drawn from the
accounts of the persons who authorised this user through a binding valid on the settlement date,
in binding-date order (A-13), each up to its own balance (`acct_mulaid_pay`); cash pays the rest.
An account never goes below zero, and mutual-aid money never cascades: a user's shortfall draws
only on its authorisers' *own* balances (an authoriser's own shortfall is never passed on).

**Events and order.** An account moves by monthly credits (§4.2, on the 1st of the month before
that day's settlements, A-14; none for a month that starts inside a termination, suspension or
arrears period, A-24), by payments for settlements, and by refunds when a settlement is reversed
(§1.7: a reversal gives back to each account exactly what its original took from it, in the month
the reversal arrives). Events are applied in order of time, then settlement id, across every
account linked by mutual aid (§1.2): key `(ts, ord, setl_id, rank)` with `ord` 0 for a credit and
1 for a settlement, `rank` 0 for the user's own account and k for the k-th authoriser.

**Vectorized where exact (DESIGN primitive 6).** Within one account the balance is the Lindley
walk of `transforms.accumulate.account_walk`. The accounts are linked by a dependency graph built
from this batch's mutual-aid requests: user U → authoriser A (A's walk needs U's shortfalls) and,
for a user with several authorisers, A_k → A_{k+1} (the (k+1)-th draws what the k-th could not
pay). Where that graph is acyclic — a user's own account receives nothing from its authorisers,
so a chain A → B → C is acyclic — accounts are walked level by level (level = longest path from a
source): one `account_walk` over every account of a level, each request's amount known from the
levels before. A family group (weakly connected component) with a cycle — a mutual pair A ↔ B, a
loop, authorisers drawn in both orders — or with a reversal of a settlement of this same batch is
walked event by event in Python (`_walk_groups`), only its own events. Both give the same result
as the plain walk over everything (`transforms/reference/accounts.py`; property-tested).

**State.** A balance is carried as `(psn_no, as_of, balc)`: the balance at the end of day `as_of`
(A-14). A run starts each person from the carried state (`AccountInputs.balances`, the store's
end of the previous month, whatever the year — balances never restart), else from the opening
balance of the `account_balances` register (the latest row dated before the period, else the
earliest), else from 0 at the end of the day before the period; credits land for every month
start after `as_of` up to the end of the period. The end state has `as_of = max(as_of, period
end)`.

**Scope.** Accounts are those of persons insured in Xiangyang (`persons.insuplc_admdvs` 4206xx):
the Suizhou employee scheme is not modelled (POLICY §3.1), so lines of other regions never touch
an account. A line whose funds are not computed (`rule_pending`) or on which the account may not
be used (`acct_allowed` false: a flexible worker's waiting months, the employer-enrolment month,
after termination, §4.3; a missing column means true) is paid by neither the own nor any family
account. Mutual aid pays only on the ledgers listed for the user's scheme
(`family_aid.uses_employee_ledgers` / `uses_resident_ledgers`) and only for users insured in
Xiangyang. The ledger kind `contribution_payment` (paying a family member's resident contribution
from an account) is announced but not a current rule (§4.5): never produced.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import polars as pl

from flows.policies import Policies
from transforms.accumulate import account_walk_struct
from transforms.explain import fen_text
from transforms.frames import join_left
from transforms.money import rate_to_bp
from transforms.params import yuan_to_fen

REGION, SCHEME = "xiangyang", "employee"
XIANGYANG_CITY = "4206"

LEDGER_SCHEMA: dict[str, pl.DataType] = {
    "psn_no": pl.String, "ts": pl.Datetime("us"), "kind": pl.String, "amount": pl.Int64, "balc_after": pl.Int64,
    "setl_id": pl.String, "user_psn_no": pl.String, "orig_setl_id": pl.String,
}
STATE_SCHEMA: dict[str, pl.DataType] = {"psn_no": pl.String, "as_of": pl.Date, "balc": pl.Int64}
CREDIT_SCHEMA: dict[str, pl.DataType] = {"psn_no": pl.String, "ts": pl.Datetime("us"), "amount": pl.Int64,
                                         "credit_rule": pl.String}
KINDS = ("credit", "own_payment", "mulaid_payment_out", "contribution_payment")

# internal event frame: one row per account movement (requested), in walk order (ACCT, *ORDER)
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "acct": pl.String, "ts": pl.Datetime("us"), "ord": pl.Int8, "setl_id": pl.String, "rank": pl.Int32,
    "kind": pl.String, "credit": pl.Int64, "debit": pl.Int64, "user_psn_no": pl.String, "orig_setl_id": pl.String,
}
ORDER = ["ts", "ord", "setl_id", "rank"]


class AccountDataError(ValueError):
    """A register row the account rules need is incomplete (e.g. no contribution base for a rate credit)."""


@dataclass
class AccountInputs:
    """What a run carries in: balances at the end of the previous month (psn_no, as_of, balc; None = only
    the register's opening balances), the ledger rows of earlier runs that name the settlements this
    batch reverses (for the per-account refund), and the period whose month starts are credited
    (None: the months of the lines)."""

    balances: pl.DataFrame | None = None
    original_ledger: pl.DataFrame | None = None
    period: tuple[dt.date, dt.date] | None = None


@dataclass
class AccountResult:
    ledger: pl.DataFrame  # LEDGER_SCHEMA, every movement with the balance after it
    balances: pl.DataFrame  # STATE_SCHEMA, the state at the end of the period
    walked_accounts: int = 0  # accounts of family groups walked event by event
    walked_events: int = 0
    levels: int = 0  # vectorized levels used


def empty_ledger() -> pl.DataFrame:
    return pl.DataFrame(schema=LEDGER_SCHEMA)


def empty_state() -> pl.DataFrame:
    return pl.DataFrame(schema=STATE_SCHEMA)


def period_of(lines: pl.DataFrame) -> tuple[dt.date, dt.date] | None:
    """First and last day of the months the lines fall in (None without lines)."""
    if lines.height == 0:
        return None
    lo, hi = lines["setl_time"].min(), lines["setl_time"].max()
    return lo.date().replace(day=1), _month_end(hi.date())


def _month_end(d: dt.date) -> dt.date:
    nxt = (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return nxt - dt.timedelta(days=1)


def _register(registers: dict[str, pl.DataFrame], name: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    frame = registers.get(name)
    if frame is None:
        return pl.DataFrame(schema=schema)
    return frame.select([pl.col(c).cast(t) if c in frame.columns else pl.lit(None, t).alias(c) for c, t in schema.items()])


EMPLOYMENT_SCHEMA: dict[str, pl.DataType] = {
    "psn_no": pl.String, "psn_type": pl.String, "flexible": pl.Boolean, "contrib_mode": pl.String,
    "contrib_base": pl.Int64, "retire_kind": pl.String, "benefit": pl.String, "begndate": pl.Date, "enddate": pl.Date,
}
BINDING_SCHEMA: dict[str, pl.DataType] = {"authoriser_psn_no": pl.String, "user_psn_no": pl.String,
                                          "relation": pl.String, "begndate": pl.Date, "enddate": pl.Date}
BALANCE_SCHEMA: dict[str, pl.DataType] = {"psn_no": pl.String, "as_of": pl.Date, "balc": pl.Int64}
PERSON_COLS: dict[str, pl.DataType] = {"psn_no": pl.String, "brdy": pl.Date, "insuplc_admdvs": pl.String}


def xiangyang_persons(registers: dict[str, pl.DataFrame]) -> pl.DataFrame:
    p = _register(registers, "persons", PERSON_COLS)
    return p.filter(pl.col("insuplc_admdvs").str.starts_with(XIANGYANG_CITY)).select("psn_no", "brdy")


# --------------------------------------------------------------------------- state


def start_state(registers: dict[str, pl.DataFrame], balances: pl.DataFrame | None, period_start: dt.date,
                policies: Policies, used: set | None = None) -> pl.DataFrame:
    """Each account's state before the period: carried balances, else the register's opening balance
    (the latest row dated before the period, else the earliest one), Xiangyang persons only."""
    carried = (balances.select([pl.col(c).cast(t) for c, t in STATE_SCHEMA.items()])
               if balances is not None else empty_state())
    carried = carried.sort("psn_no", "as_of").unique("psn_no", keep="last", maintain_order=True)
    xy = xiangyang_persons(registers).select("psn_no")
    openings = (_register(registers, "account_balances", BALANCE_SCHEMA)
                .join(xy, on="psn_no", how="semi").join(carried, on="psn_no", how="anti").sort("psn_no", "as_of"))
    if carried.height or openings.height:
        rule = policies.at(REGION, SCHEME, "account.opening_balance_as_of", period_start)
        if rule.value != "end_of_day":
            raise NotImplementedError(f"account.opening_balance_as_of = {rule.value!r}: only end_of_day is implemented")
        if used is not None:
            used.add((REGION, SCHEME, "account.opening_balance_as_of", rule.assumption))
    before = openings.filter(pl.col("as_of") < period_start).unique("psn_no", keep="last", maintain_order=True)
    after = (openings.filter(pl.col("as_of") >= period_start).unique("psn_no", keep="first", maintain_order=True)
             .join(before, on="psn_no", how="anti"))
    return pl.concat([carried, before, after]).select(list(STATE_SCHEMA)).sort("psn_no")


# --------------------------------------------------------------------------- credits (§4.2)


def credit_value(v: Any) -> tuple[int | None, int | None]:
    """A credit parameter value: (rate in basis points of the own base, None) or (None, fixed fen)."""
    if isinstance(v, str) and v.strip().endswith("%"):
        return rate_to_bp(v), None
    return None, yuan_to_fen(v)


CREDIT_RULES = (
    "credit_in_service_under_45", "credit_in_service_from_45", "credit_in_service_pooling_only",
    "credit_retired_by_reform", "credit_retired_normal", "credit_retired_backpay_pooling_only",
    "credit_retired_backpay_mixed", "credit_retired_contributing_combined", "credit_retired_contributing_pooling_only",
)


def credit_day(policies: Policies, on: dt.date, used: set | None = None) -> int:
    dv = policies.at(REGION, SCHEME, "account.credit_day_of_month", on)
    if used is not None:
        used.add((REGION, SCHEME, "account.credit_day_of_month", dv.assumption))
    day = int(dv.value)
    if not 1 <= day <= 28:
        raise NotImplementedError(f"account.credit_day_of_month = {day}: only days 1–28 are implemented")
    return day


def period_on_day(days: pl.DataFrame, emp: pl.DataFrame) -> pl.DataFrame:
    """(psn_no, day) × the employment period valid on the day (PERIOD_TIES when several), inner."""
    many = emp.group_by("psn_no").len().filter(pl.col("len") > 1).select("psn_no")
    valid = (pl.col("begndate") <= pl.col("day")) & (pl.col("enddate").is_null() | (pl.col("day") <= pl.col("enddate")))
    one = days.join(many, on="psn_no", how="anti").join(emp, on="psn_no", how="inner").filter(valid)
    several = (days.join(many, on="psn_no", how="semi").join(emp, on="psn_no", how="inner").filter(valid)
               .with_columns(*PERIOD_TIES)
               .sort(["psn_no", "day", "begndate", *PERIOD_TIE_NAMES], descending=[False, False, True, *PERIOD_TIE_DESC],
                     nulls_last=True)
               .unique(["psn_no", "day"], keep="first", maintain_order=True).drop(PERIOD_TIE_NAMES[:3]))
    return pl.concat([one, several.select(one.columns)])


# Several employment periods valid on a credit day: the one that began last; equal begin dates: the most
# favourable (§1.6) as transforms/employee/status.py picks it — benefit normal, retired before in service, not
# flexible, benefit name — then, for a register that still ties, retire_kind, contrib_mode, the larger base.
PERIOD_TIES = [(pl.col("benefit") != "normal").alias("__k1"), (pl.col("psn_type") != "12").alias("__k2"),
               pl.col("flexible").fill_null(False).alias("__k3")]
PERIOD_TIE_NAMES = ["__k1", "__k2", "__k3", "benefit", "retire_kind", "contrib_mode", "contrib_base"]
PERIOD_TIE_DESC = [False, False, False, False, False, False, True]


def monthly_credits(registers: dict[str, pl.DataFrame], policies: Policies, state: pl.DataFrame,
                    period: tuple[dt.date, dt.date], used: set | None = None) -> pl.DataFrame:
    """§4.2 credits (psn_no, ts, amount > 0, credit_rule) for every credit day after each person's
    state `as_of` (or the day before the period) up to the period end, from the employment period
    valid on that day (the latest-beginning one if several)."""
    start, end = period
    persons = xiangyang_persons(registers)
    emp = _register(registers, "employment", EMPLOYMENT_SCHEMA).join(persons, on="psn_no", how="semi")
    if emp.height == 0:
        return pl.DataFrame(schema=CREDIT_SCHEMA)
    day = credit_day(policies, end, used)
    who = (emp.select("psn_no").unique().join(state.select("psn_no", "as_of"), on="psn_no", how="left")
           .with_columns(pl.col("as_of").fill_null(start - dt.timedelta(days=1)).alias("after")))
    first = pl.col("after").dt.truncate("1mo").dt.offset_by(f"{day - 1}d")
    first = pl.when(pl.col("after").dt.day() >= day).then(first.dt.offset_by("1mo")).otherwise(first)
    days = (who.with_columns(first.alias("first")).filter(pl.col("first") <= end)
            .with_columns(pl.date_ranges(pl.col("first"), pl.lit(end), "1mo").alias("day")).explode("day")
            .select("psn_no", "day"))
    if days.height == 0:
        return pl.DataFrame(schema=CREDIT_SCHEMA)
    j = period_on_day(days, emp)
    if j.height == 0:
        return pl.DataFrame(schema=CREDIT_SCHEMA)
    retired_on = emp.filter(pl.col("psn_type") == "12").group_by("psn_no").agg(pl.col("begndate").min().alias("retired_on"))
    j = j.join(retired_on, on="psn_no", how="left").join(persons, on="psn_no", how="left")
    j = j.join(_day_values(policies, j["day"].unique().sort().to_list(), used), on="day", how="left")
    age = (pl.col("day").dt.year() - pl.col("brdy").dt.year()
           - ((pl.col("day").dt.month() * 100 + pl.col("day").dt.day())
              < (pl.col("brdy").dt.month() * 100 + pl.col("brdy").dt.day())).cast(pl.Int32))
    mode, kind = pl.col("contrib_mode"), pl.col("retire_kind")
    rule = (
        pl.when(pl.col("blocked").list.contains(pl.col("benefit"))).then(pl.lit(None, pl.String))
        .when(pl.col("psn_type") == "11").then(
            pl.when(mode == "pooling_only").then(pl.lit("credit_in_service_pooling_only"))
            .when(age >= pl.col("age_split")).then(pl.lit("credit_in_service_from_45"))
            .otherwise(pl.lit("credit_in_service_under_45")))
        # §4.2: a retiree still contributing has not met the years, so the "retired by 2022-12-31" row does not
        # apply to them whatever their retirement date: their own mode decides first
        .when((kind == "contributing") & (mode == "pooling_only")).then(pl.lit("credit_retired_contributing_pooling_only"))
        .when((kind == "contributing") & (mode == "combined")).then(pl.lit("credit_retired_contributing_combined"))
        .when(kind == "contributing").then(pl.lit("?"))
        .when(pl.col("retired_on") <= pl.col("cutoff")).then(pl.lit("credit_retired_by_reform"))
        .when(kind == "normal").then(pl.lit("credit_retired_normal"))
        .when(kind == "backpay_pooling_only").then(pl.lit("credit_retired_backpay_pooling_only"))
        .when(kind == "backpay_mixed").then(pl.lit("credit_retired_backpay_mixed"))
        .otherwise(pl.lit("?"))
    )
    j = j.with_columns(rule.alias("credit_rule")).filter(pl.col("credit_rule").is_not_null())
    bad = j.filter(pl.col("credit_rule") == "?")
    if bad.height:
        r = bad.row(0, named=True)
        raise AccountDataError(f"employment of {r['psn_no']} on {r['day']}: a retiree still contributing needs "
                               "contrib_mode (combined / pooling_only) for the account credit (POLICY §4.2)")
    values = []  # the value in force for each (rule, day) met: a few dozen lookups, then a hash join
    for rule_name, d in j.select("credit_rule", "day").unique().sort("day", "credit_rule").iter_rows():
        dv = policies.at(REGION, SCHEME, f"account.{rule_name}", d)  # raises MissingParameter naming it
        if used is not None:
            used.add((REGION, SCHEME, f"account.{rule_name}", dv.assumption))
        values.append((rule_name, d, *credit_value(dv.value)))
    j = j.join(pl.DataFrame(values, orient="row", schema={"credit_rule": pl.String, "day": pl.Date, "rate_bp": pl.Int64,
                                                           "fixed_fen": pl.Int64}), on=["credit_rule", "day"], how="left")
    j = _with_flexible_base(j, policies)
    nobase = j.filter(pl.col("rate_bp").is_not_null() & pl.col("base").is_null())
    if nobase.height:
        r = nobase.row(0, named=True)
        raise AccountDataError(f"employment of {r['psn_no']} on {r['day']}: contrib_base is empty but the account "
                               f"credit ({r['credit_rule']}) is a rate of the base (POLICY §4.2)")
    b = pl.col("base") * pl.col("rate_bp")
    amount = pl.when(pl.col("rate_bp").is_not_null()).then((2 * b + 10_000) // 20_000).otherwise(pl.col("fixed_fen"))
    return (j.with_columns(amount.cast(pl.Int64).alias("amount"))
            .filter(pl.col("amount") > 0)
            .select("psn_no", pl.col("day").cast(pl.Datetime("us")).alias("ts"), "amount", "credit_rule")
            .sort("psn_no", "ts"))


def _with_flexible_base(j: pl.DataFrame, policies: Policies) -> pl.DataFrame:
    """The base of a rate credit: the period's own contrib_base; a flexible worker without one takes the
    flexible workers' single base of the contribution year (contributions.flexible_base, §4.1)."""
    need = j.filter(pl.col("contrib_base").is_null() & pl.col("flexible").fill_null(False) & pl.col("rate_bp").is_not_null())
    flex: dict[dt.date, int] = {}
    for d in need["day"].unique().to_list():
        flex[d] = yuan_to_fen(policies.value(REGION, SCHEME, "contributions.flexible_base", d))
    fb = pl.DataFrame({"day": list(flex), "flex_base": list(flex.values())}, schema={"day": pl.Date, "flex_base": pl.Int64})
    j = j.join(fb, on="day", how="left")
    base = pl.coalesce(pl.col("contrib_base"), pl.when(pl.col("flexible").fill_null(False)).then(pl.col("flex_base")))
    return j.with_columns(base.alias("base"))


def _day_values(policies: Policies, days: list[dt.date], used: set | None) -> pl.DataFrame:
    rows = []
    for d in days:
        vals = []
        for name in ("account.in_service_age_split", "account.retired_by_reform_cutoff", "account.no_credit_benefit_states"):
            dv = policies.at(REGION, SCHEME, name, d)
            if used is not None:
                used.add((REGION, SCHEME, name, dv.assumption))
            vals.append(dv.value)
        cutoff = vals[1] if isinstance(vals[1], dt.date) else dt.date.fromisoformat(str(vals[1]))
        rows.append((d, int(vals[0]), cutoff, [str(s) for s in vals[2]]))
    return pl.DataFrame(rows, orient="row", schema={"day": pl.Date, "age_split": pl.Int32, "cutoff": pl.Date,
                                                    "blocked": pl.List(pl.String)})


# --------------------------------------------------------------------------- mutual-aid rules by date


def _aid_rules(policies: Policies, days: list[dt.date], used: set | None) -> pl.DataFrame:
    """family_aid parameters in force on each settlement date that may need them."""
    rows = []
    for d in days:
        v = {n: policies.at(REGION, SCHEME, f"family_aid.{n}", d) for n in (
            "own_account_first", "authoriser_order", "no_cascade", "in_city_only", "uses_employee_ledgers",
            "uses_resident_ledgers")}
        if v["own_account_first"].value is not True or v["no_cascade"].value is not True:
            raise NotImplementedError("family_aid.own_account_first and no_cascade must be true (POLICY §4.5)")
        if v["authoriser_order"].value != "binding_date":
            raise NotImplementedError(f"family_aid.authoriser_order = {v['authoriser_order'].value!r}: "
                                      "only binding_date (A-13) is implemented")
        if used is not None:
            for n, dv in v.items():
                used.add((REGION, SCHEME, f"family_aid.{n}", dv.assumption))
        rows.append((d, bool(v["in_city_only"].value), [str(x) for x in v["uses_employee_ledgers"].value],
                     [str(x) for x in v["uses_resident_ledgers"].value]))
    return pl.DataFrame(rows, orient="row", schema={"setl_date": pl.Date, "aid_in_city_only": pl.Boolean,
                                                    "aid_emp_ledgers": pl.List(pl.String),
                                                    "aid_res_ledgers": pl.List(pl.String)})


# --------------------------------------------------------------------------- the pass


def _opt(df: pl.DataFrame, col: str, default: Any, dtype: pl.DataType) -> pl.Expr:
    return pl.col(col).cast(dtype) if col in df.columns else pl.lit(default, dtype)


def prepare_lines(df: pl.DataFrame) -> pl.DataFrame:
    """The columns of the engine frame the pass reads, with the account flags of each line."""
    rev = pl.col("is_reversal") if "is_reversal" in df.columns else pl.col("orig_setl_id").is_not_null()
    allowed = _opt(df, "acct_allowed", True, pl.Boolean).fill_null(True)
    pending = _opt(df, "rule_pending", False, pl.Boolean).fill_null(False)
    L = df.select(
        "setl_id", "psn_no", pl.col("setl_time").cast(pl.Datetime("us")).alias("ts"),
        pl.col("setl_time").dt.date().alias("setl_date"),
        pl.col("psn_part_amt").cast(pl.Int64).alias("part"),
        rev.fill_null(False).alias("rev"), pl.col("orig_setl_id").cast(pl.String),
        (pl.col("region") == REGION).fill_null(False).alias("xy"),
        allowed.alias("allowed"), pending.alias("pending"),
        pl.col("inst_admdvs").cast(pl.String).str.starts_with(XIANGYANG_CITY).fill_null(False).alias("inst_xy"),
        pl.col("ledger").cast(pl.String), pl.col("scheme").cast(pl.String),
        (-_opt(df, "rev_acct_pay", 0, pl.Int64).fill_null(0)).alias("refund_own"),
        (-_opt(df, "rev_acct_mulaid_pay", 0, pl.Int64).fill_null(0)).alias("refund_mulaid"),
    )
    # A stay line that settles a merged stay (POLICY §1.12, A-31) has the personal share it has: the merged stay's
    # person share minus what its emergency lines left to the person. Positive, the accounts pay it like any line.
    # Negative (the emergency lines' person share was more than the merged stay leaves to the person), it is paid
    # back to the person in cash (psn_cash_pay < 0) and no account moves: an account is debited only by a payment
    # of a person's share and credited only by an allocation or a reversal's refund (§4.2, §4.5, §1.7), and the
    # emergency lines' own account payments are not recomputed (§1.11). The reference does the same
    # (transforms/reference/accounts.py: `part > 0`).
    own_req = pl.when(~pl.col("rev") & pl.col("xy") & pl.col("allowed") & ~pl.col("pending") & (pl.col("part") > 0))
    return L.with_columns(own_req.then(pl.col("part")).otherwise(0).cast(pl.Int64).alias("own_req"))


def _requests(L: pl.DataFrame, registers: dict[str, pl.DataFrame], policies: Policies,
              used: set | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Mutual-aid requests (setl_id, user, authoriser, rank ≥ 1, ts) of the lines that may draw on family
    accounts, ranked by binding date then authoriser (A-13); and per line `has_binding` / `aid_ok`."""
    bind = _register(registers, "family_bindings", BINDING_SCHEMA)
    cand = L.filter(pl.col("own_req") > 0).select("setl_id", "psn_no", "ts", "setl_date", "ledger", "scheme", "inst_xy")
    valid = (cand.join(bind.rename({"user_psn_no": "psn_no"}), on="psn_no", how="inner")
             .filter((pl.col("begndate") <= pl.col("setl_date"))
                     & (pl.col("enddate").is_null() | (pl.col("setl_date") <= pl.col("enddate")))))
    flags_schema = {"setl_id": pl.String, "has_binding": pl.Boolean, "aid_ok": pl.Boolean}
    req_schema = {"setl_id": pl.String, "user_psn_no": pl.String, "authoriser": pl.String, "rank": pl.Int32,
                  "ts": pl.Datetime("us")}
    if valid.height == 0:
        return pl.DataFrame(schema=req_schema), pl.DataFrame(schema=flags_schema)
    rules = _aid_rules(policies, valid["setl_date"].unique().sort().to_list(), used)
    xy_users = xiangyang_persons(registers).select("psn_no")
    lines_b = (valid.select("setl_id", "psn_no", "setl_date", "ledger", "scheme", "inst_xy").unique("setl_id")
               .join(rules, on="setl_date", how="left")
               .with_columns(
                   (pl.when(pl.col("scheme") == "resident").then(pl.col("aid_res_ledgers"))
                    .otherwise(pl.col("aid_emp_ledgers")).list.contains(pl.col("ledger"))
                    & (pl.col("inst_xy") | ~pl.col("aid_in_city_only"))
                    & pl.col("psn_no").is_in(xy_users["psn_no"].implode())).alias("aid_ok"),
                   pl.lit(True).alias("has_binding")))
    ok = lines_b.filter(pl.col("aid_ok")).select("setl_id")
    req = (valid.join(ok, on="setl_id", how="semi")
           .sort("setl_id", "begndate", "authoriser_psn_no")
           .unique(["setl_id", "authoriser_psn_no"], keep="first", maintain_order=True)
           .with_columns((pl.int_range(pl.len()).over("setl_id") + 1).cast(pl.Int32).alias("rank"))
           .select("setl_id", pl.col("psn_no").alias("user_psn_no"), pl.col("authoriser_psn_no").alias("authoriser"),
                   "rank", "ts"))
    return req, lines_b.select(list(flags_schema))


def _graph(req: pl.DataFrame, extra_walk: set[str]) -> tuple[dict[str, int], set[str]]:
    """Levels of the acyclic part of the request graph and the accounts to walk event by event."""
    if req.height == 0 and not extra_walk:
        return {}, set()
    edges: set[tuple[str, str]] = set()
    by_line: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for sid, user, auth, rank in req.select("setl_id", "user_psn_no", "authoriser", "rank").iter_rows():
        edges.add((user, auth))
        by_line[sid].append((rank, auth))
    for auths in by_line.values():
        if len(auths) > 1:
            auths.sort()
            for (_, a), (_, b) in zip(auths, auths[1:], strict=False):
                edges.add((a, b))
    succ: dict[str, list[str]] = defaultdict(list)
    indeg: dict[str, int] = defaultdict(int)
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for a, b in edges:
        succ[a].append(b)
        indeg[b] += 1
        indeg.setdefault(a, 0)
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    level = dict.fromkeys(indeg, 0)
    queue = [n for n, k in indeg.items() if k == 0]
    left = dict(indeg)
    while queue:
        n = queue.pop()
        for m in succ[n]:
            if level[n] + 1 > level[m]:
                level[m] = level[n] + 1
            left[m] -= 1
            if left[m] == 0:
                queue.append(m)
    bad_roots = {find(n) for n, k in left.items() if k > 0} | {find(n) for n in extra_walk}
    walk = {n for n in set(indeg) | extra_walk if find(n) in bad_roots}
    return {n: lv for n, lv in level.items() if n not in walk}, walk


def _refund_splits(L: pl.DataFrame, original_ledger: pl.DataFrame | None) -> pl.DataFrame:
    """Per reversal of an earlier run's settlement: what each authoriser's account gives back
    (the mulaid_payment_out rows of the original, negated), checked against the original's total."""
    schema = {"setl_id": pl.String, "acct": pl.String, "refund": pl.Int64, "user_psn_no": pl.String, "rank": pl.Int32}
    revs = L.filter(pl.col("rev") & (pl.col("refund_mulaid") != 0)).select("setl_id", "orig_setl_id", "refund_mulaid", "psn_no")
    if revs.height == 0:
        return pl.DataFrame(schema=schema)
    if original_ledger is None:
        raise ValueError(f"reversal {revs['setl_id'][0]} gives back family-account money: the account_ledger rows of "
                         f"its original {revs['orig_setl_id'][0]} are needed (AccountInputs.original_ledger)")
    paid = (original_ledger.filter((pl.col("kind") == "mulaid_payment_out") & pl.col("orig_setl_id").is_null())
            .select(pl.col("setl_id").alias("orig_setl_id"), pl.col("psn_no").alias("acct"),
                    (-pl.col("amount").cast(pl.Int64)).alias("refund"), pl.col("ts").alias("__ts"))
            .sort("orig_setl_id", "__ts", "acct"))
    split = revs.join(paid, on="orig_setl_id", how="inner")
    check = revs.join(split.group_by("setl_id").agg(pl.col("refund").sum().alias("__s")), on="setl_id", how="left")
    bad = check.filter(pl.col("__s").fill_null(0) != pl.col("refund_mulaid"))
    if bad.height:
        r = bad.row(0, named=True)
        raise ValueError(f"reversal {r['setl_id']}: the ledger rows of {r['orig_setl_id']} do not add up to its "
                         f"acct_mulaid_pay ({r['refund_mulaid']} fen)")
    return split.with_columns((pl.int_range(pl.len()).over("setl_id") + 1).cast(pl.Int32).alias("rank")).select(
        "setl_id", "acct", "refund", pl.col("psn_no").alias("user_psn_no"), "rank")


def apply_accounts(df: pl.DataFrame, registers: dict[str, pl.DataFrame], policies: Policies,
                   inputs: AccountInputs | None = None, used: set | None = None) -> tuple[pl.DataFrame, AccountResult]:
    """Set acct_pay, acct_mulaid_pay and psn_cash_pay (= psn_part_amt − both) on the engine frame, add
    `acct_note` (explanation fragment), and return the ledger and end balances.

    Reads: setl_id, psn_no, setl_time, psn_part_amt, region, inst_admdvs, ledger, scheme, orig_setl_id,
    is_reversal, rule_pending, acct_allowed (optional), rev_acct_pay / rev_acct_mulaid_pay (the original's
    amounts negated, for reversals of earlier runs). A reversal's acct_pay / acct_mulaid_pay are what it
    gives back (negative).
    """
    inputs = inputs or AccountInputs()
    period = inputs.period or period_of(df)
    if period is None:
        out = df.with_columns(pl.lit(None, pl.String).alias("acct_note"))
        return out, AccountResult(empty_ledger(), (inputs.balances if inputs.balances is not None else empty_state()))
    state = start_state(registers, inputs.balances, period[0], policies, used)
    credits = monthly_credits(registers, policies, state, period, used)
    L = prepare_lines(df)
    req, flags = _requests(L, registers, policies, used)
    in_batch = set(L.filter(pl.col("rev") & pl.col("orig_setl_id").is_in(L["setl_id"].implode()))["psn_no"].to_list())
    level, walk = _graph(req, in_batch)
    splits = _refund_splits(L.filter(~pl.col("psn_no").is_in(list(walk))), inputs.original_ledger)

    opening = state.select(pl.col("psn_no").alias("acct"), pl.col("balc").alias("opening"))
    walk_list = list(walk)
    is_walk = pl.col("acct").is_in(walk_list)
    base = _base_events(L, credits, splits).filter(~is_walk)
    levels_frame = pl.DataFrame({"acct": list(level), "level": list(level.values())},
                                schema={"acct": pl.String, "level": pl.Int32})
    base = base.join(levels_frame, on="acct", how="left").with_columns(pl.col("level").fill_null(0))
    vreq = req.filter(~pl.col("authoriser").is_in(walk_list)).join(
        levels_frame.rename({"acct": "authoriser"}), on="authoriser", how="left")
    ledgers, own_paid, req_paid = [], [], []
    n_levels = int(max(level.values(), default=0)) + 1 if base.height or vreq.height else 0
    paid_so_far = pl.DataFrame(schema={"setl_id": pl.String, "rank": pl.Int32, "acct": pl.String, "paid": pl.Int64})
    own_so_far = pl.DataFrame(schema={"setl_id": pl.String, "own_paid": pl.Int64})
    for lv in range(n_levels):
        ev = base.filter(pl.col("level") == lv).drop("level")
        if lv > 0:
            rq = vreq.filter(pl.col("level") == lv)
            if rq.height:
                ev = pl.concat([ev, _request_events(rq, L, own_so_far, paid_so_far)])
        if ev.height == 0:
            continue
        w = _walk_vectorized(ev, opening)
        own = w.filter((pl.col("kind") == "own_payment") & (pl.col("rank") == 0) & (pl.col("credit") == 0))
        own_so_far = pl.concat([own_so_far, own.select("setl_id", pl.col("paid").alias("own_paid"))])
        got = w.filter((pl.col("kind") == "mulaid_payment_out") & (pl.col("credit") == 0))  # requests, not refunds
        paid_so_far = pl.concat([paid_so_far, got.select("setl_id", "rank", "acct", "paid")])
        ledgers.append(w)
    own_paid.append(own_so_far)
    req_paid.append(paid_so_far)

    wres = _walk_groups(L, credits, req, state, walk, inputs.original_ledger)
    ledger_rows = pl.concat([*[_ledger_rows(w) for w in ledgers], wres["ledger"]])
    own_paid.append(wres["own"])
    req_paid.append(wres["mulaid"])

    own_all = pl.concat(own_paid)
    mulaid_all = pl.concat(req_paid).group_by("setl_id").agg(pl.col("paid").sum().alias("mulaid_paid"),
                                                             _payers_text().alias("payers"))
    refunds = _refund_rows(ledger_rows)
    out = _set_line_amounts(df, L, own_all, mulaid_all, refunds, flags, ledger_rows)
    ledger = ledger_rows.sort("psn_no", "ts", "__ord", "setl_id", "__rank", nulls_last=False).select(list(LEDGER_SCHEMA))
    holders = (_register(registers, "employment", EMPLOYMENT_SCHEMA).select("psn_no").unique()
               .join(xiangyang_persons(registers), on="psn_no", how="semi"))
    end_state = _end_state(state, ledger, holders, period[1])
    n_walked = len(walk)
    return out, AccountResult(ledger=ledger, balances=end_state, walked_accounts=n_walked,
                              walked_events=int(wres["events"]), levels=n_levels)


def _base_events(L: pl.DataFrame, credits: pl.DataFrame, splits: pl.DataFrame) -> pl.DataFrame:
    """Every event whose amount is known before the walk: credits, own requests, refunds."""
    cr = credits.select(pl.col("psn_no").alias("acct"), "ts", pl.lit(0, pl.Int8).alias("ord"),
                        pl.lit(None, pl.String).alias("setl_id"), pl.lit(0, pl.Int32).alias("rank"),
                        pl.lit("credit").alias("kind"), pl.col("amount").alias("credit"), pl.lit(0, pl.Int64).alias("debit"),
                        pl.lit(None, pl.String).alias("user_psn_no"), pl.lit(None, pl.String).alias("orig_setl_id"))
    own = L.filter(pl.col("own_req") > 0).select(
        pl.col("psn_no").alias("acct"), "ts", pl.lit(1, pl.Int8).alias("ord"), "setl_id", pl.lit(0, pl.Int32).alias("rank"),
        pl.lit("own_payment").alias("kind"), pl.lit(0, pl.Int64).alias("credit"), pl.col("own_req").alias("debit"),
        pl.lit(None, pl.String).alias("user_psn_no"), pl.lit(None, pl.String).alias("orig_setl_id"))
    ref_own = L.filter(pl.col("rev") & (pl.col("refund_own") != 0)).select(
        pl.col("psn_no").alias("acct"), "ts", pl.lit(1, pl.Int8).alias("ord"), "setl_id", pl.lit(0, pl.Int32).alias("rank"),
        pl.lit("own_payment").alias("kind"), pl.col("refund_own").alias("credit"), pl.lit(0, pl.Int64).alias("debit"),
        pl.lit(None, pl.String).alias("user_psn_no"), "orig_setl_id")
    ref_aid = splits.join(L.select("setl_id", "ts", "orig_setl_id"), on="setl_id", how="left").select(
        "acct", "ts", pl.lit(1, pl.Int8).alias("ord"), "setl_id", "rank", pl.lit("mulaid_payment_out").alias("kind"),
        pl.col("refund").alias("credit"), pl.lit(0, pl.Int64).alias("debit"), "user_psn_no", "orig_setl_id")
    return pl.concat([f.cast(EVENT_SCHEMA) for f in (cr, own, ref_own, ref_aid)])


def _request_events(rq: pl.DataFrame, L: pl.DataFrame, own_so_far: pl.DataFrame, paid_so_far: pl.DataFrame) -> pl.DataFrame:
    """Requests to the authorisers of one level: what is left of the user's shortfall after its own
    account and the authorisers ranked before (all on lower levels, so already known)."""
    mine = rq.select("setl_id").unique()
    short = (L.select("setl_id", "own_req").join(mine, on="setl_id", how="semi")
             .join(own_so_far.join(mine, on="setl_id", how="semi"), on="setl_id", how="left")
             .select("setl_id", (pl.col("own_req") - pl.col("own_paid").fill_null(0)).alias("short")))
    prior = (rq.select("setl_id", pl.col("rank").alias("__k"))
             .join(paid_so_far.select("setl_id", "rank", "paid"), on="setl_id", how="inner")
             .filter(pl.col("rank") < pl.col("__k")).group_by("setl_id", "__k").agg(pl.col("paid").sum().alias("prior")))
    r = (rq.join(short, on="setl_id", how="left")
         .join(prior.rename({"__k": "rank"}), on=["setl_id", "rank"], how="left")
         .with_columns((pl.col("short") - pl.col("prior").fill_null(0)).clip(lower_bound=0).alias("debit")))
    return r.select(pl.col("authoriser").alias("acct"), "ts", pl.lit(1, pl.Int8).alias("ord"), "setl_id", "rank",
                    pl.lit("mulaid_payment_out").alias("kind"), pl.lit(0, pl.Int64).alias("credit"), "debit",
                    "user_psn_no", pl.lit(None, pl.String).alias("orig_setl_id")).cast(EVENT_SCHEMA)


def _walk_vectorized(ev: pl.DataFrame, opening: pl.DataFrame) -> pl.DataFrame:
    ev = (ev.join(opening, on="acct", how="left").with_columns(pl.col("opening").fill_null(0))
          .sort(["acct", *ORDER], nulls_last=False))
    w = ev.with_columns(account_walk_struct(pl.col("credit"), pl.col("debit"), pl.col("opening"), ["acct"]).alias("__w"))
    return w.with_columns(pl.col("__w").struct.field("paid"), pl.col("__w").struct.field("balance")).drop("__w")


def _ledger_rows(w: pl.DataFrame) -> pl.DataFrame:
    """Walked events → ledger rows (amount = signed change of the balance), zero movements dropped."""
    return (w.with_columns((pl.col("credit") - pl.col("paid")).alias("amount"))
            .filter(pl.col("amount") != 0)
            .select(pl.col("acct").alias("psn_no"), "ts", "kind", "amount", pl.col("balance").alias("balc_after"),
                    "setl_id", "user_psn_no", "orig_setl_id", pl.col("ord").alias("__ord"), pl.col("rank").alias("__rank"))
            .cast({"__ord": pl.Int8, "__rank": pl.Int32}))


LEDGER_WORK_SCHEMA = {**LEDGER_SCHEMA, "__ord": pl.Int8, "__rank": pl.Int32}


def _payers_text() -> pl.Expr:
    nz = pl.col("paid") != 0
    return pl.concat_str([pl.col("acct"), pl.lit(" "), fen_text(pl.col("paid"))]).filter(nz).sort_by(
        pl.col("rank").filter(nz)).str.join(", ")


def _refund_rows(ledger_rows: pl.DataFrame) -> pl.DataFrame:
    """What each reversal gave back, by setl_id: own and family totals (positive) and a payer text."""
    r = ledger_rows.filter(pl.col("orig_setl_id").is_not_null())
    return r.group_by("setl_id").agg(
        pl.col("amount").filter(pl.col("kind") == "own_payment").sum().alias("refund_own_done"),
        pl.col("amount").filter(pl.col("kind") == "mulaid_payment_out").sum().alias("refund_aid_done"),
        # payers by account number: the original's drawing order is not in an earlier month's ledger rows
        # (_refund_splits), so by rank the text would differ between a reversal in the original's batch and one in
        # a later month (tests/employee/test_employee_vs_reference.py month by month)
        pl.concat_str([pl.col("psn_no"), pl.lit(" "), fen_text(pl.col("amount"))])
        .filter(pl.col("kind") == "mulaid_payment_out").sort_by(pl.col("psn_no").filter(pl.col("kind") == "mulaid_payment_out"))
        .str.join(", ").alias("refund_payers"),
    )


def _set_line_amounts(df: pl.DataFrame, L: pl.DataFrame, own: pl.DataFrame, aid: pl.DataFrame, refunds: pl.DataFrame,
                      flags: pl.DataFrame, ledger_rows: pl.DataFrame) -> pl.DataFrame:
    own_bal = (ledger_rows.filter((pl.col("kind") == "own_payment") & pl.col("orig_setl_id").is_null())
               .select("setl_id", pl.col("balc_after").alias("own_balc_after")))
    info = (L.select("setl_id", "rev", "xy", "allowed", "pending", "part", "own_req", "inst_xy")
            .join(own.unique("setl_id", keep="last"), on="setl_id", how="left")
            .join(aid, on="setl_id", how="left").join(refunds, on="setl_id", how="left")
            .join(flags, on="setl_id", how="left").join(own_bal, on="setl_id", how="left")
            .with_columns(pl.col("own_paid").fill_null(0), pl.col("mulaid_paid").fill_null(0),
                          pl.col("refund_own_done").fill_null(0), pl.col("refund_aid_done").fill_null(0),
                          pl.col("has_binding").fill_null(False), pl.col("aid_ok").fill_null(False)))
    acct_pay = pl.when(pl.col("rev")).then(-pl.col("refund_own_done")).otherwise(pl.col("own_paid"))
    aid_pay = pl.when(pl.col("rev")).then(-pl.col("refund_aid_done")).otherwise(pl.col("mulaid_paid"))
    info = info.with_columns(acct_pay.alias("__acct_pay"), aid_pay.alias("__aid_pay"))
    y = fen_text
    short = pl.col("own_req") - pl.col("own_paid")
    note = (
        pl.when(pl.col("rev") & ((pl.col("refund_own_done") != 0) | (pl.col("refund_aid_done") != 0))).then(
            pl.concat_str([pl.lit("accounts get back what the original took: own "), y(pl.col("refund_own_done")),
                           pl.when(pl.col("refund_aid_done") != 0).then(pl.concat_str([
                               pl.lit(", family "), pl.col("refund_payers")])).otherwise(pl.lit(""))]))
        .when(pl.col("rev") | ~pl.col("xy") | (pl.col("part") <= 0)).then(pl.lit(None, pl.String))
        .when(pl.col("pending")).then(pl.lit("personal account not used: the funds of this line are not computed"))
        .when(~pl.col("allowed")).then(pl.lit("personal account may not pay this line (outside the benefit period, "
                                              "POLICY §4.3): cash"))
        .otherwise(pl.concat_str([
            pl.lit("own account pays "), y(pl.col("own_paid")),
            pl.when(pl.col("own_paid") > 0).then(pl.concat_str([
                pl.lit(" (balance "), y(pl.col("own_balc_after") + pl.col("own_paid")), pl.lit(" → "),
                y(pl.col("own_balc_after")), pl.lit(")")])).otherwise(pl.lit(" (balance 0.00)")),
            pl.when(pl.col("mulaid_paid") > 0).then(pl.concat_str([
                pl.lit("; family accounts pay "), y(pl.col("mulaid_paid")), pl.lit(" ("), pl.col("payers"),
                pl.lit(", binding-date order A-13)")]))
            .when((short > 0) & pl.col("has_binding") & ~pl.col("aid_ok")).then(pl.lit(
                "; family accounts not usable for this settlement (only at designated institutions in Xiangyang,"
                " on the ledgers of POLICY §4.5)"))
            .when((short > 0) & pl.col("aid_ok")).then(pl.lit("; authorisers' accounts empty"))
            .otherwise(pl.lit("")),
        ]))
    )
    info = info.with_columns(note.alias("acct_note")).select("setl_id", "__acct_pay", "__aid_pay", "acct_note")
    out = join_left(df.drop("acct_note", strict=False), info, "setl_id")
    return out.with_columns(
        pl.col("__acct_pay").fill_null(0).alias("acct_pay"), pl.col("__aid_pay").fill_null(0).alias("acct_mulaid_pay"),
    ).drop("__acct_pay", "__aid_pay").with_columns(
        (pl.col("psn_part_amt") - pl.col("acct_pay") - pl.col("acct_mulaid_pay")).alias("psn_cash_pay"))


def _end_state(state: pl.DataFrame, ledger: pl.DataFrame, holders: pl.DataFrame, period_end: dt.date) -> pl.DataFrame:
    """State after the period for every account with a state, a movement or an employment record (so that
    the next run credits from this period's end, whatever happened in between)."""
    last = (ledger.group_by("psn_no", maintain_order=True).agg(pl.col("balc_after").last().alias("moved")))
    out = (state.join(last, on="psn_no", how="full", coalesce=True).join(holders, on="psn_no", how="full", coalesce=True)
           .with_columns(pl.col("balc").fill_null(0))
           .with_columns(pl.coalesce("moved", "balc").alias("balc"),
                         pl.max_horizontal(pl.col("as_of").fill_null(period_end), pl.lit(period_end)).alias("as_of")))
    return out.select(list(STATE_SCHEMA)).sort("psn_no")


# --------------------------------------------------------------------------- event-by-event walk


def _walk_groups(L: pl.DataFrame, credits: pl.DataFrame, req: pl.DataFrame, state: pl.DataFrame, walk: set[str],
                 original_ledger: pl.DataFrame | None) -> dict[str, Any]:
    """The family groups with cycles or in-batch reversals, event by event in (ts, ord, setl_id) order."""
    own_schema = {"setl_id": pl.String, "own_paid": pl.Int64}
    aid_schema = {"setl_id": pl.String, "rank": pl.Int32, "acct": pl.String, "paid": pl.Int64}
    empty = {"ledger": pl.DataFrame(schema=LEDGER_WORK_SCHEMA), "own": pl.DataFrame(schema=own_schema),
             "mulaid": pl.DataFrame(schema=aid_schema), "events": 0}
    if not walk:
        return empty
    wl = list(walk)
    bal: dict[str, int] = dict(state.filter(pl.col("psn_no").is_in(wl)).select("psn_no", "balc").iter_rows())
    events: list[tuple] = []
    for acct, ts, amount in credits.filter(pl.col("psn_no").is_in(wl)).select("psn_no", "ts", "amount").iter_rows():
        events.append((ts, 0, "", acct, amount))
    auths: dict[str, list[str]] = defaultdict(list)
    for sid, auth in req.filter(pl.col("user_psn_no").is_in(wl)).sort("setl_id", "rank").select("setl_id", "authoriser").iter_rows():
        auths[sid].append(auth)
    mine = L.filter(pl.col("psn_no").is_in(wl) & ((pl.col("own_req") > 0) | pl.col("rev")))
    for sid, psn, ts, own_req, rev, orig, refund_own, refund_aid in mine.select(
            "setl_id", "psn_no", "ts", "own_req", "rev", "orig_setl_id", "refund_own", "refund_mulaid").iter_rows():
        events.append((ts, 1, sid, psn, (own_req, rev, orig, refund_own, refund_aid)))
    stored: dict[str, list[tuple[str, int]]] = defaultdict(list)
    if original_ledger is not None and original_ledger.height:
        origs = mine.filter(pl.col("rev"))["orig_setl_id"].implode()
        for sid, acct, amount in (original_ledger.filter((pl.col("kind") == "mulaid_payment_out")
                                                         & pl.col("orig_setl_id").is_null() & pl.col("setl_id").is_in(origs))
                                  .sort("setl_id", "ts", "psn_no").select("setl_id", "psn_no", "amount").iter_rows()):
            stored[sid].append((acct, -int(amount)))
    events.sort(key=lambda e: (e[0], e[1], e[2], e[3]))
    led: list[tuple] = []
    own_rows: list[tuple[str, int]] = []
    aid_rows: list[tuple[str, int, str, int]] = []
    took: dict[str, tuple[int, list[tuple[str, int]]]] = {}  # setl_id → (own, [(authoriser, amount)])
    for ts, ordv, sid, acct, payload in events:
        if ordv == 0:
            bal[acct] = bal.get(acct, 0) + payload
            led.append((acct, ts, "credit", payload, bal[acct], None, None, None, 0, 0))
            continue
        own_req, rev, orig, refund_own, refund_aid = payload
        if rev:
            if orig in took:
                back_own, back_aid = took[orig]
            else:
                back_own = refund_own
                back_aid = stored.get(orig, [])
                if sum(a for _, a in back_aid) != refund_aid:
                    raise ValueError(f"reversal {sid}: the family-account refunds of {orig} are not known "
                                     f"(AccountInputs.original_ledger)")
            if back_own:
                bal[acct] = bal.get(acct, 0) + back_own
                led.append((acct, ts, "own_payment", back_own, bal[acct], sid, None, orig, 1, 0))
            for k, (a, amount) in enumerate(back_aid, start=1):
                if amount:
                    bal[a] = bal.get(a, 0) + amount
                    led.append((a, ts, "mulaid_payment_out", amount, bal[a], sid, acct, orig, 1, k))
            continue
        have = bal.get(acct, 0)
        own = min(own_req, have)
        if own:
            bal[acct] = have - own
            led.append((acct, ts, "own_payment", -own, bal[acct], sid, None, None, 1, 0))
        own_rows.append((sid, own))
        short = own_req - own
        paid_by: list[tuple[str, int]] = []
        for k, a in enumerate(auths.get(sid, []), start=1):
            have_a = bal.get(a, 0)
            take = min(short, have_a)
            if take:
                bal[a] = have_a - take
                short -= take
                led.append((a, ts, "mulaid_payment_out", -take, bal[a], sid, acct, None, 1, k))
                paid_by.append((a, take))
            aid_rows.append((sid, k, a, take))
        took[sid] = (own, paid_by)
    ledger = pl.DataFrame(led, schema=LEDGER_WORK_SCHEMA, orient="row")
    return {
        "ledger": ledger,
        "own": pl.DataFrame(own_rows, schema=own_schema, orient="row"),
        "mulaid": pl.DataFrame(aid_rows, schema=aid_schema, orient="row"),
        "events": len(events),
    }


def append_account_note(df: pl.DataFrame) -> pl.DataFrame:
    """Add the account fragment (`acct_note`) to the line's explanation (POLICY §1.10)."""
    if "acct_note" not in df.columns:
        return df
    return df.with_columns(
        pl.concat_str([pl.col("explanation"), pl.col("acct_note")], separator="; ", ignore_nulls=True).alias("explanation"))
