-- Fund expenditure by month and fund (all regions, schemes, ledgers and levels together).
-- Parameter: year (optional). persons here are summed per ledger/level group: for distinct persons
-- over a month use v_fund_lines (see the second query).
SELECT month, fund, any_value(fund_label) AS fund_label, sum(amount) AS amount, sum(lines) AS lines
FROM v_fund_expenditure
WHERE year = coalesce(getvariable('year'), year)
GROUP BY month, fund
ORDER BY month, fund;

-- distinct persons paid by each fund per month
SELECT month, fund, count(DISTINCT psn_no) AS persons, sum(amount) AS amount
FROM v_fund_lines
WHERE amount <> 0 AND year = coalesce(getvariable('year'), year)
GROUP BY month, fund
ORDER BY month, fund;
