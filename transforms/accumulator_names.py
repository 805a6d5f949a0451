"""Every accumulator the engine carries across months (累计值), documented once: meaning, unit, POLICY §.

The names are those of the `accumulators` table (DATA.md §4) and of the `opening_accumulators` register a bureau
loads to start mid-year (DATA.md §3, POLICY §1.13): its rows are checked against this list. A keyed family is
written `prefix:{key}` and stored one row per key value as `prefix:<value>` (e.g. `stay_ded_used:MD2025…`).
Every value runs over one person and one natural year (POLICY §1.1) and is money in yuan (fen inside the
engine) unless its unit says otherwise. tests/test_accumulator_names.py requires this list to be exactly the
engine's (transforms/engine.py ACCUMULATORS, from the stages' declarations).
"""

from __future__ import annotations

import re

# name → (meaning, unit, POLICY §)
CATALOGUE: dict[str, tuple[str, str, str]] = {
    # Suizhou residents (§3)
    "hifp_paid": ("basic fund paid this year, against the annual cap", "yuan", "§3.7"),
    "stay_ded_used:{mdtrt_id}": ("per-stay deductible taken so far by the lines of one stay (mdtrt_id)", "yuan",
                                 "§3.6, A-5"),
    "chronic_limit_used:{dise_cert_code}": ("in-scope cost counted against a chronic disease's annual limit",
                                            "yuan", "§3.4, A-21"),
    "op_pool_paid": ("outpatient pooling paid this year, against its 350 cap (what the fund actually paid)",
                     "yuan", "§3.2"),
    "two_disease_paid": ("two-disease and outpatient pooling paid together, against the shared two-disease cap",
                         "yuan", "§3.3"),
    "hifmi_burden": ("critical-illness burden: in-scope cost left after the basic fund on its ledgers", "yuan",
                     "§3.8, A-7"),
    "hifmi_paid": ("critical-illness insurance paid this year", "yuan", "§3.8"),
    "maf_base": ("basic-assistance base: in-scope self-pay left after the basic fund and critical illness",
                 "yuan", "§3.9"),
    "maf_paid": ("basic assistance paid this year, against its 40,000 cap", "yuan", "§3.9"),
    "tilt_base": ("tilt-assistance base: in-scope self-pay left after the three tiers, in the province", "yuan",
                  "§3.9, A-8"),
    "tilt_paid": ("tilt assistance paid this year", "yuan", "§3.9, A-8"),
    # Xiangyang employees (§4)
    "emp_op_ded": ("in-catalogue outpatient cost counted toward the employee outpatient deductible", "yuan",
                   "§4.3"),
    "emp_op_paid": ("employee outpatient pooling paid this year, against its cap", "yuan", "§4.3"),
    "emp_stay_ded_used:{mdtrt_id}": ("employee per-stay deductible taken so far by the lines of one stay", "yuan",
                                     "§4.4, A-12"),
    "emp_chronic_used:{dise_cert_code}": ("in-scope cost counted against an employee chronic disease's annual "
                                          "limit", "yuan", "§4.4, A-21"),
    "emp_hifp_paid": ("employee basic fund paid this year on the capped ledgers, against the annual maximum",
                      "yuan", "§4.4, A-17"),
    # Xiangyang residents (§4.7)
    "xyr_op_cost": ("general outpatient cost counted toward the year's first 800", "yuan", "§4.7"),
    "xyr_op_paid": ("Xiangyang resident general outpatient paid this year", "yuan", "§4.7"),
    "xyr_chronic_used:{dise_cert_code}": ("in-scope cost counted against a Xiangyang resident chronic disease's "
                                          "annual limit", "yuan", "§4.7, A-21"),
    "xyr_chronic_ded": ("chronic outpatient cost counted toward the yearly 600 deductible", "yuan", "§4.7"),
    "xyr_hifp_paid": ("Xiangyang resident basic fund paid this year, against the annual maximum", "yuan", "§4.7"),
}

_KEYED = re.compile(r"(\w+):\{(\w+)\}")
PLAIN_NAMES = frozenset(n for n in CATALOGUE if not _KEYED.fullmatch(n))
KEYED_PREFIXES = frozenset(m[1] for n in CATALOGUE if (m := _KEYED.fullmatch(n)))


def is_known(name: str) -> bool:
    """A stored accumulator name: a plain name of the catalogue, or `prefix:<value>` of a keyed family."""
    if name in PLAIN_NAMES:
        return True
    prefix, sep, key = name.partition(":")
    return bool(sep) and bool(key) and prefix in KEYED_PREFIXES


def markdown() -> str:
    """The catalogue as a Markdown table (docs/ACCUMULATORS.md is this text; a test keeps them equal)."""
    rows = ["| name | meaning | unit | POLICY |", "|---|---|---|---|"]
    rows += [f"| `{n}` | {m} | {u} | {p} |" for n, (m, u, p) in CATALOGUE.items()]
    return "\n".join(rows) + "\n"
