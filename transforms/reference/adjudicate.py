"""The reference adjudicator: one person at a time, one line at a time, in plain Python.

Deliberately slow and obvious: it reads the policy rules as written (POLICY §1, §3) and walks
each person's lines in order (setl_time, setl_id), keeping every accumulator in a dict keyed by
(psn_no, year, name). Property tests require the vectorized engine (transforms/engine.py) to
agree with it to the fen on random populations.

Rules live in small modules registered in transforms/reference/resident.py: BASIC maps ledgers
to a function returning the basic fund before the annual cap; LATER lists the funds after it.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from flows.policies import Policies
from transforms.enrich import CERT_LEDGER, PHARMACY_CERT_LEDGERS, REGION_BY_CITY, SCHEME_BY_INSUTYPE

# The same code tables as the engine's (DATA.md §3): regions by city prefix, schemes by insutype.
REGIONS = REGION_BY_CITY
SCHEMES = SCHEME_BY_INSUTYPE
MONEY = ("preselfpay_amt", "offsite_preselfpay_amt", "act_pay_dedc", "hifp_pay", "pool_prop_selfpay", "hifp_cap_cut",
         "hifmi_pay", "maf_pay", "maf_tilt_pay", "hosp_part_amt", "acct_pay", "acct_mulaid_pay")


def ledger_of(line: dict, cert_kind: str | None, merged: bool = False) -> str:
    mt, rescue = line["med_type"], bool(line.get("is_emergency_rescue"))
    if mt in ("21", "22", "24") or (mt == "13" and (rescue or merged)):
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


def valid_on(row: dict, on: dt.date) -> bool:
    return row["begndate"] <= on and (row["enddate"] is None or on <= row["enddate"])


@dataclass
class Ctx:
    """Everything a rule may look at for one line."""

    line: dict
    person: dict
    inst: dict
    presc_inst: dict | None
    ids: set[str]  # identities valid on the settlement date
    certs: list[dict]  # the person's certifications valid on the settlement date
    cert: dict | None  # the certification the line is claimed under
    policies: Policies
    state: dict
    region: str | None
    scheme: str
    ledger: str
    on: dt.date
    merged: bool = False  # an emergency visit merged into the stay it turned into (§3.5)
    employment: list[dict] = field(default_factory=list)  # the person's employment periods (§4, employees)

    @property
    def year(self) -> int:
        return self.on.year

    @property
    def in_city(self) -> bool:
        return self.inst["admdvs"][:4] == self.person["insuplc_admdvs"][:4]

    @property
    def in_county(self) -> bool:
        return self.inst["admdvs"] == self.person["insuplc_admdvs"]

    @property
    def in_province(self) -> bool:
        return self.inst["admdvs"][:2] == self.person["insuplc_admdvs"][:2]

    @property
    def level(self) -> str:
        return str(self.inst["dedc_hosp_lv"])

    def offsite(self) -> str | None:
        """§1.9: None in the city; else the stated type, or 101 for an emergency, 903 otherwise."""
        if self.in_city:
            return None
        if self.line.get("offsite_type"):
            return self.line["offsite_type"]
        emergency = self.line["med_type"] == "24" or self.line.get("is_emergency_rescue") or self.merged
        return "101" if emergency else "903"

    def val(self, name: str) -> Any:
        return self.policies.value(self.region, self.scheme, name, self.on)

    def keyed(self, name: str, key: Any) -> Any:
        return {str(k): v for k, v in self.val(name).items()}[str(key)]

    def acc(self, name: str) -> int:
        return self.state.get((self.line["psn_no"], self.year, name), 0)

    def add(self, name: str, amount: int) -> None:
        k = (self.line["psn_no"], self.year, name)
        self.state[k] = self.state.get(k, 0) + amount


def adjudicate_reference(lines: list[dict], registers: dict[str, list[dict]], policies: Policies,
                         carried: dict[tuple[str, int, str], int] | None = None,
                         originals: dict[str, dict] | None = None, balances: list[dict] | None = None,
                         original_ledger: list[dict] | None = None, period: tuple[dt.date, dt.date] | None = None,
                         accounts: dict | None = None) -> tuple[list[dict], dict]:
    """Every line, funds then personal accounts (POLICY §4.2, §4.5: transforms/reference/accounts.py over each
    line's personal share), like the engine end to end. balances / original_ledger / period as the engine's
    `adjudicate` (period default: the lines' months); `accounts`, when given, receives the account ledger rows
    ("ledger") and each account's end state ("balances")."""
    out, state = _funds(lines, registers, policies, carried, originals)
    if not out:
        return out, state
    from transforms.reference.accounts import accounts_reference
    by_id = {x["setl_id"]: x for x in lines}
    asked = [{**{k: by_id[r["setl_id"]][k] for k in ("setl_id", "psn_no", "setl_time", "fixmedins_code", "insutype",
                                                     "orig_setl_id")},
              "psn_part_amt": r["psn_part_amt"], "ledger": r["ledger"], "rule_pending": not r.get("_handled", True),
              "acct_allowed": r.get("acct_allowed", True)} for r in out]
    if period is None:
        times = [x["setl_time"].date() for x in lines]
        last = max(times)
        period = (min(times).replace(day=1), (last.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
                  - dt.timedelta(days=1))
    earlier = {s: {"acct_pay": o.get("acct_pay", 0), "acct_mulaid_pay": o.get("acct_mulaid_pay", 0)}
               for s, o in (originals or {}).items()} if original_ledger is not None else None
    paid, ledger, ends = accounts_reference(asked, registers, policies, period, balances=balances,
                                            original_ledger=original_ledger, originals=earlier)
    for r in out:
        r.update(paid[r["setl_id"]])
        r["psn_cash_pay"] = r["psn_part_amt"] - r["acct_pay"] - r["acct_mulaid_pay"]
    if accounts is not None:
        accounts.update(ledger=ledger, balances=ends)
    return out, state


def _funds(lines: list[dict], registers: dict[str, list[dict]], policies: Policies,
           carried: dict[tuple[str, int, str], int] | None,
           originals: dict[str, dict] | None) -> tuple[list[dict], dict]:
    persons = {p["psn_no"]: p for p in registers["persons"]}
    insts = {i["fixmedins_code"]: i for i in registers["institutions"]}
    idents, certs = defaultdict(list), defaultdict(list)
    for r in registers["identities"]:
        idents[r["psn_no"]].append(r)
    emps = defaultdict(list)
    for r in registers.get("employment", []):
        emps[r["psn_no"]].append(r)
    for r in registers["certifications"]:
        certs[r["psn_no"]].append(r)
    state: dict[tuple[str, int, str], int] = dict(carried or {})
    done: dict[str, dict] = dict(originals or {})
    # §1.12: per stay (psn_no, year, mdtrt_id): settled yet?, and its emergency lines adjudicated as outpatient
    # care and not merged yet (setl_id → line)
    settled: set[tuple] = set()
    pending: dict[tuple, dict[str, dict]] = defaultdict(dict)
    out = []

    def context(line: dict, merged: bool) -> Ctx:
        on = line["setl_time"].date()
        person = persons[line["psn_no"]]
        valid_certs = [c for c in certs[line["psn_no"]] if valid_on(c, on)]
        cert = next((c for c in valid_certs if c["dise_cert_code"] == line.get("dise_cert_code")), None)
        region, scheme = REGIONS.get(person["insuplc_admdvs"][:4]), SCHEMES[line["insutype"]]
        ledger = ledger_of(line, cert["kind"] if cert else None, merged)
        if line["med_type"] == "41" and cert and region:  # §3.4 A-25: the certification's ledger, where the scheme has it
            own = CERT_LEDGER.get(cert["kind"])
            ledger = own if own in policies.value(region, scheme, PHARMACY_CERT_LEDGERS, on) else "pharmacy"
        return Ctx(line=line, person=person, inst=insts[line["fixmedins_code"]],
                   presc_inst=insts.get(line.get("presc_fixmedins_code") or ""),
                   ids={r["identity"] for r in idents[line["psn_no"]] if valid_on(r, on)},
                   certs=valid_certs, cert=cert, policies=policies, state=state,
                   region=region, scheme=scheme, ledger=ledger,
                   on=on, employment=emps[line["psn_no"]], merged=merged)

    for line in sorted(lines, key=lambda x: (x["psn_no"], x["setl_time"], x["setl_id"])):
        key = (line["psn_no"], line["setl_time"].year, line["mdtrt_id"])
        mt, orig = line["med_type"], line.get("orig_setl_id")
        emergency = mt == "13" and not line.get("is_emergency_rescue")
        if orig:  # a reversal of an emergency line not merged yet takes it out of its stay; of a stay's 13, a stay line
            pending[key].pop(orig, None)
            merged = mt == "13" and done.get(orig, {}).get("ledger") == "inpatient"
        else:
            merged = emergency and key in settled  # a 13 after its stay's settling line is a line of the stay
        if (not orig and mt in ("21", "22", "24") and key not in settled
                and not _held(line, persons[line["psn_no"]], policies)):
            r = _settle(line, sorted(pending.pop(key, {}).values(), key=lambda x: x["setl_id"]), context, done)
            settled.add(key)
        else:
            r = _one_line(context(line, merged), done)
            if emergency and not orig and not merged:
                pending[key][line["setl_id"]] = line
        done[line["setl_id"]] = r
        out.append(r)
    return out, state


AMOUNTS = ("medfee_sumamt", "fulamt_ownpay_amt", "overlmt_selfpay", "cls_a_amt", "cls_b_amt")
# the in-catalogue cost is merged; §3.10 judges each settlement line's out-of-scope share on its own amounts
MERGED_AMOUNTS = ("cls_a_amt", "cls_b_amt")
FOLDED = ("hifp_pay", "hifmi_pay", "maf_pay", "maf_tilt_pay", "hosp_part_amt")


def _held(line: dict, person: dict, policies: Policies) -> bool:
    """§3.6, A-6/A-28: a Suizhou resident's trauma stay line without a report, in a county that requires one."""
    if line["med_type"] != "22" or line.get("trauma_report_no") or line["insutype"] != "390":
        return False
    if REGIONS.get(person["insuplc_admdvs"][:4]) != "suizhou":
        return False
    counties = policies.value("suizhou", "resident", "inpatient.trauma_report_required_counties",
                              line["setl_time"].date())
    return person["insuplc_admdvs"] in [str(c) for c in counties or []]


def _settle(line: dict, emergencies: list[dict], context, done: dict) -> dict:
    """§1.12, A-31: the stay line that settles a merged stay. At its time: each earlier emergency line is given
    back (its payments and everything it added to every accumulator, as a reversal would), the stay is adjudicated
    on the cost of all its lines with the stay's rules, and the stay line pays, fund by fund, what the merged stay
    is owed minus what the emergency lines were paid."""
    back = dict.fromkeys(FOLDED, 0)
    for e in emergencies:
        give = {**e, "setl_time": line["setl_time"], "orig_setl_id": e["setl_id"], "setl_id": f"{e['setl_id']}>{line['setl_id']}"}
        for k in AMOUNTS:
            give[k] = -e[k]
        g = _one_line(context(give, False), done)
        for k in FOLDED:
            back[k] += g[k]
    if not emergencies:
        return _one_line(context(line, False), done)
    merged = {**line, **{k: line[k] + sum(e[k] for e in emergencies) for k in MERGED_AMOUNTS}}
    r = _one_line(context(merged, False), done)
    r["merged_setl_ids"] = ",".join(e["setl_id"] for e in emergencies)
    r["merged_owed"] = {k: r[k] for k in FOLDED}
    for k in FOLDED:
        r[k] += back[k]
    return _finish(r)


def _one_line(ctx: Ctx, done: dict) -> dict[str, Any]:
    from transforms.reference import resident

    line = ctx.line
    res: dict[str, Any] = dict.fromkeys(MONEY, 0)
    res.update(setl_id=line["setl_id"], psn_no=line["psn_no"], ledger=ctx.ledger,
               medfee_sumamt=line["medfee_sumamt"], _acc={}, _year=ctx.year)

    if line.get("orig_setl_id"):  # POLICY §1.7: undo exactly what the original got, funds and accumulators
        orig = done[line["orig_setl_id"]]
        for k in (*MONEY, "inscp_scp_amt"):
            res[k] = -orig[k]
        # ... in the accumulators of the original's year, whatever year the reversal arrives in (§1.7)
        year = orig.get("_year", ctx.year)
        res["_year"] = year
        for name, amount in orig.get("_acc", {}).items():
            k = (line["psn_no"], year, name)
            ctx.state[k] = ctx.state.get(k, 0) - amount
            res["_acc"][name] = -amount
        return _finish(res)

    if ctx.region == "xiangyang" and ctx.scheme == "employee":  # §4: transforms/reference/employee.py
        from transforms.reference import employee
        employee.adjudicate(res, ctx)
        return _finish(res)

    if ctx.region == "xiangyang" and ctx.scheme == "resident":  # §4.7: transforms/reference/xiangyang_resident.py
        from transforms.reference import xiangyang_resident
        xiangyang_resident.adjudicate(res, ctx)
        return _finish(res)

    if not (ctx.region == "suizhou" and ctx.scheme == "resident"):
        res["inscp_scp_amt"] = line["cls_a_amt"] + line["cls_b_amt"]
        return _finish(res)

    resident.class_b(res, ctx)
    rule = resident.BASIC.get(ctx.ledger)
    raw = rule(res, ctx) if rule else 0
    # §3.7: the basic fund's annual cap over every ledger
    from transforms.params import yuan_to_fen
    cap = yuan_to_fen(ctx.val("annual_cap.hifp")) if raw else 0
    before = ctx.acc("hifp_paid")
    paid = min(raw, max(0, cap - before))
    record(res, ctx, "hifp_paid", paid)
    res["hifp_pay"], res["hifp_cap_cut"] = paid, raw - paid
    res["_handled"] = rule is not None
    for later in resident.LATER:
        later(res, ctx)
    return _finish(res)


def record(res: dict, ctx: Ctx, name: str, amount: int) -> None:
    """Add to an accumulator and remember it on the line (a reversal takes it back)."""
    ctx.add(name, amount)
    res["_acc"][name] = res["_acc"].get(name, 0) + amount


def _finish(res: dict) -> dict:
    res["fund_pay_sumamt"] = res["hifp_pay"] + res["hifmi_pay"] + res["maf_pay"] + res["maf_tilt_pay"]
    res["psn_part_amt"] = res["medfee_sumamt"] - res["fund_pay_sumamt"] - res["hosp_part_amt"]
    res["psn_cash_pay"] = res["psn_part_amt"] - res["acct_pay"] - res["acct_mulaid_pay"]
    return res
