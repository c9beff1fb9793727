//! The statements on the alarm leases: claim, renew, release.

use std::sync::Arc;

use durable_jobs::StorageError;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::leases::Claim;
use crate::store::keys::{decode, encode};
use crate::store::{db_error, Store};

/// An alarm taken by this process.
#[derive(Debug)]
pub(crate) struct Claimed {
    /// The instance's id, as the engine names it.
    pub id: Arc<str>,
    /// The lease.
    pub claim: Claim,
}

async fn run(
    store: &Store,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, StorageError> {
    let conn = store.connection().await?;
    let statement = conn
        .prepare_cached(sql)
        .await
        .map_err(|e| db_error("cannot prepare a statement", &e))?;
    conn.query(&statement, params)
        .await
        .map_err(|e| db_error("a statement on the alarms failed", &e))
}

fn read<T: for<'a> tokio_postgres::types::FromSql<'a>>(
    row: &Row,
    index: usize,
) -> Result<T, StorageError> {
    row.try_get(index)
        .map_err(|e| db_error("an alarm row does not read", &e))
}

/// A claim's terms: who takes alarms due when, until when, how many, of which jobs.
pub(crate) struct Terms<'a> {
    /// This process's id.
    pub owner: &'a str,
    /// Alarms due at this time are taken.
    pub now: i64,
    /// The lease's end.
    pub lease_until: i64,
    /// At most this many.
    pub limit: i64,
    /// Only instances whose id starts with one of these (`{kind}:{name}:`).
    pub jobs: &'a [String],
}

/// Takes alarms due that no live lease holds, oldest first, as `terms` say. Rows another
/// process is claiming or writing right now are skipped, not waited for.
pub(crate) async fn claim(store: &Store, terms: Terms<'_>) -> Result<Vec<Claimed>, StorageError> {
    let params: [&(dyn ToSql + Sync); 5] = [
        &terms.owner,
        &terms.lease_until,
        &terms.now,
        &terms.limit,
        &terms.jobs,
    ];
    let rows = run(store, &store.sql.claim, &params).await?;
    rows.iter()
        .map(|row| {
            let stored: String = read(row, 0)?;
            Ok(Claimed {
                id: Arc::from(decode(&stored)?.as_ref()),
                claim: Claim {
                    token: read(row, 1)?,
                    at: read(row, 2)?,
                    seq: read(row, 3)?,
                },
            })
        })
        .collect()
}

/// Extends to `until` the leases of `ids` still held with `tokens`; returns the ids whose
/// lease was extended (the others were taken over).
pub(crate) async fn renew(
    store: &Store,
    ids: &[Arc<str>],
    tokens: &[i64],
    until: i64,
) -> Result<Vec<String>, StorageError> {
    let stored: Vec<String> = ids.iter().map(|id| encode(id).into_owned()).collect();
    let rows = run(store, &store.sql.renew, &[&stored, &tokens, &until]).await?;
    rows.iter()
        .map(|row| Ok(decode(&read::<String>(row, 0)?)?.into_owned()))
        .collect()
}

/// Gives back the lease `claim` of `id` after its pass succeeded, and removes the alarm
/// that fired unless the alarm was written since the claim. Returns the alarm left set
/// (`None` also when the lease had been taken over).
pub(crate) async fn release(
    store: &Store,
    id: &str,
    claim: Claim,
) -> Result<Option<i64>, StorageError> {
    let stored = encode(id);
    let params: [&(dyn ToSql + Sync); 4] = [&stored, &claim.token, &claim.seq, &claim.at];
    let rows = run(store, &store.sql.release, &params).await?;
    match rows.first() {
        Some(row) => read(row, 0),
        None => Ok(None),
    }
}

/// Gives back the lease with `token` of `id` after its pass failed: the alarm stays, and
/// no process takes it before `retry_at`.
pub(crate) async fn hold_back(
    store: &Store,
    id: &str,
    token: i64,
    retry_at: i64,
) -> Result<(), StorageError> {
    let stored = encode(id);
    let until = retry_at.saturating_sub(1);
    run(store, &store.sql.hold_back, &[&stored, &token, &until])
        .await
        .map(drop)
}

/// Gives back the leases of `ids` held with `tokens`, leaving their alarms due: another
/// process, or this one restarted, runs them.
pub(crate) async fn release_all(
    store: &Store,
    ids: &[Arc<str>],
    tokens: &[i64],
) -> Result<(), StorageError> {
    if ids.is_empty() {
        return Ok(());
    }
    let stored: Vec<String> = ids.iter().map(|id| encode(id).into_owned()).collect();
    run(store, &store.sql.release_all, &[&stored, &tokens])
        .await
        .map(drop)
}

/// The earliest alarm of `jobs` set after `now`, if any.
pub(crate) async fn next_due(
    store: &Store,
    now: i64,
    jobs: &[String],
) -> Result<Option<i64>, StorageError> {
    let rows = run(store, &store.sql.next_due, &[&now, &jobs]).await?;
    match rows.first() {
        Some(row) => read(row, 0),
        None => Ok(None),
    }
}

/// The earliest time at which an alarm of `jobs` due by `up_to` can be taken (its time,
/// or the end of the lease or backoff that holds it).
pub(crate) async fn next_claimable(
    store: &Store,
    up_to: i64,
    jobs: &[String],
) -> Result<Option<i64>, StorageError> {
    let rows = run(store, &store.sql.next_claimable, &[&up_to, &jobs]).await?;
    match rows.first() {
        Some(row) => read(row, 0),
        None => Ok(None),
    }
}
