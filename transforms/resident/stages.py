"""The Suizhou resident pipeline, in order (DESIGN.md "Order of funds").

BASIC: stages that compute the basic fund before the annual cap, one per group of ledgers.
LATER: stages after the annual cap (critical illness, assistance, institution share).
A ledger no basic stage handles is adjudicated with no fund and the reason RULE_PENDING.
"""

from transforms.resident import assistance, critical_illness, inpatient

BASIC = [inpatient.STAGE]
LATER = [critical_illness.STAGE, assistance.STAGE]

from transforms.resident import out_of_scope  # noqa: E402  (§3.10, institution share: after assistance)

LATER.append(out_of_scope.STAGE)

from transforms.resident import chronic  # noqa: E402  (§3.4, chronic/special outpatient and special drugs)

BASIC.append(chronic.STAGE)

from transforms.resident import outpatient  # noqa: E402  (§3.2–§3.3, outpatient pooling, two-disease, pharmacy)

BASIC.append(outpatient.STAGE)
