"""Shards of a run: persons partitioned by family mutual-aid group (POLICY §4.5), so that no accumulator and
no personal account crosses a shard and each shard can be adjudicated on its own.

A family group is a connected component of the family bindings (authoriser ↔ user, whatever the dates: a
binding that starts mid-year still links the two accounts in that year); a person without bindings is a group
of one. Every accumulator is per person, every account movement stays inside a group, so the engine over a
shard gives each of its persons exactly what it gives them over the whole batch; `combine` puts the shards'
outputs back in the order of a single run. Pure polars: frames in, frames out.
"""

from __future__ import annotations

import polars as pl

# Registers and engine inputs that hold persons, and the columns that name them.
PERSON_COLUMNS = ("psn_no", "authoriser_psn_no", "user_psn_no")


def family_groups(registers: dict[str, pl.DataFrame], persons: pl.Series | None = None) -> pl.DataFrame:
    """psn_no → group (the smallest psn_no of its connected component of family_bindings).

    Covers every person of a register (persons, identities, employment, account_balances, …), both ends of
    every binding and `persons` (e.g. the lines' and the carried state's psn_no).
    """
    nodes = [f.select(pl.col("psn_no").cast(pl.String)) for f in registers.values() if "psn_no" in f.columns]
    if persons is not None:
        nodes.append(persons.rename("psn_no").to_frame())
    bind = registers.get("family_bindings")
    root: dict[str, str] = {}
    if bind is not None and bind.height:
        e = bind.select("authoriser_psn_no", "user_psn_no").drop_nulls().unique()
        nodes.append(pl.concat([e.select(pl.col(c).alias("psn_no")) for c in e.columns]))
        # Union-find over the bindings (graph bookkeeping, no money): near-linear in the bindings, where a
        # label propagation in polars needs as many rounds as the longest chain of bindings.
        def find(x: str) -> str:
            while root.get(x, x) != x:
                root[x] = root.get(root[x], root[x])  # path halving
                x = root[x]
            return x
        for a, b in e.iter_rows():
            ra, rb = find(a), find(b)
            if ra != rb:
                root[max(ra, rb)] = min(ra, rb)  # the smallest psn_no stays the root
        root = {x: find(x) for x in list(root)}
    labels = pl.DataFrame({"psn_no": list(root), "group": list(root.values())},
                          schema={"psn_no": pl.String, "group": pl.String})
    every = pl.concat(nodes).unique() if nodes else pl.DataFrame(schema={"psn_no": pl.String})
    return (every.join(labels, on="psn_no", how="left")
            .select("psn_no", pl.coalesce("group", "psn_no").alias("group")).sort("psn_no"))


def shard_of_persons(groups: pl.DataFrame, n: int) -> pl.DataFrame:
    """psn_no → shard in 0…n−1: groups dealt round-robin in psn_no order (balanced, deterministic)."""
    order = groups.select("group").unique().sort("group").with_row_index("__i")
    return groups.join(order, on="group").select("psn_no", (pl.col("__i") % n).cast(pl.Int32).alias("shard"))


def restrict(frame: pl.DataFrame | None, persons: pl.DataFrame) -> pl.DataFrame | None:
    """The rows of `frame` that belong to `persons` (psn_no frame): by every person column it has; a frame
    without person columns (institutions) is shared whole."""
    if frame is None:
        return None
    cols = [c for c in PERSON_COLUMNS if c in frame.columns]
    if not cols:
        return frame
    keep = pl.any_horizontal([pl.col(c).is_in(persons["psn_no"].implode()) for c in cols])
    return frame.filter(keep)


def split_by_shard(frame: pl.DataFrame | None, assign: pl.DataFrame, n: int) -> list[pl.DataFrame | None]:
    """[restrict(frame, persons of shard k) for k in 0…n−1] in one join and one partition (not n filters of a
    city's registers): a row goes to the shard of its persons (all of one family group); a frame without person
    columns is shared whole. `assign`: shard_of_persons."""
    if frame is None:
        return [None] * n
    cols = [c for c in PERSON_COLUMNS if c in frame.columns]
    if not cols:
        return [frame] * n
    tagged = (frame.with_columns(pl.coalesce([pl.col(c) for c in cols]).alias("__p"))
              .join(assign.rename({"psn_no": "__p"}), on="__p", how="left", maintain_order="left").drop("__p"))
    parts = tagged.partition_by("shard", as_dict=True, maintain_order=True, include_key=False)
    return [parts.get((k,), frame.clear()) for k in range(n)]


def combine(frames: list[pl.DataFrame], by: str = "psn_no") -> pl.DataFrame:
    """Shards' outputs as one frame in the order of a single run: every engine output is sorted by person
    first, and shards hold disjoint persons, so a stable sort by person restores it exactly."""
    frames = [f for f in frames if f is not None]
    if not frames:
        raise ValueError("nothing to combine")
    out = pl.concat(frames, how="diagonal_relaxed")
    return out.sort(by, maintain_order=True, nulls_last=False) if by in out.columns else out
