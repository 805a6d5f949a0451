-- Start here: what the database holds. Open it read-only first:
--   duckdb -readonly yibao.duckdb          (then: .read queries/00_overview.sql)
-- Saved queries take their parameters from DuckDB variables, set before .read, e.g.
--   SET VARIABLE month = '2025-03'   SET VARIABLE year = 2025   SET VARIABLE psn_no = 'P000001'
-- A variable left unset means "every month / year".

-- months loaded, with the latest run of each
SELECT month, run_id, status, rows_in, rows_accepted, rows_rejected, lines_adjudicated, started_at, finished_at,
       code_version, policy_version
FROM (SELECT *, row_number() OVER (PARTITION BY month ORDER BY started_at DESC) AS rn FROM runs)
WHERE rn = 1
ORDER BY month;

-- the tables and views you can query (the v_ views are the auditors' and analysts' entry points)
SELECT table_name, table_type FROM information_schema.tables
WHERE table_schema = 'main' ORDER BY table_type, table_name;
