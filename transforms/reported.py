"""Institution-reported amounts for the synthetic sample (issue 5, the discrepancy audit).

A designated institution settles each line in real time and reports what it paid from each fund
(DATA.md §2 `hifp_pay` … `psn_cash_pay`). The sample's institutions report the adjudicated amounts,
except on a few lines where they go wrong in one of a handful of known ways. Every such line is listed
with its kind, so a test can require `v_discrepancies` to find exactly those lines and nothing else.

Each kind moves money between one fund and the person's cash, so a reported line still adds up
(hifp + hifmi + maf + acct + mulaid + cash = total − the institution's share):

- `rounded_down_to_yuan`: the basic fund's payment cut to whole yuan (the fen go to cash);
- `critical_illness_omitted`: critical-illness insurance not applied (POLICY §3.8);
- `tilt_assistance_omitted`: tilt assistance not applied (POLICY §3.9; the platform's `maf_pay` is all assistance);
- `annual_cap_ignored`: the basic fund paid past the annual cap (POLICY §3.7/§4.4), out of the person's cash;
- `family_account_not_used`: the authorisers' accounts not drawn on (POLICY §4.5), the person paid cash.

A reversal reports the negation of what its original reported (a wrong original stays wrong when
cancelled). Pure polars: frames in, frames out.
"""

from __future__ import annotations

import polars as pl

REPORTED = ["hifp_pay", "hifmi_pay", "maf_pay", "acct_pay", "acct_mulaid_pay", "psn_cash_pay"]

# kind → (the reported fund it changes, the fen that move from that fund to cash, computed from the adjudicated
# columns; negative = from cash to the fund), rarest first: a line gets the first kind that applies to it and
# whose rate (basis points of the lines it applies to) its hash draw falls under.
KINDS: dict[str, tuple[str, pl.Expr]] = {
    # the cap cut goes back to the fund, only as far as the person's cash can give it
    "annual_cap_ignored": ("hifp_pay", -pl.min_horizontal(pl.col("hifp_cap_cut"), pl.col("psn_cash_pay"))),
    "family_account_not_used": ("acct_mulaid_pay", pl.col("acct_mulaid_pay")),
    "tilt_assistance_omitted": ("maf_pay", pl.col("maf_tilt_pay")),
    "critical_illness_omitted": ("hifmi_pay", pl.col("hifmi_pay")),
    "rounded_down_to_yuan": ("hifp_pay", pl.col("hifp_pay") % 100),
}
RATES_BP = {"annual_cap_ignored": 5000, "family_account_not_used": 2000, "tilt_assistance_omitted": 1500,
            "critical_illness_omitted": 1000, "rounded_down_to_yuan": 150}


def reported_amounts(adjudicated: pl.DataFrame, seed: int,
                     rates_bp: dict[str, int] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(reported, errors) for adjudicated lines (Int64 fen; reversals included).

    reported: setl_id + the six DATA.md §2 reported columns (fen). errors: setl_id, kind, fund, reported,
    adjudicated (fen): one row per (line, fund) an institution got wrong, at most one kind per line."""
    rates = RATES_BP if rates_bp is None else rates_bp
    a = adjudicated
    base = a.select("setl_id", "orig_setl_id", *REPORTED[:2],
                    (pl.col("maf_pay") + pl.col("maf_tilt_pay")).alias("maf_pay"), *REPORTED[3:])
    draw = (pl.col("setl_id").hash(seed) % 10_000).cast(pl.Int64)
    kind = pl.lit(None, pl.String)
    for k, (_, move) in reversed(KINDS.items()):  # built inside out: the first listed kind wins
        kind = pl.when((move != 0) & (draw < rates.get(k, 0))).then(pl.lit(k)).otherwise(kind)
    picked = a.filter(pl.col("orig_setl_id").is_null()).with_columns(kind.alias("kind"))
    moves = pl.concat([picked.filter(pl.col("kind") == k).select("setl_id", "kind", pl.lit(fund).alias("fund"),
                                                                 move.cast(pl.Int64).alias("move"))
                       for k, (fund, move) in KINDS.items()])
    rep = base.join(moves, on="setl_id", how="left", maintain_order="left").with_columns(
        pl.col("move").fill_null(0))
    rep = rep.with_columns(
        [pl.when(pl.col("fund") == c).then(pl.col(c) - pl.col("move")).otherwise(pl.col(c)).alias(c)
         for c in REPORTED[:-1]]
        + [(pl.col("psn_cash_pay") + pl.col("move")).alias("psn_cash_pay")])
    # reversals report the negation of their original's report
    neg = rep.filter(pl.col("orig_setl_id").is_null()).select(
        pl.col("setl_id").alias("orig_setl_id"), *[(-pl.col(c)).alias(f"__n_{c}") for c in REPORTED])
    rep = rep.join(neg, on="orig_setl_id", how="left", maintain_order="left").with_columns(
        [pl.coalesce(f"__n_{c}", c).alias(c) for c in REPORTED])
    reported = rep.select("setl_id", *REPORTED)
    base_long = base.select("setl_id", *REPORTED)
    kinds = moves.select("setl_id", "kind")
    line_kind = a.select("setl_id", "orig_setl_id").join(kinds, on="setl_id", how="left").join(
        kinds.rename({"setl_id": "orig_setl_id", "kind": "orig_kind"}), on="orig_setl_id", how="left").select(
        "setl_id", pl.coalesce("kind", "orig_kind").alias("kind"))
    r = reported.unpivot(index="setl_id", variable_name="fund", value_name="reported")
    b = base_long.unpivot(index="setl_id", variable_name="fund", value_name="adjudicated")
    errors = (r.join(b, on=["setl_id", "fund"]).filter(pl.col("reported") != pl.col("adjudicated"))
              .join(line_kind, on="setl_id", how="left")
              .select("setl_id", "kind", "fund", "reported", "adjudicated").sort("setl_id", "fund"))
    return reported, errors
