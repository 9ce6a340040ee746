-- Load-test runs: what `run` (the Originator) was asked for, so a plot can
-- draw the target rate and the limit and title itself with the parameters.
-- params is the Originator's configuration as JSON; started_us is µs since
-- the Unix epoch. CDRs name their run in cdr.run_id.
CREATE TABLE IF NOT EXISTS run (
    run_id TEXT PRIMARY KEY,
    started_us BIGINT NOT NULL,
    params TEXT NOT NULL
);
