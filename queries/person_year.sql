-- One person's lines and accumulators (what `yibao explain PSN_NO` prints).
-- Parameters: psn_no (required), year (optional).
SELECT setl_time, setl_id, orig_setl_id, ledger, fixmedins_code, hosp_lv, medfee_sumamt, inscp_scp_amt,
       hifp_pay, hifmi_pay, maf_pay, maf_tilt_pay, hosp_part_amt, acct_pay, acct_mulaid_pay, psn_cash_pay,
       reason_codes, explanation
FROM adjudicated
WHERE psn_no = getvariable('psn_no')
  AND month LIKE coalesce(CAST(getvariable('year') AS VARCHAR) || '-%', '%')
ORDER BY setl_time, setl_id;

SELECT year, month, name, value
FROM accumulators
WHERE psn_no = getvariable('psn_no') AND year = coalesce(getvariable('year'), year)
ORDER BY year, name, month;

SELECT psn_no, psn_name_masked, certno_masked, identity_group, insuplc_admdvs, rural, as_of
FROM persons WHERE psn_no = getvariable('psn_no');
