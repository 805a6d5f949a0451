"""Closed lists of reason codes.

REJECT_REASONS: why an input row was rejected (the `rejects.reason_code` column).
Each code has a readable default text; the `reason` column adds the detail.
"""

REJECT_REASONS: dict[str, str] = {
    "MISSING_REQUIRED": "a required field is empty",
    "BAD_VALUE": "a field cannot be read as its type (date, time, amount, flag)",
    "BAD_CODE": "a code is not in its dictionary (insutype, med_type, offsite_type)",
    "AMOUNT_MISMATCH": "medfee_sumamt ≠ cls_a_amt + cls_b_amt + fulamt_ownpay_amt + overlmt_selfpay",
    "NEGATIVE_AMOUNT": "a negative amount on a line that is not a reversal",
    "WRONG_MONTH": "the month of setl_time is not the folder's month",
    "UNKNOWN_PERSON": "psn_no is not in the person register",
    "UNKNOWN_INSTITUTION": "fixmedins_code is not in the institution register",
    "SCHEME_MISMATCH": "the line's insutype is not the person's insutype",
    "NO_RULE": "the med_type has no rule in the person's scheme (POLICY §1.8)",
    "CERT_INVALID": "dise_cert_code does not match a certification of the person valid on the date",
    "DUPLICATE_SETL_ID": "setl_id already seen in this month's files or an earlier month",
    "UNKNOWN_REVERSAL": "orig_setl_id names no known settlement",
    "ALREADY_REVERSED": "orig_setl_id names a settlement already reversed",
    "REVERSAL_MISMATCH": "a reversal's amounts are not the negated amounts of its original",
    # POLICY §1.12: the emergency line is part of a merged stay; the institution reverses the stay line instead
    "REVERSAL_AFTER_MERGE": "orig_setl_id names an emergency line already merged into its stay by a stay line",
    # maternity events (docs/MATERNITY_INPUT.md, POLICY §4.6)
    "NOT_XIANGYANG_EMPLOYEE": "a maternity event of a person who is not a Xiangyang employee (insutype 310, 4206xx)",
    "EVENT_INCOMPLETE": "a delivery without babies >= 1, or a miscarriage without gestation_months",
}

# Codes only maternity event rows can get (a settlement row never does): the sample's injector skips them.
EVENT_ONLY_REASONS = ("NOT_XIANGYANG_EMPLOYEE", "EVENT_INCOMPLETE")
