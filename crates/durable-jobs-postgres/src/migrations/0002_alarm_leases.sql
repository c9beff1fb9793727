-- Version 2: the lease on an instance's alarm, so that many processes share the alarms
-- and exactly one runs each pass.
--
-- A process takes a due alarm by setting `alarm_owner` (its random id), a fresh
-- `alarm_token` and `alarm_lease_until` (ms since the epoch), and renews the lease while
-- the pass runs. Every step of the pass checks, inside its transaction, that the token is
-- still its own: a process whose lease was taken over can never commit late.
--
-- `alarm_seq` counts the writes of `alarm_at`; the pass's holder removes the alarm that
-- fired only if nobody wrote it since the claim, so an alarm set again to the same time
-- by another process is never lost.
ALTER TABLE instances
    ADD COLUMN alarm_owner text,
    ADD COLUMN alarm_token bigint NOT NULL DEFAULT 0,
    ADD COLUMN alarm_lease_until bigint,
    ADD COLUMN alarm_seq bigint NOT NULL DEFAULT 0;

-- Tokens come from one sequence rather than counting per row: a purge deletes the
-- instance's row, and a row made again must not hand out a token that a process fenced
-- out before the purge still holds.
CREATE SEQUENCE alarm_tokens;
