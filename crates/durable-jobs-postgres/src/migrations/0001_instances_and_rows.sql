-- Version 1: job instances and their rows.
--
-- Runs with search_path set to the configured schema, so every object is created there.
-- Ids and keys use the "C" collation: the engine lists keys in ascending byte order, and
-- only "C" compares text byte by byte (a locale collation would order the primary key
-- index, and so every range scan, differently).

-- One row per job instance that has an alarm or has had one. `alarm_at` is the instance's
-- single alarm in milliseconds since the epoch, NULL when it has none.
CREATE TABLE instances (
    id text COLLATE "C" PRIMARY KEY,
    alarm_at bigint
);

-- Finding due alarms reads only instances that have one; most instances are idle.
CREATE INDEX instances_alarm_at ON instances (alarm_at) WHERE alarm_at IS NOT NULL;

-- An instance's key space: the records the engine writes (metadata, state, queues...).
CREATE TABLE rows (
    instance text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (instance, key)
);
