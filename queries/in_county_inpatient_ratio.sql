-- POLICY §3.6 monitoring figure: basic-fund payment / in-scope cost of Suizhou resident stays
-- in the person's county, by month (target about 70%). Parameter: year (optional).
SELECT month, stays, inscp_scp_amt, hifp_pay, payment_ratio
FROM v_in_county_inpatient_ratio
WHERE year = coalesce(getvariable('year'), year)
ORDER BY month;
