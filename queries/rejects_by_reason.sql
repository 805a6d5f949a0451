-- Rejected input lines by month and reason (DATA.md §6). Parameter: month or year (optional).
SELECT month, reason_code, count(*) AS rows, min(source_file) AS first_file, min(source_row) AS first_row
FROM rejects
WHERE month = coalesce(getvariable('month'), month)
  AND month LIKE coalesce(CAST(getvariable('year') AS VARCHAR) || '-%', '%')
GROUP BY month, reason_code
ORDER BY month, rows DESC;
