-- Legs that ended while another leg of their call was still up. The CDR
-- builder writes each here before the controller acknowledges the events it
-- came from, so a controller that dies (kill -9) mid-call loses no leg: the
-- next one reloads them and builds the call's CDR when its last leg ends.
-- A leg's row is deleted in the transaction that writes its call's CDR.
-- Times are µs since the Unix epoch (0: the leg never got there).
CREATE TABLE IF NOT EXISTS cdr_leg (
    uuid TEXT PRIMARY KEY,
    call_id TEXT NOT NULL,
    node TEXT NOT NULL,
    direction TEXT NOT NULL,
    cid_num TEXT NOT NULL,
    dest TEXT NOT NULL,
    app TEXT,
    cause TEXT NOT NULL,
    created_us BIGINT NOT NULL,
    originate_us BIGINT NOT NULL,
    answered_us BIGINT NOT NULL,
    hangup_us BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS cdr_leg_call_id ON cdr_leg (call_id);
