-- One row per finished call. Times are µs since the Unix epoch (FreeSWITCH's
-- clock for channel events, the controller's for originate requests); NULL
-- when the call never got there.
CREATE TABLE IF NOT EXISTS cdr (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id TEXT NOT NULL,
    node TEXT NOT NULL,
    app TEXT,
    hangup_cause TEXT NOT NULL,
    failed INTEGER NOT NULL,
    caller_uuid TEXT,
    caller_num TEXT,
    callee_num TEXT,
    caller_create BIGINT,
    caller_answer BIGINT,
    caller_req_originate BIGINT,
    caller_originate BIGINT,
    caller_hangup BIGINT,
    job_launch BIGINT,
    callee_node TEXT,
    callee_uuid TEXT,
    callee_create BIGINT,
    callee_answer BIGINT,
    callee_hangup BIGINT,
    active_sessions BIGINT NOT NULL,
    erlangs DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS cdr_caller_create ON cdr (caller_create);
