//! Continuous alarms: claim the due run, execute it without the lock, complete it.

use super::erased::{ErasedContinuous, RunInput, RunOutcome};
use super::{alarm_time, ErrorInfo, Record, RECORD_KEY, STATE_KEY};
use crate::adapters::{Clock, Storage, WriteBatch};
use crate::engine::Engine;
use crate::errors::JobError;
use crate::events::EventKind;
use crate::retry::hash_str;
use crate::services::codec;
use crate::services::metadata::{Metadata, Status, META_KEY};
use crate::services::{purge, schedule};

struct Claim {
    meta: Metadata,
    trigger_at: Option<i64>,
    attempt: u32,
    run_count: u64,
    state: Vec<u8>,
}

/// Handles one alarm of a Continuous instance. The caller holds the execution guard.
pub(crate) async fn alarm<B: Storage + Clock>(
    engine: &Engine<B>,
    job: &dyn ErasedContinuous,
) -> Result<(), JobError> {
    let Some(claim) = claim(engine).await? else {
        return Ok(());
    };
    let config = job.config();
    let final_attempt = !config.retry.retries_after(claim.attempt);
    let instance = claim.meta.id.clone();
    engine.before_user_code().await?;
    let started = engine.now();
    let outcome = job
        .run(RunInput {
            state: claim.state.clone(),
            instance: instance.clone(),
            run_count: claim.run_count,
            attempt: claim.attempt,
            final_attempt,
            now: started,
        })
        .await;

    let _lock = engine.lock.lock().await;
    let found = engine.backend.get_many(&[META_KEY, RECORD_KEY]).await?;
    let meta: Option<Metadata> = codec::decode_opt(META_KEY, found[0].as_ref())?;
    let rec: Option<Record> = codec::decode_opt(RECORD_KEY, found[1].as_ref())?;
    let now = engine.now();
    let mut batch = WriteBatch::new();
    let (mut meta, mut rec) = match (meta, rec) {
        (Some(m), Some(r)) if m.epoch == claim.meta.epoch && !m.status.is_stopped() => (m, r),
        // Stopped (or stopped and started again) while running: the late result is
        // discarded, as the stop already took effect.
        (meta, rec) => {
            schedule::reconcile(
                &mut batch,
                None,
                alarm_time(meta.as_ref(), rec.as_ref()),
                true,
            );
            return engine.commit(batch, Vec::new()).await;
        }
    };
    let mut events = Vec::new();
    match outcome {
        RunOutcome::Done { state, terminate } => {
            rec.run_count += 1;
            rec.last_run_at = Some(now);
            rec.attempt = 0;
            rec.retry_at = None;
            advance(job, &mut rec, &claim, now);
            events.push(engine.event(
                &instance,
                EventKind::ContinuousExecuted {
                    run_count: rec.run_count,
                    duration_ms: now - started,
                },
            ));
            if let Some(reason) = terminate {
                meta.set_status(
                    Status::Stopped {
                        stopped_at: now,
                        reason: reason.clone(),
                    },
                    now,
                );
                purge::schedule(&mut meta, now, job.config().retention_ms);
                batch
                    .put(META_KEY, codec::encode(&meta)?)
                    .delete(STATE_KEY)
                    .delete(RECORD_KEY);
                events.push(engine.event(&instance, EventKind::ContinuousStopped { reason }));
                schedule::reconcile(&mut batch, None, alarm_time(Some(&meta), None), true);
                return engine.commit(batch, events).await;
            }
            if matches!(meta.status, Status::Error { .. }) {
                meta.set_status(Status::Active, now);
                batch.put(META_KEY, codec::encode(&meta)?);
            }
            if let Some(state) = state {
                batch.put(STATE_KEY, state);
            }
        }
        RunOutcome::Failed { error } => {
            events.push(engine.event(
                &instance,
                EventKind::ContinuousError {
                    error: error.clone(),
                    attempt: claim.attempt,
                },
            ));
            if final_attempt {
                tracing::warn!(instance = %instance, %error, attempts = claim.attempt, "continuous run failed");
                rec.attempt = 0;
                rec.retry_at = None;
                rec.last_error = Some(ErrorInfo {
                    message: error.clone(),
                    at: now,
                    attempts: claim.attempt,
                });
                meta.set_status(
                    Status::Error {
                        error_at: now,
                        error,
                    },
                    now,
                );
                batch.put(META_KEY, codec::encode(&meta)?);
                advance(job, &mut rec, &claim, now);
            } else {
                let seed = hash_str(&instance.to_string());
                let delay = config.retry.delay(claim.attempt, seed);
                rec.attempt = claim.attempt;
                rec.retry_at = Some(now.saturating_add(crate::retry::millis(delay)));
            }
        }
    }
    if rec.retry_at.is_none() {
        if let Some(next_run_at) = rec.next_run_at {
            events.push(engine.event(&instance, EventKind::ContinuousScheduled { next_run_at }));
        }
    }
    batch.put(RECORD_KEY, codec::encode(&rec)?);
    schedule::reconcile(&mut batch, None, alarm_time(Some(&meta), Some(&rec)), true);
    engine.commit(batch, events).await
}

/// Reads the instance under the lock and says whether a run is due.
async fn claim<B: Storage + Clock>(engine: &Engine<B>) -> Result<Option<Claim>, JobError> {
    let _lock = engine.lock.lock().await;
    let found = engine
        .backend
        .get_many(&[META_KEY, RECORD_KEY, STATE_KEY])
        .await?;
    let meta: Option<Metadata> = codec::decode_opt(META_KEY, found[0].as_ref())?;
    let rec: Option<Record> = codec::decode_opt(RECORD_KEY, found[1].as_ref())?;
    let now = engine.now();
    let mut batch = WriteBatch::new();
    let Some(meta) = meta else {
        batch.set_alarm(None);
        engine.commit(batch, Vec::new()).await?;
        return Ok(None);
    };
    if meta.status.is_stopped() {
        let batch = if purge::is_due(&meta, now) {
            purge::purge_batch()
        } else {
            let mut b = WriteBatch::new();
            b.set_alarm(meta.purge_at);
            b
        };
        engine.commit(batch, Vec::new()).await?;
        return Ok(None);
    }
    let rec = rec.unwrap_or_default();
    if !rec.is_due(now) {
        batch.set_alarm(rec.alarm());
        engine.commit(batch, Vec::new()).await?;
        return Ok(None);
    }
    Ok(Some(Claim {
        trigger_at: rec.trigger_at,
        attempt: rec.attempt + 1,
        run_count: rec.run_count,
        // A missing state decodes as `null`, which fails the run with a clear error for
        // any state type that needs a value.
        state: found[2].clone().unwrap_or_else(|| b"null".to_vec()),
        meta,
    }))
}

/// After a run (or its final failure): consume the trigger it served and move the schedule
/// past `now` from the previous scheduled time.
fn advance(job: &dyn ErasedContinuous, rec: &mut Record, claim: &Claim, now: i64) {
    if claim.trigger_at.is_some() && rec.trigger_at == claim.trigger_at {
        rec.trigger_at = None;
    }
    if let Some(prev) = rec.next_run_at.filter(|t| *t <= now) {
        rec.next_run_at = job.config().schedule.next_after(prev, now);
    }
}
