-- Fund-supervision findings (基金监管疑点, issue 17): one row per finding, the rule's severity, the amount at
-- stake and the settlements that are its evidence (vola_evid), the person masked.
-- Parameters: month or year (optional).
SELECT v.month, v.rule_id, v.rule_name, v.sev_deg, v.vola_amt, v.vola_bhvr_type, v.psn_no, p.psn_name_masked,
       v.fixmedins_code, v.fixmedins_name, v.vola_evid, v.vola_cont
FROM violations v LEFT JOIN persons p USING (psn_no)
WHERE v.month = coalesce(getvariable('month'), v.month)
  AND v.month LIKE coalesce(CAST(getvariable('year') AS VARCHAR) || '-%', '%')
ORDER BY v.month, v.rule_id, v.finding_key;
