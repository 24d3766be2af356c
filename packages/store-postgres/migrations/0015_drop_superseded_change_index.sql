-- history_change (vitrage_id, at) is a prefix of 0013's index: no query needs it any more, and
-- every write paid for it.
DROP INDEX IF EXISTS history_change_alarm_idx;
