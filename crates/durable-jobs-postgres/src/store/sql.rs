//! The runtime's statements, written once per schema.
//!
//! The schema name is checked ([`SchemaName`]) before it is put into any statement, so it
//! can carry no SQL; every value travels as a parameter.

use crate::schema::SchemaName;

/// Every statement the runtime sends, with the schema filled in.
#[derive(Debug)]
pub(crate) struct Statements {
    /// `$1` instance, `$2` keys: the rows among those keys.
    pub get_many: String,
    /// `$1` instance, `$2` start, `$3` end, `$4` limit: a bounded range, in key order.
    pub list_between: String,
    /// `$1` instance, `$2` start, `$3` limit: a range to the instance's last key.
    pub list_from: String,
    /// `$1` after, `$2` prefix, `$3` keys: the first instance after `$1` from `$2` on,
    /// with its rows among those keys (no row when it holds none of them).
    pub next_instance: String,
    /// `$1` instance, `$2` keys, `$3` values: stores every pair.
    pub put_rows: String,
    /// `$1` instance, `$2` keys: removes those rows.
    pub delete_rows: String,
    /// `$1` instance: removes every row of the instance.
    pub delete_all_rows: String,
    /// `$1` instance: removes the instance's alarm row.
    pub delete_instance: String,
    /// `$1` instance, `$2` time: sets the alarm, creating the row if needed.
    pub set_alarm: String,
    /// `$1` instance: removes the alarm.
    pub clear_alarm: String,
    /// `$1` channel: wakes the processes listening on it once the transaction commits.
    pub notify: &'static str,
    /// `$1` instance: the alarm's current token, its row locked until the step ends.
    pub fence: String,
    /// `$1` owner, `$2` lease end, `$3` now, `$4` limit, `$5` id prefixes of the jobs
    /// registered here: takes due alarms.
    pub claim: String,
    /// `$1` ids, `$2` tokens, `$3` lease end: extends the leases still held.
    pub renew: String,
    /// `$1` id, `$2` token, `$3` alarm seq at the claim, `$4` alarm time that fired:
    /// gives the lease back, and removes the alarm if nobody set it since the claim;
    /// returns the alarm left.
    pub release: String,
    /// `$1` id, `$2` token, `$3` time: gives the lease back, but keeps the alarm from being
    /// taken again until that time (a failed pass's backoff).
    pub hold_back: String,
    /// `$1` ids, `$2` tokens: gives leases back, alarms untouched.
    pub release_all: String,
    /// `$1` now, `$2` job prefixes: the earliest alarm set after now.
    pub next_due: String,
    /// `$1` up to, `$2` job prefixes: the earliest time at which an alarm due by then can
    /// be taken.
    pub next_claimable: String,
}

impl Statements {
    /// The statements of `schema`.
    pub fn new(schema: &SchemaName) -> Self {
        let s = schema.quoted();
        // Only alarms of jobs this process runs: during a rolling deploy, a process without
        // a new job must leave that job's alarms to those that have it.
        let registered = |n: u8| {
            format!(
                "EXISTS (SELECT 1 FROM unnest(${n}::text[]) AS job(prefix) \
                 WHERE starts_with(id, job.prefix))"
            )
        };
        let lease_unless_held_back = "alarm_lease_until = CASE WHEN instances.alarm_owner IS NULL \
             THEN NULL ELSE instances.alarm_lease_until END";
        Statements {
            get_many: format!(
                "SELECT key, value FROM {s}.rows WHERE instance = $1 AND key = ANY($2::text[])"
            ),
            // The subquery is one index seek, however many rows an instance holds.
            next_instance: format!(
                "WITH next AS (SELECT instance FROM {s}.rows WHERE instance > $1 \
                   AND instance >= $2 ORDER BY instance LIMIT 1) \
                 SELECT next.instance, r.key, r.value FROM next \
                 LEFT JOIN {s}.rows r ON r.instance = next.instance AND r.key = ANY($3::text[])"
            ),
            list_between: format!(
                "SELECT key, value FROM {s}.rows WHERE instance = $1 AND key >= $2 AND key < $3 \
                 ORDER BY key LIMIT $4"
            ),
            list_from: format!(
                "SELECT key, value FROM {s}.rows WHERE instance = $1 AND key >= $2 \
                 ORDER BY key LIMIT $3"
            ),
            put_rows: format!(
                "INSERT INTO {s}.rows (instance, key, value) \
                 SELECT $1, k, v FROM unnest($2::text[], $3::bytea[]) AS t(k, v) \
                 ON CONFLICT (instance, key) DO UPDATE SET value = EXCLUDED.value"
            ),
            delete_rows: format!(
                "DELETE FROM {s}.rows WHERE instance = $1 AND key = ANY($2::text[])"
            ),
            delete_all_rows: format!("DELETE FROM {s}.rows WHERE instance = $1"),
            delete_instance: format!("DELETE FROM {s}.instances WHERE id = $1"),
            // Writing the alarm ends a failed pass's backoff (a row held back has no owner):
            // new work is taken at once, as on the embedded runtime. A live lease stays.
            set_alarm: format!(
                "INSERT INTO {s}.instances AS instances (id, alarm_at) VALUES ($1, $2) \
                 ON CONFLICT (id) DO UPDATE SET alarm_at = EXCLUDED.alarm_at, \
                 alarm_seq = instances.alarm_seq + 1, {lease_unless_held_back}"
            ),
            clear_alarm: format!(
                "UPDATE {s}.instances AS instances SET alarm_at = NULL, \
                 alarm_seq = instances.alarm_seq + 1, {lease_unless_held_back} WHERE id = $1"
            ),
            notify: "SELECT pg_notify($1, '')",
            // FOR NO KEY UPDATE: no claim (which skips locked rows), renewal or release
            // changes the token before the step commits.
            fence: format!("SELECT alarm_token FROM {s}.instances WHERE id = $1 FOR NO KEY UPDATE"),
            claim: format!(
                "UPDATE {s}.instances SET alarm_owner = $1, \
                 alarm_token = nextval('{s}.alarm_tokens'), alarm_lease_until = $2 \
                 WHERE id IN (SELECT id FROM {s}.instances WHERE alarm_at <= $3 \
                   AND (alarm_lease_until IS NULL OR alarm_lease_until < $3) AND {} \
                   ORDER BY alarm_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
                 RETURNING id, alarm_token, alarm_at, alarm_seq",
                registered(5)
            ),
            renew: format!(
                "UPDATE {s}.instances AS i SET alarm_lease_until = $3 \
                 FROM unnest($1::text[], $2::bigint[]) AS held(id, token) \
                 WHERE i.id = held.id AND i.alarm_token = held.token RETURNING i.id"
            ),
            release: format!(
                "UPDATE {s}.instances SET alarm_owner = NULL, alarm_lease_until = NULL, \
                 alarm_at = CASE WHEN alarm_seq = $3 AND alarm_at = $4 THEN NULL \
                   ELSE alarm_at END \
                 WHERE id = $1 AND alarm_token = $2 RETURNING alarm_at"
            ),
            hold_back: format!(
                "UPDATE {s}.instances SET alarm_owner = NULL, alarm_lease_until = $3 \
                 WHERE id = $1 AND alarm_token = $2"
            ),
            release_all: format!(
                "UPDATE {s}.instances AS i SET alarm_owner = NULL, alarm_lease_until = NULL \
                 FROM unnest($1::text[], $2::bigint[]) AS held(id, token) \
                 WHERE i.id = held.id AND i.alarm_token = held.token"
            ),
            next_due: format!(
                "SELECT min(alarm_at) FROM {s}.instances WHERE alarm_at > $1 AND {}",
                registered(2)
            ),
            next_claimable: format!(
                "SELECT min(GREATEST(alarm_at, COALESCE(alarm_lease_until + 1, alarm_at))) \
                 FROM {s}.instances WHERE alarm_at <= $1 AND {}",
                registered(2)
            ),
        }
    }
}
