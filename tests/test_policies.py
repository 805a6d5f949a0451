"""The dated parameter files of policies/ (POLICY §1.5, §9; policies/README.md).

Every parameter and every dated value names its source and its POLICY §; every assumption is
one of POLICY §9 and every §9 assumption is carried by a parameter; the numbers that matter
are the ones of the sources; a missing (null) value stops a lookup with an error naming it.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.policies import MissingParameter, assumptions_in, load_policies
from transforms.money import apply_rate, rate_to_bp

# The repository's own files (not YIBAO_POLICIES or any other override).
ROOT = Path(__file__).resolve().parent.parent / "policies"
README = ROOT / "README.md"

ASSUMPTIONS = {f"A-{n}" for n in range(1, 25)} | {"A-30"}  # POLICY §9: A-1 … A-24; A-30 (revision 3, §1.14)
# Assumptions of §9 that are switches handled in code rather than parameters. None today: every
# one is carried by a parameter (see policies/README.md). Add an id here, with the code path that
# implements it, only if it stops being a parameter.
SWITCHES_IN_CODE: dict[str, str] = {}

IDENTITIES = {  # DATA.md §3 identities
    "tekun", "orphan", "dibao", "fanpin", "dibao_edge", "monitor_unstable", "monitor_edge",
    "monitor_sudden", "illness_poor", "other_hardship", "disabled", "mental", "family_planning",
    "poverty_exit", "veteran",
}
LEDGERS = {"outpatient_pool", "two_disease", "chronic", "special_drug", "inpatient", "day_surgery",
           "maternity", "pharmacy"}  # DATA.md §4 adjudicated.ledger
UNLIMITED = "none"


def _files() -> list[Path]:
    return sorted(ROOT.rglob("*.yaml"))


def _raw() -> list[tuple[str, str, dict, Any, Any]]:
    """(file, parameter, spec, since, dated value as written) for every dated value of every file."""
    out = []
    for f in _files():
        doc = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        for pname, spec in doc.items():
            for since, v in ((spec or {}).get("values") or {}).items():
                out.append((str(f.relative_to(ROOT)), pname, spec, since, v))
    return out


def _note(v: Any) -> dict:
    return v if isinstance(v, dict) and "value" in v else {"value": v}


def _leaves(v: Any):
    if isinstance(v, dict):
        for x in v.values():
            yield from _leaves(x)
    elif isinstance(v, list):
        for x in v:
            yield from _leaves(x)
    else:
        yield v


@pytest.fixture(scope="module")
def pol():
    return load_policies(ROOT)


def val(pol, region: str, scheme: str, name: str, on: str) -> Any:
    return pol.value(region, scheme, name, dt.date.fromisoformat(on))


# --- shape, sources, assumptions --------------------------------------------------------------

def test_files_are_region_scheme_topic_and_load(pol):
    assert _files(), "no policy files"
    for f in _files():
        rel = f.relative_to(ROOT)
        assert len(rel.parts) == 3, rel
        assert rel.parts[0] in {"suizhou", "xiangyang"} and rel.parts[1] in {"resident", "employee"}, rel
    assert len(pol.files) == len(_files())


def test_every_parameter_has_description_unit_and_dated_values():
    for f in _files():
        doc = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        for pname, spec in doc.items():
            where = f"{f.relative_to(ROOT)}: {pname}"
            assert re.fullmatch(r"[a-z][a-z0-9_]*", pname), where
            assert isinstance(spec, dict), where
            assert str(spec.get("description") or "").strip(), f"{where} has no description"
            assert str(spec.get("unit") or "").strip(), f"{where} has no unit"
            values = spec.get("values")
            assert isinstance(values, dict) and values, f"{where} has no dated values"
            for since in values:
                assert isinstance(since, dt.date), f"{where}: {since!r} is not a date (YYYY-MM-DD)"


def test_every_value_has_source_and_policy():
    for file, pname, spec, since, v in _raw():
        note = _note(v)
        for field in ("source", "policy"):
            text = str(note.get(field, spec.get(field)) or "").strip()
            assert text, f"{file}: {pname} value of {since} has no {field}"
        policy = str(note.get("policy", spec.get("policy")))
        assert "§" in policy, f"{file}: {pname} policy {policy!r} names no §"


def test_every_assumption_is_one_of_policy_section_9():
    for file, pname, spec, since, v in _raw():
        note = _note(v)
        for where in (spec, note):
            assert "assumed" not in where, f"{file}: {pname}: write `assumption: A-n`, not `assumed`"
            a = where.get("assumption")
            if a is not None:
                assert a in ASSUMPTIONS, f"{file}: {pname} ({since}) carries unknown assumption {a!r}"


def test_every_parameter_assumption_of_section_9_is_carried(pol):
    carried = assumptions_in(pol)
    assert not set(SWITCHES_IN_CODE) - ASSUMPTIONS
    missing = ASSUMPTIONS - set(SWITCHES_IN_CODE) - set(carried)
    assert not missing, f"assumptions of POLICY §9 carried by no parameter: {sorted(missing)}"


def test_assumptions_in_maps_ids_to_parameter_names(pol):
    carried = assumptions_in(pol)
    assert list(carried) == sorted(carried, key=lambda a: int(a[2:]))
    assert carried["A-8"] == ["suizhou/resident/assistance.tilt_annual_cap",
                              "suizhou/resident/assistance.tilt_threshold"]
    assert "xiangyang/employee/outpatient_pool.fund_rate_in_service" in carried["A-10"]
    assert "suizhou/resident/chronic.annual_limit_per_disease" in carried["A-21"]
    assert "xiangyang/employee/chronic.annual_limit_per_disease" in carried["A-21"]
    for names in carried.values():
        assert names == sorted(names)
        for n in names:
            region, scheme, name = n.split("/")
            assert pol.has(region, scheme, name)
    # a retired rate is sourced; only the in-service rates are A-10
    assert all("fund_rate_retired" not in n for names in carried.values() for n in names)


def test_readme_lists_every_assumption_with_its_parameters(pol):
    text = README.read_text(encoding="utf-8")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| (A-\d+) \|.*$", text, flags=re.M)}
    for a, names in assumptions_in(pol).items():
        assert a in rows, f"README has no row for {a}"
        for n in names:
            assert n in rows[a], f"README row {a} does not list {n}"
    assert "## Disagreements with the seeds" in text


# --- value forms: rates, money, "none" vs missing ------------------------------------------------

def test_rates_are_percent_strings_within_0_and_100():
    for file, pname, _spec, since, v in _raw():
        for leaf in _leaves(_note(v)["value"]):
            if isinstance(leaf, str) and leaf.endswith("%"):
                bp = rate_to_bp(leaf)
                assert 0 <= bp <= 10_000, f"{file}: {pname} ({since}) rate {leaf}"
            if isinstance(leaf, float):
                pytest.fail(f"{file}: {pname} ({since}) has a float {leaf!r}; write rates as 'x%'")


def test_money_values_are_whole_yuan_or_fen_strings_or_none():
    for file, pname, spec, since, v in _raw():
        if not str(spec["unit"]).startswith("yuan"):
            continue
        for leaf in _leaves(_note(v)["value"]):
            ok = (leaf is None or leaf == UNLIMITED or (isinstance(leaf, int) and not isinstance(leaf, bool)
                  and leaf >= 0) or (isinstance(leaf, str) and re.fullmatch(r"\d+\.\d{2}", leaf)))
            assert ok, f"{file}: {pname} ({since}) money value {leaf!r}"


def test_unlimited_is_spelled_none_and_never_confused_with_missing():
    for file, pname, _spec, since, v in _raw():
        for leaf in _leaves(_note(v)["value"]):
            if isinstance(leaf, str) and leaf.lower() in {"none", "null", "unlimited", "no limit", "无"}:
                assert leaf == UNLIMITED, f"{file}: {pname} ({since}) writes {leaf!r}; use 'none' or null"


def test_ledgers_and_identities_are_known_names(pol):
    for (region, scheme, name), p in pol.params.items():
        for dv in p.values:
            if name.endswith("ledgers") and dv.value is not None:
                assert set(dv.value) <= LEDGERS, (region, scheme, name, dv.value)
            if (name.endswith("identities") or name in {"identities.s1", "identities.s2", "identities.s3"}) \
                    and isinstance(dv.value, list):
                assert set(dv.value) <= IDENTITIES, (region, scheme, name, dv.value)
            if name in {"contributions.help_rate", "contributions.help_amount",
                        "assistance.class_by_identity"} and dv.value is not None:
                assert set(dv.value) <= IDENTITIES, (region, scheme, name, dv.value)


# --- real numbers ------------------------------------------------------------------------------

S, R = ("suizhou", "resident"), ("xiangyang", "employee")
XR = ("xiangyang", "resident")


@pytest.mark.parametrize(("where", "name", "on", "key", "expected"), [
    (S, "inpatient.deductible_in_city", "2025-06-01", 2, 500),
    (S, "inpatient.deductible_in_city", "2025-06-01", 3, 900),
    (S, "inpatient.fund_rate", "2025-06-01", 2, "80%"),
    (S, "annual_cap.hifp", "2025-06-01", None, 150000),
    (S, "contributions.standard_total", "2025-06-01", None, 1070),
    (S, "contributions.fiscal_subsidy", "2025-06-01", None, 670),
    (S, "contributions.personal_standard", "2025-06-01", None, 400),
    (S, "contributions.help_rate", "2025-06-01", "dibao", "90%"),
    (S, "contributions.help_rate", "2025-06-01", "monitor_edge", "50%"),
    (S, "contributions.help_rate", "2025-06-01", "veteran", "100%"),
    (S, "contributions.help_amount", "2022-03-01", "poverty_exit", 160),
    (S, "contributions.help_amount", "2023-12-31", "poverty_exit", 70),
    (S, "contributions.help_amount", "2024-01-01", "poverty_exit", 50),
    (S, "contributions.help_amount", "2025-01-01", "poverty_exit", 0),
    (S, "outpatient_pool.fund_rate", "2025-06-01", 1, "50%"),
    (S, "outpatient_pool.annual_cap", "2025-06-01", None, 350),
    (S, "outpatient_pool.daily_limit", "2025-06-01", "village_clinic", 30),
    (S, "outpatient_pool.daily_limit", "2025-06-01", "township", 50),
    (S, "two_disease.annual_cap", "2025-06-01", "hypertension", 450),
    (S, "two_disease.annual_cap", "2025-06-01", "diabetes", 500),
    (S, "two_disease.annual_cap", "2025-06-01", "both", 550),
    (S, "chronic.fund_rate", "2025-06-01", "chronic", "60%"),
    (S, "chronic.fund_rate", "2025-06-01", "special", "70%"),
    (S, "chronic.fund_rate", "2025-06-01", "special_dialysis", "80%"),
    (S, "chronic.special_drug_rate", "2025-06-01", None, "50%"),
    (S, "chronic.deductible", "2025-06-01", None, 0),
    (S, "chronic.annual_limit_per_disease", "2025-06-01", "chronic", 10000),
    (S, "chronic.annual_limit_per_disease", "2025-06-01", "special", UNLIMITED),
    (S, "chronic.annual_limit_per_disease", "2025-06-01", "special_drug", UNLIMITED),
    (S, "critical_illness.threshold", "2025-06-01", "s1", 6000),
    (S, "critical_illness.threshold", "2025-06-01", "others", 12000),
    (S, "critical_illness.annual_cap", "2025-06-01", "others", 350000),
    (S, "critical_illness.annual_cap", "2025-06-01", "s1", UNLIMITED),
    (S, "assistance.basic_deductible", "2025-06-01", 3, 1800),
    (S, "assistance.basic_deductible", "2025-06-01", 4, 5000),
    (S, "assistance.basic_rate", "2025-06-01", 1, "100%"),
    (S, "assistance.basic_rate", "2025-06-01", 2, "70%"),
    (S, "assistance.basic_annual_cap", "2025-06-01", None, 40000),
    (S, "assistance.class_by_identity", "2025-06-01", "illness_poor", 4),
    (S, "assistance.tilt_annual_cap", "2025-06-01", 3, 80000),
    (S, "assistance.tilt_annual_cap", "2025-06-01", 1, UNLIMITED),
    (S, "assistance.tilt_rate", "2025-06-01", "in_city", "80%"),
    (S, "assistance.tilt_rate", "2025-06-01", "out_of_city_in_province", "70%"),
    (S, "assistance.application_threshold", "2025-06-01", None, 6000),
    (S, "assistance.application_rate", "2025-06-01", None, "60%"),
    (S, "assistance.application_cap", "2025-06-01", None, 40000),
    (S, "assistance.application_window_months", "2025-06-01", None, 12),
    (R, "outpatient_pool.deductible", "2023-03-01", "retired", 400),
    (R, "outpatient_pool.deductible", "2023-03-01", "in_service", 500),
    (R, "outpatient_pool.annual_cap", "2023-03-01", "in_service", 2700),
    (R, "outpatient_pool.annual_cap", "2023-03-01", "retired", 3100),
    (R, "outpatient_pool.fund_rate_retired", "2023-03-01", 3, "60%"),
    (R, "outpatient_pool.fund_rate_in_service", "2023-03-01", 1, "70%"),
    (R, "outpatient_pool.flexible_waiting_months", "2023-03-01", None, 6),
    (R, "inpatient.deductible_in_city", "2023-03-01", 3, 900),
    (R, "inpatient.fund_rate", "2023-03-01", 1, "92%"),
    (R, "annual_cap.hifp", "2023-03-01", None, 550000),
    (R, "contributions.flexible_base", "2023-06-30", None, 3450),
    (R, "account.credit_retired_by_reform", "2022-12-01", None, "4%"),
    (R, "account.credit_retired_by_reform", "2023-01-01", None, 95),
    (R, "account.credit_retired_backpay_pooling_only", "2023-01-01", None, 0),
    (R, "family_aid.max_users_per_authoriser", "2023-03-01", None, 6),
    (R, "maternity.allowance_days", "2023-03-01", "caesarean", 143),
    (R, "maternity.antenatal_exam_limit", "2023-03-01", None, 500),
    (R, "maternity.flexible_delivery_subsidy_max", "2023-03-01", None, 2500),
    (XR, "annual_cap.hifp", "2023-03-01", None, 400000),
    (XR, "outpatient_pool.annual_cost_limit", "2023-03-01", None, 800),
    (XR, "chronic.deductible", "2023-03-01", None, 600),
    (XR, "chronic.fund_rate", "2023-03-01", "special_dialysis", "80%"),
    (XR, "assistance.basic_annual_cap", "2023-03-01", None, 80000),
    (XR, "assistance.tilt_annual_cap", "2023-03-01", None, 50000),
])
def test_real_numbers(pol, where, name, on, key, expected):
    v = val(pol, *where, name, on)
    assert (v if key is None else v[key]) == expected


def test_dibao_deductible_exemption_in_2025_not_in_2026(pol):
    assert "dibao" in val(pol, *S, "inpatient.deductible_exempt_identities", "2025-12-31")
    assert "dibao" not in val(pol, *S, "inpatient.deductible_exempt_identities", "2026-01-01")


def test_outpatient_pooling_of_employees_starts_on_2022_12_31(pol):
    assert val(pol, *R, "outpatient_pool.in_force", "2022-12-30") is False
    assert val(pol, *R, "outpatient_pool.in_force", "2022-12-31") is True


def test_critical_illness_bands_are_contiguous_from_the_threshold(pol):
    bands = val(pol, *S, "critical_illness.bands", "2025-06-01")
    thresholds = val(pol, *S, "critical_illness.threshold", "2025-06-01")
    assert set(bands) == set(thresholds) == {"s1", "others"}
    for group, bs in bands.items():
        assert bs[0]["from"] == thresholds[group]
        for a, b in zip(bs, bs[1:], strict=False):
            assert a["to"] == b["from"]
        assert bs[-1]["to"] == UNLIMITED
    assert [b["rate"] for b in bands["s1"]] == ["65%", "70%", "80%"]
    assert [b["rate"] for b in bands["others"]] == ["60%", "65%", "75%"]


def test_identity_blocks_partition_the_identities(pol):
    s1, s2, s3 = (set(val(pol, *S, f"identities.{b}", "2025-06-01")) for b in ("s1", "s2", "s3"))
    assert s1 | s2 | s3 == IDENTITIES and not (s1 & s2 or s1 & s3 or s2 & s3)
    assert set(val(pol, *S, "critical_illness.favoured_identities", "2025-06-01")) == s1
    assert set(val(pol, *S, "identities.rural_low_income_identities", "2025-06-01")) == s1 | s2 | {"poverty_exit"}
    classes = val(pol, *S, "assistance.class_by_identity", "2025-06-01")
    no_help = set(val(pol, *S, "assistance.no_assistance_identities", "2025-06-01"))
    assert set(classes) | no_help == IDENTITIES and not set(classes) & no_help
    assert {i for i, c in classes.items() if c in (1, 2)} == s1


def test_tilt_threshold_reading_a8(pol):
    t = val(pol, *S, "assistance.tilt_threshold", "2025-06-01")
    assert {c: (x["in_city"], x["out_of_city_in_province"]) for c, x in t.items()} == {
        1: (5000, 5000), 2: (5000, 5000), 3: (7000, 7000), 4: (7000, 7000)}
    assert pol.at(*S, "assistance.tilt_threshold", dt.date(2025, 6, 1)).assumption == "A-8"


def test_worked_examples_from_the_parameters(pol):
    on = dt.date(2023, 3, 1)
    # E4: flexible worker, base 3,450: combined 352 / month, pooling-only 283 / month
    base = val(pol, *R, "contributions.flexible_base", "2023-03-01") * 100
    extra = val(pol, *R, "contributions.flexible_critical_illness_per_month", "2023-03-01") * 100
    assert apply_rate(base, rate_to_bp(pol.value(*R, "contributions.flexible_rate_combined", on))) + extra == 35200
    assert apply_rate(base, rate_to_bp(pol.value(*R, "contributions.flexible_rate_pooling_only", on))) + extra == 28300
    # E5: in service, age 30: 110.40 before the reform, 69.00 after
    before = pol.value(*R, "account.credit_in_service_under_45", dt.date(2022, 12, 1))
    after = pol.value(*R, "account.credit_in_service_under_45", dt.date(2023, 1, 1))
    assert (apply_rate(base, rate_to_bp(before)), apply_rate(base, rate_to_bp(after))) == (11040, 6900)
    # E1: retired, 2,000 class A at level 1: (2000 − 400) × 80% = 1,280
    ded = pol.value(*R, "outpatient_pool.deductible", on)["retired"] * 100
    assert apply_rate(200000 - ded, rate_to_bp(pol.value(*R, "outpatient_pool.fund_rate_retired", on)[1])) == 128000
    # E6: Suizhou level-2 stay, 20,000 class A: (20000 − 500) × 80% = 15,600; burden 4,400 < 12,000
    on25 = dt.date(2025, 6, 1)
    ded2 = pol.value(*S, "inpatient.deductible_in_city", on25)[2] * 100
    hifp = apply_rate(2_000_000 - ded2, rate_to_bp(pol.value(*S, "inpatient.fund_rate", on25)[2]))
    assert hifp == 1_560_000
    assert 2_000_000 - hifp < pol.value(*S, "critical_illness.threshold", on25)["others"] * 100
    # E7: dibao 2025: personal 40, government 360
    personal = pol.value(*S, "contributions.personal_standard", on25) * 100
    help_ = apply_rate(personal, rate_to_bp(pol.value(*S, "contributions.help_rate", on25)["dibao"]))
    assert (personal - help_, help_) == (4000, 36000)


# --- missing values ------------------------------------------------------------------------------

@pytest.mark.parametrize(("where", "name", "on"), [
    (XR, "inpatient.deductible_in_city", "2025-06-01"),
    (XR, "inpatient.fund_rate", "2024-02-01"),
    (XR, "critical_illness.threshold", "2025-06-01"),
    (XR, "assistance.basic_rate", "2025-06-01"),
    (S, "contributions.personal_standard", "2024-06-01"),
    (S, "contributions.standard_total", "2022-01-01"),
    (R, "contributions.flexible_base", "2023-07-01"),
    (R, "chronic.special_drug_rate", "2023-03-01"),
    (R, "account.credit_in_service_pooling_only", "2022-06-01"),
])
def test_null_value_raises_missing_parameter_naming_it(pol, where, name, on):
    with pytest.raises(MissingParameter) as e:
        val(pol, *where, name, on)
    assert f"{where[0]}/{where[1]}/{name}" in str(e.value)
    assert e.value.name == name


def test_null_is_missing_but_none_is_a_value(pol):
    assert pol.value(*S, "critical_illness.annual_cap", dt.date(2025, 6, 1))["s1"] == UNLIMITED
    assert pol.value(*S, "contributions.personal_standard", dt.date(2025, 1, 1)) == 400
    with pytest.raises(MissingParameter, match="value is missing"):
        pol.value(*S, "contributions.personal_standard", dt.date(2024, 12, 31))


def test_before_the_first_value_is_missing_too(pol):
    with pytest.raises(MissingParameter, match="no value takes effect"):
        pol.value(*S, "critical_illness.threshold", dt.date(2024, 12, 31))
