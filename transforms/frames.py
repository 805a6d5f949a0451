"""Frame helpers shared by the engine's stages."""

from __future__ import annotations

import polars as pl


def join_left(df: pl.DataFrame, right: pl.DataFrame, on: str | list[str]) -> pl.DataFrame:
    """`df.join(right, on=on, how="left", maintain_order="left")` for a `right` with at most one row per key.

    Only the key columns are joined and the right's other columns set beside the frame's: a join copies every
    column of the ~150-column line frame, this copies none (issue 7). A `right` with repeated keys is refused
    (the plain join would have repeated lines)."""
    keys = [on] if isinstance(on, str) else list(on)
    got = df.select(keys).join(right, on=keys, how="left", maintain_order="left")
    if got.height != df.height:
        raise ValueError(f"join_left: the right frame has several rows for a key of {keys}")
    return df.with_columns(got.drop(keys))
