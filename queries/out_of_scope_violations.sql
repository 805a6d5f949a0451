-- POLICY §3.10: stays of rural low-income persons above their out-of-scope limit (not reversed).
-- Parameters: month or year (optional).  Masked person columns only.
SELECT month, fixmedins_code, hosp_lv, relation, setl_id, psn_no, psn_name_masked, certno_masked,
       total_amt, out_of_scope_amt, out_of_scope_ratio, limit_rate, excess_amt,
       excess_to_institution, hosp_part_amt
FROM v_out_of_scope_stays
WHERE violation AND NOT reversed
  AND month = coalesce(getvariable('month'), month)
  AND month LIKE coalesce(CAST(getvariable('year') AS VARCHAR) || '-%', '%')
ORDER BY excess_amt DESC, month, fixmedins_code;
