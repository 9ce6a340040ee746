-- A call has exactly one CDR: the writer inserts with ON CONFLICT (call_id)
-- DO NOTHING, so a row re-built after a controller restart (the agent
-- re-sends events the old controller applied but had not acknowledged) is
-- never a second bill. Duplicates already stored (calls split by a resync
-- before this version) keep their first row here; the later ones move to
-- cdr_duplicate, kept for inspection, not deleted.
CREATE TABLE IF NOT EXISTS cdr_duplicate AS
    SELECT * FROM cdr WHERE id NOT IN (SELECT MIN(id) FROM cdr GROUP BY call_id);
DELETE FROM cdr WHERE id NOT IN (SELECT MIN(id) FROM cdr GROUP BY call_id);
CREATE UNIQUE INDEX IF NOT EXISTS cdr_call_id ON cdr (call_id);
