"""The reference adjudicator: one person at a time, one line at a time, in plain Python.

Deliberately slow and obvious: it reads the policy rules as written (POLICY §1, §3.5–§3.7)
and walks each person's lines in order (setl_time, setl_id), keeping the accumulators in a
dict. Property tests require the vectorized engine (transforms/engine.py) to agree with it
to the fen on random populations.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from flows.policies import Policies
from transforms.money import apply_rate, rate_to_bp
from transforms.params import yuan_to_fen

REGIONS = {"4213": "suizhou", "4206": "xiangyang"}
SCHEMES = {"310": "employee", "390": "resident"}
STAYS = ("inpatient", "maternity", "day_surgery")


def ledger_of(line: dict, cert_kind: str | None) -> str:
    mt, rescue = line["med_type"], bool(line.get("is_emergency_rescue"))
    if mt in ("21", "22", "24") or (mt == "13" and rescue):
        return "inpatient"
    if mt == "52":
        return "maternity"
    if mt == "28":
        return "day_surgery"
    if mt == "9901":
        return "two_disease"
    if mt in ("14", "140104", "140201"):
        return "special_drug" if cert_kind == "special_drug" else "chronic"
    if mt == "41":
        return "special_drug" if cert_kind == "special_drug" else "pharmacy"
    return "outpatient_pool"


def _valid(row: dict, on: dt.date) -> bool:
    return row["begndate"] <= on and (row["enddate"] is None or on <= row["enddate"])


def adjudicate_reference(lines: list[dict], registers: dict[str, list[dict]], policies: Policies,
                         carried: dict[tuple[str, int, str], int] | None = None,
                         originals: dict[str, dict] | None = None) -> tuple[list[dict], dict]:
    persons = {p["psn_no"]: p for p in registers["persons"]}
    insts = {i["fixmedins_code"]: i for i in registers["institutions"]}
    idents = defaultdict(list)
    for r in registers["identities"]:
        idents[r["psn_no"]].append(r)
    certs = defaultdict(list)
    for r in registers["certifications"]:
        certs[r["psn_no"]].append(r)
    state: dict[tuple[str, int, str], int] = dict(carried or {})
    done: dict[str, dict] = dict(originals or {})
    out = []
    for line in sorted(lines, key=lambda x: (x["psn_no"], x["setl_time"], x["setl_id"])):
        r = _one_line(line, persons[line["psn_no"]], insts[line["fixmedins_code"]], idents[line["psn_no"]],
                      certs[line["psn_no"]], policies, state, done)
        done[line["setl_id"]] = r
        out.append(r)
    return out, state


def _one_line(line: dict, person: dict, inst: dict, idents: list[dict], certs: list[dict],
              policies: Policies, state: dict, done: dict) -> dict[str, Any]:
    on: dt.date = line["setl_time"].date()
    year = on.year
    region = REGIONS.get(person["insuplc_admdvs"][:4])
    scheme = SCHEMES[line["insutype"]]
    cert_kind = None
    if line.get("dise_cert_code"):
        for c in certs:
            if c["dise_cert_code"] == line["dise_cert_code"] and _valid(c, on):
                cert_kind = c["kind"]
                break
    ledger = ledger_of(line, cert_kind)
    A, B = line["cls_a_amt"], line["cls_b_amt"]
    res = {k: 0 for k in ("preselfpay_amt", "offsite_preselfpay_amt", "act_pay_dedc", "hifp_pay",
                          "pool_prop_selfpay", "hifp_cap_cut", "hifmi_pay", "maf_pay", "maf_tilt_pay",
                          "hosp_part_amt", "acct_pay", "acct_mulaid_pay")}
    res.update(setl_id=line["setl_id"], psn_no=line["psn_no"], ledger=ledger, medfee_sumamt=line["medfee_sumamt"])
    hifp_key = (line["psn_no"], year, "hifp_paid")

    if line.get("orig_setl_id"):  # POLICY §1.7: undo exactly what the original got
        orig = done[line["orig_setl_id"]]
        for k in res:
            if k not in ("setl_id", "psn_no", "ledger", "medfee_sumamt"):
                res[k] = -orig[k]
        res["inscp_scp_amt"] = -orig["inscp_scp_amt"]
        state[hifp_key] = state.get(hifp_key, 0) + res["hifp_pay"]
        if orig.get("_hifmi_burden"):
            bkey = (line["psn_no"], year, "hifmi_burden")
            state[bkey] = state.get(bkey, 0) - orig["_hifmi_burden"]
        if res["hifmi_pay"]:
            pkey = (line["psn_no"], year, "hifmi_paid")
            state[pkey] = state.get(pkey, 0) + res["hifmi_pay"]
        res["_hifmi_burden"] = -orig.get("_hifmi_burden", 0)
        return _finish(res)

    if not (region == "suizhou" and scheme == "resident") or ledger not in STAYS:
        res["inscp_scp_amt"] = A + B
        return _finish(res)

    R, S = region, scheme

    def val(name: str) -> Any:
        return policies.value(R, S, name, on)

    def by_level(name: str) -> Any:
        return {str(k): v for k, v in val(name).items()}[str(inst["dedc_hosp_lv"])]

    # §1.4: class-B pre-self-pay on the stay ledgers
    if B != 0 and ledger in val("inpatient.class_b_preselfpay_ledgers"):
        res["preselfpay_amt"] = apply_rate(B, rate_to_bp(val("inpatient.class_b_preselfpay_rate")))
    in_scope = A + B - res["preselfpay_amt"]
    res["inscp_scp_amt"] = in_scope

    in_city = inst["admdvs"][:4] == person["insuplc_admdvs"][:4]
    rescue = bool(line.get("is_emergency_rescue"))
    offsite = None
    if not in_city:
        if rescue:
            offsite = "101"  # §3.5, A-2
        elif line.get("offsite_type"):
            offsite = line["offsite_type"]
        else:
            offsite = "101" if line["med_type"] == "24" else "903"  # §1.9
        rates = {str(k): v for k, v in val("inpatient.offsite_preselfpay_rate").items()}
        res["offsite_preselfpay_amt"] = apply_rate(in_scope, rate_to_bp(rates[offsite]))
    base = in_scope - res["offsite_preselfpay_amt"]

    ids = {r["identity"] for r in idents if _valid(r, on)}
    exempt = bool(ids & set(val("inpatient.deductible_exempt_identities") or []))
    if ledger == "day_surgery" or exempt:
        deductible = 0
    else:
        deductible = yuan_to_fen(by_level("inpatient.deductible_in_city" if in_city else "inpatient.deductible_out_of_city"))
    taken = min(max(base, 0), deductible)
    after = max(base - taken, 0)
    res["act_pay_dedc"] = taken

    held = (line["med_type"] == "22" and person["insuplc_admdvs"] in [str(c) for c in val("inpatient.trauma_report_required_counties")]
            and not line.get("trauma_report_no"))
    raw = 0 if held else apply_rate(after, rate_to_bp(by_level("inpatient.fund_rate")))
    res["pool_prop_selfpay"] = after - raw

    cap = yuan_to_fen(val("annual_cap.hifp"))
    paid_before = state.get(hifp_key, 0)
    paid = min(raw, max(0, cap - paid_before))
    state[hifp_key] = paid_before + paid
    res["hifp_pay"] = paid
    res["hifp_cap_cut"] = raw - paid
    if not held and ledger in val("critical_illness.ledgers"):
        _critical_illness(res, line, ids, val, state)
    return _finish(res)


def _band_value(x: int, bands: list[dict]) -> int:
    """F(x), summed exactly in basis-point fen and rounded half-up once (POLICY §1.3)."""
    from transforms.money import round_half_up_div
    total = 0
    for b in bands:
        lo = yuan_to_fen(b["from"])
        hi = None if b["to"] == "none" else yuan_to_fen(b["to"])
        inside = max(0, x - lo) if hi is None else min(max(0, x - lo), hi - lo)
        total += inside * rate_to_bp(b["rate"])
    return round_half_up_div(total, 10_000)


def _critical_illness(res: dict, line: dict, ids: set, val, state: dict) -> None:
    """§3.8: burden = in_scope − hifp (A-7); pay F(after) − F(before) by group; then the group's cap."""
    group = "s1" if ids & set(val("critical_illness.favoured_identities")) else "others"
    burden = res["inscp_scp_amt"] - res["hifp_pay"]
    bkey = (line["psn_no"], line["setl_time"].year, "hifmi_burden")
    before = state.get(bkey, 0)
    after = before + burden
    state[bkey] = after
    bands = val("critical_illness.bands")[group]
    raw = _band_value(after, bands) - _band_value(before, bands)
    cap_v = val("critical_illness.annual_cap")[group]
    pkey = (line["psn_no"], line["setl_time"].year, "hifmi_paid")
    paid_before = state.get(pkey, 0)
    paid = raw if cap_v == "none" else min(raw, max(0, yuan_to_fen(cap_v) - paid_before))
    state[pkey] = paid_before + paid
    res["hifmi_pay"] = paid
    res["_hifmi_burden"] = burden


def _finish(res: dict) -> dict:
    res["fund_pay_sumamt"] = res["hifp_pay"] + res["hifmi_pay"] + res["maf_pay"] + res["maf_tilt_pay"]
    res["psn_part_amt"] = res["medfee_sumamt"] - res["fund_pay_sumamt"] - res["hosp_part_amt"]
    res["psn_cash_pay"] = res["psn_part_amt"] - res["acct_pay"] - res["acct_mulaid_pay"]
    return res
