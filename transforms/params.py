"""Dated parameters as frames, attached to lines by settlement date (POLICY §1.5).

The Policies object (flows/policies.py) is plain data; these functions turn one parameter
into a small frame `(since, [key], value)` and attach the value in force on each line's
date with an as-of join. A line whose parameter has no value on its date stops the run
with MissingParameter naming it (POLICY §1.8, §6) — never a guess.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl

from flows.policies import MissingParameter, Policies
from transforms.money import rate_to_bp

UNLIMITED = "none"  # an explicit "no limit" in a policy file, distinct from a missing value


def yuan_to_fen(v: Any) -> int:
    from decimal import Decimal

    d = Decimal(str(v)) * 100
    if d != d.to_integral_value():
        raise ValueError(f"{v!r} is not a whole number of fen")
    return int(d)


def dated_frame(policies: Policies, region: str, scheme: str, name: str,
                convert: Callable[[Any], Any] = lambda v: v, dtype: pl.DataType | None = None,
                keyed_by: str | None = None, key_dtype: pl.DataType = pl.String) -> pl.DataFrame:
    """The parameter's dated values as a frame (since, [keyed_by], value).

    A null value stays null here; `attach` turns a null hit into MissingParameter.
    """
    p = policies.parameter(region, scheme, name)
    rows: list[dict[str, Any]] = []
    for dv in p.values:
        if keyed_by is None:
            rows.append({"since": dv.since, "value": None if dv.value is None else convert(dv.value),
                         "assumption": dv.assumption})
        else:
            for k, v in (dv.value or {}).items():
                rows.append({"since": dv.since, keyed_by: str(k), "value": None if v is None else convert(v),
                             "assumption": dv.assumption})
    schema: dict[str, pl.DataType] = {"since": pl.Date}
    if keyed_by is not None:
        schema[keyed_by] = key_dtype
    schema["value"] = dtype if dtype is not None else pl.Object
    schema["assumption"] = pl.String
    return pl.DataFrame(rows, schema=schema, orient="row").sort("since")


def attach(lines: pl.DataFrame, policies: Policies, region: str, scheme: str, name: str, out: str,
           date_col: str = "setl_date", convert: Callable[[Any], Any] = lambda v: v,
           dtype: pl.DataType = pl.Int64, keyed_by: str | None = None,
           need: pl.Expr | None = None, used: set | None = None) -> pl.DataFrame:
    """Add column `out` = the parameter's value in force on each line's date (and key).

    `need` selects the lines that require the value; a missing value on such a line raises
    MissingParameter naming parameter and date. Other lines get null.
    """
    pf = dated_frame(policies, region, scheme, name, convert, dtype, keyed_by)
    pf = pf.rename({"value": out, "assumption": "__assumption"})
    # Only the date (and key) columns are sorted and joined: the lines keep their order and width, and
    # the value comes back as one column (sorting the whole wide frame per parameter dominated the run).
    keys = [date_col] if keyed_by is None else [date_col, keyed_by]
    narrow = lines.select(keys).with_row_index("__row").sort(date_col)
    if keyed_by is None:
        hit = narrow.join_asof(pf, left_on=date_col, right_on="since", strategy="backward")
    else:
        hit = narrow.join_asof(pf, left_on=date_col, right_on="since", by=keyed_by, check_sortedness=False,
                               strategy="backward")
    hit = hit.sort("__row")
    joined = lines.with_columns(hit[out], hit["__assumption"])
    need_mask = joined.select((need if need is not None else pl.lit(True)).alias("n"))["n"].fill_null(False)
    if used is not None:
        for a in joined.filter(need_mask)["__assumption"].unique().to_list():
            used.add((region, scheme, name, a))
    joined = joined.drop("__assumption")
    bad = joined.filter(need_mask & pl.col(out).is_null())
    if bad.height:
        first = bad.row(0, named=True)
        key = f"[{first[keyed_by]}]" if keyed_by else ""
        raise MissingParameter(region, scheme, f"{name}{key}", first[date_col])
    return joined


def rate(v: Any) -> int:
    return rate_to_bp(v)
