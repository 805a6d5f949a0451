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


def version_index(dates: pl.Series, sinces: pl.Series) -> pl.Series:
    """For each date, the index of the version in force (`sinces` ascending): the last one starting on or
    before it; null before the first version or for a null date. A binary search per line: no sort, no join."""
    i = sinces.search_sorted(dates, side="right").cast(pl.Int64) - 1
    return pl.select(pl.when(dates.is_null() | (i < 0)).then(None).otherwise(i).alias("__v")).to_series()


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
    if keyed_by is None:
        v = version_index(lines[date_col], pf["since"])
        hit = pl.DataFrame([pf[out].gather(v), pf["__assumption"].gather(v)])
    else:
        # Only the date and key columns are sorted and joined: the lines keep their order and width, and
        # the value comes back as one column (sorting the whole wide frame per parameter dominated the run).
        hit = (lines.select(date_col, keyed_by).with_row_index("__row").sort(date_col)
               .join_asof(pf, left_on=date_col, right_on="since", by=keyed_by, check_sortedness=False,
                          strategy="backward")
               .sort("__row"))
    _require(lines, hit[out].is_not_null(), hit["__assumption"], need, used, region, scheme, name, date_col,
             keyed_by)
    return lines.with_columns(hit[out])


def _require(lines: pl.DataFrame, present: pl.Series, assumption: pl.Series, need: pl.Expr | None,
             used: set | None, region: str, scheme: str, name: str, date_col: str, keyed_by: str | None) -> None:
    """The lines `need` selects must have a value (else MissingParameter naming parameter, key and date);
    the assumptions (POLICY §9) of the values they use are recorded in `used`."""
    need_mask = lines.select((need if need is not None else pl.lit(True)).alias("n"))["n"].fill_null(False)
    if used is not None:
        for a in assumption.filter(need_mask).unique().to_list():
            used.add((region, scheme, name, a))
    bad = need_mask & ~present.fill_null(False)
    if bad.any():
        first = int(bad.arg_true()[0])
        key = f"[{lines[keyed_by][first]}]" if keyed_by else ""
        raise MissingParameter(region, scheme, f"{name}{key}", lines[date_col][first])


def in_dated_list(lines: pl.DataFrame, policies: Policies, region: str, scheme: str, name: str, col: str,
                  need: pl.Expr | None = None, used: set | None = None, date_col: str = "setl_date") -> pl.Series:
    """Whether each line's `col` (a value, or a list of values: any of them) is in the dated list parameter
    in force on its date. Each version's list is tested on its own lines (no list attached to every line);
    `need` and `used` as in `attach`."""
    pf = dated_frame(policies, region, scheme, name, convert=lambda v: [str(x) for x in (v or [])],
                     dtype=pl.List(pl.String))
    v = version_index(lines[date_col], pf["since"])
    _require(lines, pf["value"].is_not_null().gather(v), pf["assumption"].gather(v), need, used, region, scheme,
             name, date_col, None)
    column = lines[col]
    hit = pl.Series("hit", [False] * lines.height, dtype=pl.Boolean)
    for i, members in enumerate(pf["value"]):
        if members is None:
            continue
        members = pl.Series(members, dtype=pl.String)
        if column.dtype == pl.List(pl.String):
            found = column.list.eval(pl.element().is_in(members.implode())).list.any()
        else:
            found = column.is_in(members.implode())
        hit = hit | ((v == i).fill_null(False) & found.fill_null(False))
    return hit


def rate(v: Any) -> int:
    return rate_to_bp(v)
