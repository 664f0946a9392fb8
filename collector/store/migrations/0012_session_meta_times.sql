-- When the event that set each key of a session's meta occurred (key → time): the session row keeps the
-- latest event's value of each key, so batches of one session written by several writers, delivery
-- processes or collectors merge alike in any commit order (before, the batch committed last won). Keys
-- written before have no time; the next event that sets one replaces it.
ALTER TABLE sessions ADD COLUMN meta_at jsonb NOT NULL DEFAULT '{}';
