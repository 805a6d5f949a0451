"""Reference twin of transforms/accounts.py: every account event of every person, one at a time.

Plain Python over dicts, deliberately obvious (POLICY §4.2, §4.5, §1.2, §1.7): build every event —
monthly credits on the credit day (A-14; none inside a termination/suspension/arrears period, A-24),
the settlements and the reversals — sort them all by (time, credit before settlement, setl_id,
person) and walk them with one dict of balances. A settlement first takes the person's own share
from the own account, then, in Xiangyang and on the listed ledgers, what is still short from each
authoriser valid on the date in binding-date order (A-13), each only from that authoriser's own
balance; a reversal gives back to each account what its original took.

No vectorization, no grouping, no levels: the property tests hold the engine's pass equal to this
to the fen (acct_pay, acct_mulaid_pay, every ledger row, every end balance).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from flows.policies import Policies
from transforms.money import apply_rate, rate_to_bp
from transforms.params import yuan_to_fen

R, S = "xiangyang", "employee"


def _valid(row: dict, on: dt.date) -> bool:
    return row["begndate"] <= on and (row["enddate"] is None or on <= row["enddate"])


def _age(brdy: dt.date, on: dt.date) -> int:
    return on.year - brdy.year - ((on.month, on.day) < (brdy.month, brdy.day))


def credit_on(person: dict, employment: list[dict], day: dt.date, pol: Policies) -> tuple[int, str | None]:
    """The §4.2 credit of one person on one credit day (fen, rule) — (0, None) when none."""
    rows = [e for e in employment if _valid(e, day)]
    if not rows:
        return 0, None
    # the period that began last; ties: benefit normal, retired, not flexible, benefit name, retire_kind,
    # contrib_mode, the larger base (as transforms/employee/status.py for the first four)
    e = sorted(rows, key=lambda r: (-r["begndate"].toordinal(), r["benefit"] != "normal", r["psn_type"] != "12",
                                    bool(r["flexible"]), r["benefit"], r["retire_kind"] is None, r["retire_kind"] or "",
                                    r["contrib_mode"] is None, r["contrib_mode"] or "",
                                    r["contrib_base"] is None, -(r["contrib_base"] or 0)))[0]
    if e["benefit"] in pol.value(R, S, "account.no_credit_benefit_states", day):
        return 0, None
    if e["psn_type"] == "11":
        if e["contrib_mode"] == "pooling_only":
            rule = "credit_in_service_pooling_only"
        elif _age(person["brdy"], day) >= int(pol.value(R, S, "account.in_service_age_split", day)):
            rule = "credit_in_service_from_45"
        else:
            rule = "credit_in_service_under_45"
    else:
        retired_on = min(r["begndate"] for r in employment if r["psn_type"] == "12")
        cutoff = pol.value(R, S, "account.retired_by_reform_cutoff", day)
        kind = e["retire_kind"]
        if kind == "contributing":  # §4.2: years not met yet, whatever the retirement date
            rule = f"credit_retired_contributing_{e['contrib_mode']}"
        elif retired_on <= cutoff:
            rule = "credit_retired_by_reform"
        else:
            rule = f"credit_retired_{kind}"
    value = pol.value(R, S, f"account.{rule}", day)
    if isinstance(value, str) and value.endswith("%"):
        base = e["contrib_base"]
        if base is None and e["flexible"]:
            base = yuan_to_fen(pol.value(R, S, "contributions.flexible_base", day))
        return apply_rate(base, rate_to_bp(value)), rule
    return yuan_to_fen(value), rule


def _credit_days(after: dt.date, end: dt.date, day: int) -> list[dt.date]:
    y, m = after.year, after.month
    if after.day >= day:
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    out = []
    while (d := dt.date(y, m, day)) <= end:
        out.append(d)
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return out


def accounts_reference(lines: list[dict], registers: dict[str, list[dict]], pol: Policies,
                       period: tuple[dt.date, dt.date],
                       balances: list[dict] | None = None,
                       original_ledger: list[dict] | None = None,
                       originals: dict[str, dict] | None = None) -> tuple[dict[str, dict], list[dict], dict[str, dict]]:
    """Returns ({setl_id: {acct_pay, acct_mulaid_pay}}, ledger rows, {psn_no: {as_of, balc}}).

    lines: dicts with setl_id, psn_no, setl_time, psn_part_amt, fixmedins_code, ledger, insutype,
    orig_setl_id, and optionally rule_pending / acct_allowed. originals: {setl_id: {acct_pay,
    acct_mulaid_pay}} of earlier runs' settlements reversed here; original_ledger: their ledger rows.
    """
    persons = {p["psn_no"]: p for p in registers["persons"]}
    xy = {k for k, p in persons.items() if p["insuplc_admdvs"].startswith("4206")}
    inst_adm = {i["fixmedins_code"]: i["admdvs"] for i in registers["institutions"]}
    emp: dict[str, list[dict]] = defaultdict(list)
    for e in registers.get("employment", []):
        emp[e["psn_no"]].append(e)
    binds: dict[str, list[dict]] = defaultdict(list)
    for b in registers.get("family_bindings", []):
        binds[b["user_psn_no"]].append(b)
    start, end = period

    # state: carried, else the opening (latest before the period, else earliest), else nothing
    state: dict[str, tuple[dt.date, int]] = {}
    for b in balances or []:
        if b["psn_no"] not in state or b["as_of"] >= state[b["psn_no"]][0]:
            state[b["psn_no"]] = (b["as_of"], b["balc"])
    opens: dict[str, list[dict]] = defaultdict(list)
    for b in registers.get("account_balances", []):
        if b["psn_no"] in xy and b["psn_no"] not in state:
            opens[b["psn_no"]].append(b)
    for psn, rows in opens.items():
        before = [r for r in rows if r["as_of"] < start]
        r = max(before, key=lambda r: r["as_of"]) if before else min(rows, key=lambda r: r["as_of"])
        state[psn] = (r["as_of"], r["balc"])

    events: list[tuple] = []
    day = int(pol.value(R, S, "account.credit_day_of_month", end))
    for psn in sorted(xy):
        if not emp[psn]:
            continue
        after = state[psn][0] if psn in state else start - dt.timedelta(days=1)
        for d in _credit_days(after, end, day):
            amount, _ = credit_on(persons[psn], emp[psn], d, pol)
            if amount > 0:
                events.append((dt.datetime(d.year, d.month, d.day), 0, "", psn, amount))
    for line in lines:
        events.append((line["setl_time"], 1, line["setl_id"], line["psn_no"], line))
    events.sort(key=lambda e: e[:4])

    bal = {psn: b for psn, (_, b) in state.items()}
    took: dict[str, tuple[int, list[tuple[str, int]]]] = {}
    for row in original_ledger or []:
        if row["kind"] in ("own_payment", "mulaid_payment_out") and row.get("orig_setl_id") is None:
            own, aid = took.get(row["setl_id"], (0, []))
            if row["kind"] == "own_payment":
                took[row["setl_id"]] = (own - row["amount"], aid)
            else:
                took[row["setl_id"]] = (own, [*aid, (row["psn_no"], -row["amount"])])
    for sid, o in (originals or {}).items():  # an original with nothing in the ledger took nothing
        took.setdefault(sid, (0, []))
        assert took[sid][0] == o["acct_pay"] and sum(a for _, a in took[sid][1]) == o["acct_mulaid_pay"], sid

    ledger: list[dict] = []
    result: dict[str, dict] = {}

    def move(psn: str, ts: dt.datetime, kind: str, amount: int, sid: Any, user: Any, orig: Any) -> None:
        bal[psn] = bal.get(psn, 0) + amount
        assert bal[psn] >= 0
        ledger.append({"psn_no": psn, "ts": ts, "kind": kind, "amount": amount, "balc_after": bal[psn],
                       "setl_id": sid, "user_psn_no": user, "orig_setl_id": orig})

    for ts, _, sid, psn, what in events:
        if sid == "":
            move(psn, ts, "credit", what, None, None, None)
            continue
        line = what
        if line.get("orig_setl_id"):
            own, aid = took.get(line["orig_setl_id"], (0, []))
            if own:
                move(psn, ts, "own_payment", own, sid, None, line["orig_setl_id"])
            for a, amount in aid:
                if amount:
                    move(a, ts, "mulaid_payment_out", amount, sid, psn, line["orig_setl_id"])
            result[sid] = {"acct_pay": -own, "acct_mulaid_pay": -sum(a for _, a in aid)}
            continue
        part = line["psn_part_amt"]
        usable = (psn in xy and part > 0 and not line.get("rule_pending", False)
                  and line.get("acct_allowed", True) is not False)
        if not usable:
            result[sid] = {"acct_pay": 0, "acct_mulaid_pay": 0}
            took[sid] = (0, [])
            continue
        own = min(part, bal.get(psn, 0))
        if own:
            move(psn, ts, "own_payment", -own, sid, None, None)
        short = part - own
        paid: list[tuple[str, int]] = []
        on = ts.date()
        valid = sorted((b for b in binds[psn] if _valid(b, on)), key=lambda b: (b["begndate"], b["authoriser_psn_no"]))
        if short and valid:
            scheme = "resident" if line["insutype"] == "390" else "employee"
            ledgers = pol.value(R, S, f"family_aid.uses_{scheme}_ledgers", on)
            in_city_only = pol.value(R, S, "family_aid.in_city_only", on)
            if line["ledger"] in ledgers and (inst_adm[line["fixmedins_code"]].startswith("4206") or not in_city_only):
                seen = set()
                for b in valid:
                    a = b["authoriser_psn_no"]
                    if a in seen:
                        continue
                    seen.add(a)
                    take = min(short, bal.get(a, 0))  # the authoriser's OWN balance only: no cascade
                    if take:
                        move(a, ts, "mulaid_payment_out", -take, sid, psn, None)
                        short -= take
                        paid.append((a, take))
        took[sid] = (own, paid)
        result[sid] = {"acct_pay": own, "acct_mulaid_pay": sum(a for _, a in paid)}

    moved = {r["psn_no"] for r in ledger}
    ends = {psn: {"as_of": max(state[psn][0], end) if psn in state else end, "balc": bal.get(psn, 0)}
            for psn in set(state) | moved | {p for p in xy if emp[p]}}
    return result, ledger, ends
