-- What an operator reads in a CDR (issue 15). Times are µs since the Unix
-- epoch on FreeSWITCH's clock, as every other *_create/_answer/_hangup
-- column; durations are seconds.
-- The Originator run that launched the call (its switchy_originator
-- variable); NULL for calls it did not launch.
ALTER TABLE cdr ADD COLUMN run_id TEXT;
-- Caller id name, the dialplan context of the call (its inbound leg's, else
-- the caller's), and the codec the caller leg read.
ALTER TABLE cdr ADD COLUMN caller_name TEXT;
ALTER TABLE cdr ADD COLUMN context TEXT;
ALTER TABLE cdr ADD COLUMN codec TEXT;
-- The caller leg's SIP Call-ID, its final SIP status (200 when answered,
-- else sip_term_status or sip_invite_failure_status) and Q.850 cause code
-- (hangup_cause_q850).
ALTER TABLE cdr ADD COLUMN sip_call_id TEXT;
ALTER TABLE cdr ADD COLUMN sip_status BIGINT;
ALTER TABLE cdr ADD COLUMN q850 BIGINT;
-- The caller leg's first ringing or early media (FreeSWITCH's
-- Caller-Channel-Progress-Time / -Progress-Media-Time): PDD is
-- caller_progress - caller_create.
ALTER TABLE cdr ADD COLUMN caller_progress BIGINT;
-- The caller leg's create → hangup and answer → hangup (billable), s.
ALTER TABLE cdr ADD COLUMN duration_s REAL;
ALTER TABLE cdr ADD COLUMN billsec_s REAL;
-- A stored leg's details (JSON: caller_name, context, codec, sip_call_id,
-- sip_status, q850, progress_us, run_id).
ALTER TABLE cdr_leg ADD COLUMN details TEXT;
