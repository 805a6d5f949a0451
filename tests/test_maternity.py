"""Maternity allowance days and the flexible workers' delivery subsidy (POLICY §4.6; docs/MATERNITY_INPUT.md)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from flows.policies import MissingParameter, load_policies
from tests.builders import person, registers, yuan
from tests.test_accounts import EMP_SCHEMA, emp
from transforms.maternity import EVENT_SCHEMA, MaternityEventError, maternity_benefits

POL = load_policies()
D = dt.date


def benefits(events, employment=()):
    r = registers([person(p, admdvs="420602", insutype="310") for p in ("W", "F")])
    r["employment"] = pl.DataFrame(list(employment), schema=EMP_SCHEMA, orient="row")
    ev = pl.DataFrame([dict(zip(EVENT_SCHEMA, e, strict=False)) for e in events],
                      schema={k: v for k, v in EVENT_SCHEMA.items()})
    return maternity_benefits(ev, r, POL)


@pytest.mark.parametrize("kind, babies, months, days", [
    ("natural", 1, None, 128), ("caesarean", 1, None, 143), ("natural", 2, None, 143),  # +15 per extra baby
    ("caesarean", 3, None, 173), ("miscarriage", None, 3, 15), ("miscarriage", None, 4, 42),
    ("miscarriage", None, 6, 42), ("miscarriage", None, 0, 15),
])
def test_allowance_days(kind, babies, months, days):
    out = benefits([("W", D(2025, 5, 1), kind, babies, months)])
    assert out["allowance_days"].to_list() == [days]


def test_late_miscarriage_is_missing_not_guessed():
    out = benefits([("W", D(2025, 5, 1), "miscarriage", None, 7)]).row(0, named=True)
    assert out["allowance_days"] is None and out["reason"].startswith("missing:")


def test_flexible_worker_subsidy_capped_at_2500_unless_the_husband_is_an_employee():
    flex = [emp("F", base=None, flexible=True, begin=D(2024, 1, 1)), emp("W", base=yuan(5000))]
    out = benefits([("F", D(2025, 5, 1), "natural", 1, None, yuan(3000), False),
                    ("F", D(2025, 6, 1), "caesarean", 1, None, yuan(1800), None),
                    ("F", D(2025, 7, 1), "natural", 1, None, yuan(3000), True),
                    ("F", D(2025, 8, 1), "miscarriage", None, 2, yuan(900), False),
                    ("W", D(2025, 5, 1), "natural", 1, None, yuan(3000), False)], flex)
    got = out.select("flexible", "subsidy_cap", "subsidy_amt").rows()
    assert got == [(True, yuan(2500), yuan(2500)), (True, yuan(2500), yuan(1800)), (True, None, None),
                   (True, None, None), (False, None, None)]
    assert "employee standard" in out["reason"][2]


def test_bad_events_and_dates():
    with pytest.raises(MaternityEventError, match="unknown maternity event kind"):
        benefits([("W", D(2025, 5, 1), "adoption", 1, None)])
    with pytest.raises(MaternityEventError, match="babies"):
        benefits([("W", D(2025, 5, 1), "natural", 0, None)])
    with pytest.raises(MissingParameter, match="maternity.allowance_days"):
        benefits([("W", D(2022, 5, 1), "natural", 1, None)])  # before the reform's values
