-- Institution-reported amounts (settlements.hifp_pay …) that differ from the adjudicated ones,
-- summed by institution and fund. difference = reported − adjudicated.
-- Parameters: month or year (optional).
SELECT fixmedins_code, fund, count(DISTINCT setl_id) AS settlements,
       sum(reported_amt) AS reported_amt, sum(adjudicated_amt) AS adjudicated_amt,
       sum(difference) AS difference, sum(abs(difference)) AS abs_difference
FROM v_discrepancies
WHERE month = coalesce(getvariable('month'), month)
  AND month LIKE coalesce(CAST(getvariable('year') AS VARCHAR) || '-%', '%')
GROUP BY fixmedins_code, fund
ORDER BY abs_difference DESC;
