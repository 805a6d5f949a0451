-- The monthly clearing statement (医保基金月度清算, issue 17) by institution: what each fund and account owes
-- the institution (net_payable_amt), what it reported, the difference, and reversals of earlier months apart.
-- Parameters: month (optional).
SELECT month, fixmedins_code, fixmedins_name, hosp_lv, line_kind, fund, fund_label, adjudicated_amt,
       reported_amt, difference, net_payable_amt
FROM v_clearing
WHERE month = coalesce(getvariable('month'), month)
ORDER BY month, fixmedins_code, line_kind DESC, fund;
