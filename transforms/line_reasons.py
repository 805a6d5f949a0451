"""Reason codes on adjudicated lines (`adjudicated.reason_codes`), one closed list (DESIGN.md, Naming).

Every zero payment of a fund on a line is explained by at least one of these.
"""

LINE_REASONS: dict[str, str] = {
    "BELOW_DEDUCTIBLE": "the in-scope cost (after pre-self-pay) did not exceed the deductible",
    "DEDUCTIBLE_EXEMPT": "no deductible for this identity on this date (POLICY §3.6)",
    "NO_DEDUCTIBLE_DAY_SURGERY": "day surgery has no deductible (POLICY §3.5)",
    "NO_IN_SCOPE_COST": "nothing on the line is in scope (out-of-catalogue or over-limit only)",
    "CAP_REACHED": "the basic fund's annual cap was reached (POLICY §3.7)",
    "CAP_PARTLY": "the basic fund's annual cap was reached on this line; paid partly",
    "HELD_FOR_REVIEW": "trauma stay without an investigation reference: held for review (POLICY §3.6, A-6)",
    "OFFSITE_101": "out of the city, referred or emergency (POLICY §3.6)",
    "OFFSITE_903": "out of the city, neither referred nor emergency (POLICY §3.6)",
    "EMERGENCY_AS_STAY": "emergency rescue adjudicated as a stay (POLICY §3.5, A-2)",
    "HIFMI_BELOW_THRESHOLD": "critical-illness burden below the threshold (POLICY §3.8)",
    "HIFMI_NOT_COVERED": "critical-illness insurance does not cover this ledger (POLICY §3.8)",
    "HIFMI_CAP_REACHED": "critical-illness annual cap reached (POLICY §3.8)",
    "REVERSAL": "reversal of an earlier settlement: its amounts negated (POLICY §1.7)",
    "RULE_PENDING": "the ledger's rules are not implemented yet: no fund computed (see README, known gaps)",
    "PAY_AFTER_TREATMENT": "rural low-income person in their county: deposit waived (POLICY §3.9)",
    "NOT_ELIGIBLE_LEVEL": "outpatient pooling pays only at institutions of level 1 and below (POLICY §3.2)",
    "OFFSITE_NOT_ENABLED": "out of the city at an institution without cross-region outpatient settlement (POLICY §3.2)",
    "PHARMACY_NOT_COVERED": "pharmacy purchase: no Suizhou resident outpatient benefit without a special-drug qualification; two-disease drugs need a prescribing institution (POLICY §3.2–§3.3)",
    "ANTENATAL_EXEMPT": "med_type 51: no daily limit and no level restriction; counts toward the outpatient-pooling cap (POLICY §3.2, A-1)",
    "DAILY_LIMIT": "the outpatient-pooling daily limit per person, day and institution took part or all of the payment (POLICY §3.2, A-20)",
    "OP_POOL_CAP_REACHED": "the outpatient-pooling annual cap (350) was reached before this line (POLICY §3.2)",
    "OP_POOL_CAP_PARTLY": "the outpatient-pooling annual cap (350) was reached on this line; paid partly (POLICY §3.2)",
    "TWO_DISEASE_NOT_CERTIFIED": "two-disease line not claimed under a hypertension or diabetes certification valid on the date (POLICY §3.3)",
    "TWO_DISEASE_CHRONIC_EXCLUDED": "the disease is covered by a chronic/special-disease certification: no two-disease benefit (POLICY §3.3, A-23)",
    "TWO_DISEASE_CAP_REACHED": "the two-disease ceiling, shared by outpatient pooling and two-disease, was reached before this line (POLICY §3.3)",
    "TWO_DISEASE_CAP_PARTLY": "the two-disease ceiling, shared by outpatient pooling and two-disease, was reached on this line; paid partly (POLICY §3.3)",
    "OUT_OF_SCOPE_NOT_CONTROLLED": "rural low-income stay at an institution for which no out-of-scope limit is set (POLICY §3.10)",
    "OUT_OF_SCOPE_WITHIN_LIMIT": "rural low-income stay within its out-of-scope limit (POLICY §3.10)",
    "OUT_OF_SCOPE_VIOLATION": "rural low-income stay over its out-of-scope limit at an institution outside Suizhou: the person pays the excess (POLICY §3.10)",
    "OUT_OF_SCOPE_EXCESS_TO_INSTITUTION": "rural low-income stay over its out-of-scope limit: the excess is borne by the institution, not the person (POLICY §3.10)",
}
