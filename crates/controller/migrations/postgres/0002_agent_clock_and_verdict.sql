-- Times on the agent's clock (µs since the Unix epoch, read where the
-- agent talks to FreeSWITCH): when it wrote the call's `bgapi originate`
-- and when it received the job's BACKGROUND_JOB (+OK: the caller leg was
-- answered). Their difference is the call setup latency in µs, free of
-- FreeSWITCH's 20 ms event-clock steps and of the controller's distance.
ALTER TABLE cdr ADD COLUMN originate_sent_agent BIGINT;
ALTER TABLE cdr ADD COLUMN originate_done_agent BIGINT;
-- The call's app verdict, when its app checks something (DtmfChecker's
-- digits, PlayRec's cycles): `passed`, or `failed: <why>`. A failed
-- verdict also sets `failed`.
ALTER TABLE cdr ADD COLUMN verdict TEXT;
