-- How often each reason code explains a line (transforms/line_reasons.py), by ledger.
-- Parameter: year (optional).
SELECT ledger, code, count(*) AS lines
FROM (SELECT ledger, unnest(string_split(reason_codes, ',')) AS code FROM adjudicated
      WHERE month LIKE coalesce(CAST(getvariable('year') AS VARCHAR) || '-%', '%'))
WHERE code <> ''
GROUP BY ledger, code
ORDER BY ledger, lines DESC;
