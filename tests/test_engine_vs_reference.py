"""The vectorized engine and the plain-Python reference adjudicator agree to the fen (non-negotiable 4)."""

from __future__ import annotations

import datetime as dt

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.policies import load_policies
from tests.builders import (
    INST_SCHEMA,
    INSTITUTIONS,
    examples,
    line,
    lines,
    month_by_month,
    person,
    registers,
    reversal_of,
)
from transforms.engine import MONEY_COLUMNS, adjudicate
from transforms.reference.adjudicate import adjudicate_reference

POL = load_policies()
IDENTITIES = ["tekun", "orphan", "dibao", "fanpin", "dibao_edge", "monitor_unstable", "illness_poor",
              "disabled", "mental", "family_planning", "poverty_exit", "veteran",
              "monitor_edge", "monitor_sudden", "other_hardship"]  # §3.9: every assistance class and a non-class
MED_TYPES = ["11", "13", "21", "22", "24", "28", "52", "51", "41", "9901"]
COUNTIES = ["421302", "421321", "421381"]
# §3.2–§3.3: certifications (kind, ICD-10) — two-disease ones, chronic/special ones inside and outside the
# A-23 ranges, a special-drug qualification; extra institutions: a pharmacy (no level) and an out-of-city
# village clinic; some out-of-city level-1/2 institutions get cross-region outpatient settlement.
CERTS = [("hypertension", "I10"), ("diabetes", "E11.9"), ("chronic", "I11.9"), ("special", "E10"),
         ("chronic", "J44"), ("special_drug", "E11"), ("chronic", "I16")]
# §3.4: chronic/special outpatient and special drugs — every special kind, and drugs whose ICD-10 category meets
# a special disease (N18, E10) or none; lines of CERT_MED_TYPES are claimed under a certification valid on the date
CHRONIC_CERTS = [("special_transplant", "Z94.0"), ("special_dialysis", "N18.5"), ("special_mental", "F20.0"),
                 ("special", "N18.0"), ("special_drug", "N18.9"), ("special_drug", "E10.2"), ("special_drug", "M05"),
                 ("chronic", "I25.1"), ("chronic", "J44.1"), ("chronic", "I25.1")]
CERTS += CHRONIC_CERTS[:7]
MED_TYPES += ["14", "140104", "140201"]
CERT_MED_TYPES = ("14", "140104", "140201", "41")
DIAGNOSES = [None, "N18.5", "E10.9", "Z94.0", "J44.1", "F20.0"]
EXTRA_INSTITUTIONS = [("PH1", "药房", "pharmacy", None, "pharmacy", "421302", False),
                      ("XGV", "卫生室", "hospital", "1", "village_clinic", "420602", False)]
MAY_ENABLE = ["WH1", "WH2", "XGV"]
HOSPITALS = [c for c, *_ in INSTITUTIONS] + ["XGV"]
COMPARED = [c for c in MONEY_COLUMNS if c not in ("cls_a_amt", "cls_b_amt", "fulamt_ownpay_amt", "overlmt_selfpay")]


@st.composite
def population(draw):
    n = draw(st.integers(1, 4))
    persons, idents, rows, certs = [], [], [], []
    enabled = draw(st.lists(st.sampled_from(MAY_ENABLE), unique=True))
    for i in range(n):
        pid = f"P{i}"
        persons.append(person(pid, admdvs=draw(st.sampled_from(COUNTIES)), rural=draw(st.booleans())))
        for ident in draw(st.lists(st.sampled_from(IDENTITIES), max_size=2, unique=True)):
            begin = dt.date(2025, 1, 1) + dt.timedelta(days=draw(st.integers(-30, 500)))
            end = draw(st.one_of(st.none(), st.just(begin + dt.timedelta(days=draw(st.integers(0, 300))))))
            idents.append((pid, ident, begin, end))
        codes = []
        for j, (kind, codg) in enumerate(draw(st.lists(st.sampled_from(CERTS), max_size=3))):
            begin = dt.date(2025, 1, 1) + dt.timedelta(days=draw(st.integers(-30, 400)))
            end = draw(st.one_of(st.none(), st.just(begin + dt.timedelta(days=draw(st.integers(0, 300))))))
            certs.append((pid, f"{pid}C{j}", codg, kind, begin, end))
            codes.append(f"{pid}C{j}")
        mine = []
        for _ in range(draw(st.integers(0, 8))):
            day = dt.datetime(2025, 1, 1, 8) + dt.timedelta(days=draw(st.integers(0, 500)),
                                                            minutes=draw(st.integers(0, 600)))
            size = draw(st.sampled_from(["tiny", "small", "big"]))
            a = draw(st.integers(0, {"tiny": 12_000, "small": 300_000, "big": 20_000_000}[size]))
            b = draw(st.integers(0, {"tiny": 4_000, "small": 50_000, "big": 3_000_000}[size]))
            med_type = draw(st.sampled_from(MED_TYPES))
            inst = draw(st.sampled_from(HOSPITALS + (["PH1"] if med_type in ("41", "9901") else [])))
            if mine and draw(st.booleans()):  # another visit on the same day, often at the same place
                day = mine[-1]["setl_time"] + dt.timedelta(minutes=draw(st.integers(1, 120)))
                if mine[-1]["setl_time"].date() != day.date():
                    day = mine[-1]["setl_time"] + dt.timedelta(seconds=1)
                if draw(st.booleans()) and (mine[-1]["fixmedins_code"] != "PH1" or med_type in ("41", "9901")):
                    inst = mine[-1]["fixmedins_code"]
            mine.append(line(pid, day.strftime("%Y-%m-%d %H:%M:%S"), inst,
                             med_type=med_type, a=a, b=b,
                             own=draw(st.integers(0, 50_000)), over=draw(st.integers(0, 5_000)),
                             offsite_type=draw(st.sampled_from([None, "101", "903"])),
                             is_emergency_rescue=draw(st.booleans()),
                             trauma_report_no=draw(st.sampled_from([None, "R1"])),
                             dise_cert_code=draw(st.sampled_from([None, *codes])) if med_type == "9901" else None,
                             presc_fixmedins_code=draw(st.sampled_from([None, "SZ1", "SZ3"]))
                             if inst == "PH1" else None))
            if med_type == "22" and draw(st.booleans()):  # §3.6 A-28: a trauma stay released by a later line
                release = mine[-1]["setl_time"] + dt.timedelta(days=draw(st.integers(0, 20)), minutes=5)
                mine.append(line(pid, release.strftime("%Y-%m-%d %H:%M:%S"), inst, med_type="22",
                                 a=draw(st.integers(0, 300_000)), own=draw(st.integers(0, 80_000)),
                                 over=draw(st.integers(0, 20_000)), mdtrt_id=mine[-1]["mdtrt_id"],
                                 trauma_report_no=draw(st.sampled_from([None, "R1", "R1"]))))
            # §3.5/A-5, §1.12: a second line of the same stay or visit, in the same month or a later one
            if len(mine) > 1 and draw(st.integers(0, 4)) == 0:
                mine[-1]["mdtrt_id"] = mine[-2]["mdtrt_id"]
            if med_type in CERT_MED_TYPES:  # §3.4: validation lets only a certification valid on the date through
                valid = [c[1] for c in certs if c[0] == pid and _cert_valid(c, day.date())]
                code = None
                if valid and draw(st.booleans()):
                    code = draw(st.sampled_from(valid))
                elif draw(st.integers(0, 3)):  # a certification granted before this line (some lapse later)
                    first, codg = draw(st.sampled_from(CHRONIC_CERTS))
                    extra = ["special", "special_dialysis"] if first == "special_drug" else []  # a drug's disease
                    for k, kind in enumerate([first] + [x for x in extra if draw(st.booleans())]):
                        begin = day.date() - dt.timedelta(days=draw(st.integers(0, 200)))
                        end = draw(st.one_of(st.none(), st.just(day.date() + dt.timedelta(days=draw(st.integers(0, 200))))))
                        certs.append((pid, f"{pid}K{len(certs)}", codg, kind, begin, end))
                        code = certs[-1][1] if k == 0 else code
                mine[-1].update(dise_cert_code=code, dise_codg=draw(st.sampled_from(DIAGNOSES)))
        if draw(st.integers(0, 2)) == 0:
            mine += draw(near_annual_cap(pid, codes))
        rows += mine
        rows += draw(merged_stays(pid, HOSPITALS))
        reversed_ids = {m["orig_setl_id"] for m in mine if m.get("orig_setl_id")}
        candidates = [m for m in mine if not m.get("orig_setl_id") and m["setl_id"] not in reversed_ids
                      and not settles_or_merged(m, mine)]
        if candidates and draw(st.booleans()):
            orig = draw(st.sampled_from(candidates))
            later = orig["setl_time"] + dt.timedelta(days=draw(st.integers(0, 40)), seconds=1)
            cert = next((c for c in certs if c[1] == orig["dise_cert_code"]), None)
            if orig["med_type"] not in CERT_MED_TYPES or cert is None or _cert_valid(cert, later.date()):
                rows.append(reversal_of(orig, later.strftime("%Y-%m-%d %H:%M:%S")))  # else CERT_INVALID
    return persons, idents, rows, (certs, enabled)


@st.composite
def near_annual_cap(draw, pid: str, codes: list[str]) -> list[dict]:
    """§3.2 with §3.7: a stay that takes the basic fund close to (or past) its 150,000 cap, then outpatient-pooling
    and two-disease lines (some on one day, at one institution) that the annual cap cuts — the 350 cap, the
    daily limits and the two-disease ceiling count only what was paid; the stay may be reversed in the batch."""
    start = dt.datetime(2025, 1, 1, 8) + dt.timedelta(days=draw(st.integers(0, 300)))
    # SZ2, 80% after 500: A 187,000–188,300 pays 149,200–150,240
    out = [line(pid, start.strftime("%Y-%m-%d %H:%M:%S"), "SZ2", med_type="21",
                a=draw(st.integers(18_700_000, 18_830_000)))]
    t = start
    for _ in range(draw(st.integers(1, 6))):
        t += dt.timedelta(minutes=draw(st.sampled_from([1, 30, 60 * 24, 60 * 24 * 20])))
        med_type = draw(st.sampled_from(["11", "11", "13", "51", "9901"]))
        inst = draw(st.sampled_from(["SZ1", "SZV", "SZ2"] if med_type != "11" else ["SZ1", "SZV"]))
        out.append(line(pid, t.strftime("%Y-%m-%d %H:%M:%S"), inst, med_type=med_type,
                        a=draw(st.integers(0, 120_000)), b=draw(st.integers(0, 20_000)),
                        dise_cert_code=draw(st.sampled_from([None, *codes])) if med_type == "9901" else None))
    if draw(st.booleans()):  # another stay eats the rest of the cap
        t += dt.timedelta(minutes=draw(st.integers(1, 3000)))
        out.append(line(pid, t.strftime("%Y-%m-%d %H:%M:%S"), "SZ3", med_type="21", a=draw(st.integers(0, 200_000))))
    if draw(st.booleans()):  # the first stay reversed in the same batch: annual-cap room given back
        t += dt.timedelta(minutes=draw(st.integers(1, 3000)))
        out.append(reversal_of(out[0], t.strftime("%Y-%m-%d %H:%M:%S")))
        for _ in range(draw(st.integers(0, 3))):
            t += dt.timedelta(minutes=draw(st.sampled_from([1, 30, 60 * 24])))
            out.append(line(pid, t.strftime("%Y-%m-%d %H:%M:%S"), draw(st.sampled_from(["SZ1", "SZV"])),
                            med_type="11", a=draw(st.integers(0, 120_000))))
    return out


@st.composite
def merged_stays(draw, pid: str, hospitals: list[str], insutype: str = "390") -> list[dict]:
    """§1.11–§1.12: emergency lines (13) and the stay line (21/22/24) they turned into, sharing mdtrt_id: in one
    month, across months, across the year boundary; sometimes a held trauma line (22 without a report) between,
    an emergency line reversed before the stay line, a rescue among them, a 13 after the stay line, a second
    stay line."""
    out: list[dict] = []
    for k in range(draw(st.integers(0, 2))):
        mdtrt = f"{pid}ST{k}"
        t = dt.datetime(2025, 1, 1, 8) + dt.timedelta(days=draw(st.sampled_from([draw(st.integers(0, 450)), 364, 360])),
                                                      minutes=draw(st.integers(0, 900)))
        stay_inst = draw(st.sampled_from(hospitals))

        def at(when, med_type, inst=None, mdtrt=mdtrt, **kw):
            size = draw(st.sampled_from(["tiny", "small", "big"]))
            a = draw(st.integers(0, {"tiny": 12_000, "small": 300_000, "big": 5_000_000}[size]))
            b = draw(st.integers(0, {"tiny": 4_000, "small": 50_000, "big": 800_000}[size]))
            return line(pid, when.strftime("%Y-%m-%d %H:%M:%S"), inst or draw(st.sampled_from(hospitals)),
                        med_type=med_type, a=a, b=b, own=draw(st.integers(0, 20_000)), over=draw(st.integers(0, 3_000)),
                        mdtrt_id=mdtrt, insutype=insutype, offsite_type=draw(st.sampled_from([None, "101", "903"])),
                        **kw)
        for _ in range(draw(st.integers(1, 3))):
            out.append(at(t, "13", is_emergency_rescue=draw(st.integers(0, 5)) == 0))
            t += dt.timedelta(hours=draw(st.integers(1, 30)))
        if draw(st.integers(0, 3)) == 0:  # an emergency line reversed before the stay line
            e = draw(st.sampled_from(out[-1:]))
            out.append(reversal_of(e, (t - dt.timedelta(minutes=30)).strftime("%Y-%m-%d %H:%M:%S")))
        if draw(st.integers(0, 2)) == 0:  # a held trauma line (§3.6, A-28) before the line that settles
            out.append(at(t, "22", stay_inst))
            t += dt.timedelta(days=draw(st.integers(0, 40)), hours=1)
        t += dt.timedelta(days=draw(st.sampled_from([0, 0, 3, 20, 45])), hours=1)
        out.append(at(t, draw(st.sampled_from(["21", "22", "24"])), stay_inst, trauma_report_no="R1"))
        for _ in range(draw(st.integers(0, 2))):  # later lines of the stay: a 13, an interim settlement
            t += dt.timedelta(days=draw(st.integers(0, 40)), hours=1)
            out.append(at(t, draw(st.sampled_from(["13", "21", "24"])), stay_inst, trauma_report_no="R1"))
    return out


def settles_or_merged(x: dict, rows: list[dict]) -> bool:
    """A line whose reversal the population leaves out: an emergency line a later stay line merges (validation
    rejects its reversal, REVERSAL_AFTER_MERGE) or a stay line with an earlier 13 of its stay (it may settle a
    merge; the engine reverses it from its stored amounts, see transforms/merged_stays.py)."""
    same = [y for y in rows if y is not x and y["mdtrt_id"] == x["mdtrt_id"]
            and y["setl_time"].year == x["setl_time"].year and not y.get("orig_setl_id")]
    if x["med_type"] == "13":
        return any(y["med_type"] in ("21", "22", "24") and y["setl_time"] >= x["setl_time"] for y in same)
    return x["med_type"] in ("21", "22", "24") and any(y["med_type"] == "13" and y["setl_time"] <= x["setl_time"]
                                                       for y in same)


def _cert_valid(cert: tuple, on: dt.date) -> bool:
    return cert[4] <= on and (cert[5] is None or on <= cert[5])


def _typed(rows: list[dict]) -> list[dict]:
    return lines(rows).to_dicts()


def _registers(persons, idents, extra) -> dict[str, pl.DataFrame]:
    certs, enabled = extra
    regs = registers(persons, identities=idents, certifications=certs)
    inst = pl.concat([regs["institutions"], pl.DataFrame(EXTRA_INSTITUTIONS, schema=INST_SCHEMA, orient="row")])
    regs["institutions"] = inst.with_columns(pl.col("fixmedins_code").is_in(enabled).alias("offsite_outpatient_enabled"))
    return regs


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(population())
def test_engine_equals_reference(pop):
    persons, idents, rows, extra = pop
    regs = _registers(persons, idents, extra)
    engine = adjudicate(lines(rows), regs, POL).adjudicated
    ref, _ = adjudicate_reference(_typed(rows), {k: v.to_dicts() for k, v in regs.items()}, POL)
    got = engine.select(["setl_id", *COMPARED]).sort("setl_id").to_dicts()
    assert got == sorted(({k: r[k] for k in ["setl_id", *COMPARED]} for r in ref), key=lambda r: r["setl_id"])
    assert len(got) == len(rows)


@settings(max_examples=examples(15), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(population())
def test_month_by_month_equals_one_run(pop):
    """DESIGN 'Incremental months': carried accumulators make monthly runs equal one run over all lines."""
    persons, idents, rows, extra = pop
    regs = _registers(persons, idents, extra)
    whole = adjudicate(lines(rows), regs, POL).adjudicated.sort("setl_id")
    done = [r.adjudicated for r in month_by_month(rows, lambda m, **kw: adjudicate(lines(m), regs, POL, **kw),
                                                  accounts=False)]
    monthly = pl.concat(done, how="diagonal_relaxed").sort("setl_id") if done else whole.clear()
    assert monthly.select(whole.columns).to_dicts() == whole.to_dicts()
