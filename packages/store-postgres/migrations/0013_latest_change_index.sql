-- An alarm's current severity is its latest change, and of changes stamped alike the later
-- event (Vitrage stamps to the second, so an alarm's changes often share one). The index gives
-- that row first to a backward scan; on (vitrage_id, at) alone PostgreSQL picked among equal
-- times by their place in the index (218 of 300 same-second alarms reported an earlier change),
-- and ordering by event_id too made every active alarm's lookup sort. The index it supersedes is
-- dropped by 0015, on its own: a drop that must wait for a long reader then gives way and tries
-- again without building this one again each time (review 61).
CREATE INDEX history_change_latest_idx ON history_change (vitrage_id, at, event_id);
