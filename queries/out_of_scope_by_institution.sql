-- POLICY §3.10 per institution and month: controlled stays, violations, totals, ratio, excess.
-- Parameters: month or year (optional).
SELECT fixmedins_code, month, hosp_lv, stays, violations, total_amt, out_of_scope_amt, out_of_scope_ratio,
       excess_amt, hosp_part_amt
FROM v_out_of_scope_by_institution
WHERE month = coalesce(getvariable('month'), month)
  AND month LIKE coalesce(CAST(getvariable('year') AS VARCHAR) || '-%', '%')
ORDER BY violations DESC, excess_amt DESC, fixmedins_code, month;
