"""pandera models of the frames the engine writes (DATA.md §4), in engine units (Int64 fen).

Validated eagerly before a month is persisted: a frame that breaks its model never reaches DuckDB.
"""

from __future__ import annotations

import pandera.polars as pa
import polars as pl

LEDGERS = ["outpatient_pool", "two_disease", "chronic", "special_drug", "inpatient", "day_surgery", "maternity",
           "pharmacy"]


class Adjudicated(pa.DataFrameModel):
    """One row per settlement."""

    setl_id: str = pa.Field(unique=True)
    psn_no: str
    month: str = pa.Field(str_matches=r"^\d{4}-\d{2}$")
    region: str = pa.Field(nullable=True)
    insutype: str = pa.Field(isin=["310", "390"])
    ledger: str = pa.Field(isin=LEDGERS)
    medfee_sumamt: pl.Int64
    inscp_scp_amt: pl.Int64
    preselfpay_amt: pl.Int64
    offsite_preselfpay_amt: pl.Int64
    act_pay_dedc: pl.Int64
    hifp_pay: pl.Int64
    pool_prop_selfpay: pl.Int64
    hifmi_pay: pl.Int64
    maf_pay: pl.Int64
    maf_tilt_pay: pl.Int64
    hosp_part_amt: pl.Int64
    fund_pay_sumamt: pl.Int64
    psn_part_amt: pl.Int64
    acct_pay: pl.Int64
    acct_mulaid_pay: pl.Int64
    psn_cash_pay: pl.Int64
    reason_codes: str
    explanation: str

    class Config:
        strict = False

    @pa.dataframe_check
    def amounts_add_up(cls, data) -> pl.LazyFrame:
        """fund_pay_sumamt + hosp_part_amt + acct_pay + acct_mulaid_pay + psn_cash_pay = medfee_sumamt."""
        return data.lazyframe.select(
            (pl.col("fund_pay_sumamt") + pl.col("hosp_part_amt") + pl.col("acct_pay") + pl.col("acct_mulaid_pay")
             + pl.col("psn_cash_pay")) == pl.col("medfee_sumamt")
        )

    @pa.dataframe_check
    def funds_sum(cls, data) -> pl.LazyFrame:
        return data.lazyframe.select(
            (pl.col("hifp_pay") + pl.col("hifmi_pay") + pl.col("maf_pay") + pl.col("maf_tilt_pay"))
            == pl.col("fund_pay_sumamt"))


class Accumulators(pa.DataFrameModel):
    """One row per person × year × accumulator: the state after the month."""

    psn_no: str
    year: pl.Int32
    name: str
    value: pl.Int64

    class Config:
        strict = True
        unique = ["psn_no", "year", "name"]


class MaternityBenefits(pa.DataFrameModel):
    """One row per maternity event of the month (POLICY §4.6, docs/MATERNITY_INPUT.md)."""

    source_file: str
    source_row: pl.Int64 = pa.Field(ge=1)
    psn_no: str
    event_date: pl.Date
    kind: str = pa.Field(isin=["natural", "caesarean", "miscarriage"])
    babies: pl.Int32 = pa.Field(nullable=True)
    gestation_months: pl.Int32 = pa.Field(nullable=True)
    delivery_cost: pl.Int64 = pa.Field(nullable=True, ge=0)
    spouse_employee: pl.Boolean = pa.Field(nullable=True)
    allowance_days: pl.Int32 = pa.Field(nullable=True, gt=0)
    flexible: pl.Boolean
    subsidy_cap: pl.Int64 = pa.Field(nullable=True, ge=0)
    subsidy_amt: pl.Int64 = pa.Field(nullable=True, ge=0)
    reason: str

    class Config:
        strict = True
