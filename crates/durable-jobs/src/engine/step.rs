//! A step: one atomic storage transition of one instance.
//!
//! Every request and both ends of every execution (claim, then complete) are steps. A step
//! holds the instance's lock from its read to its commit, reads the metadata, the kind's
//! record and any extra keys in one `get_many`, lets the kind change them, and commits
//! what changed together with the alarm those records now imply and the step's lifecycle
//! events (see "Life of a step" in `docs/ARCHITECTURE.md`).

use futures::lock::MutexGuard;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Engine;
use crate::adapters::{Clock, ListOptions, StepKind, Storage, WriteBatch};
use crate::errors::JobError;
use crate::events::{EventKind, JobEvent};
use crate::ids::InstanceId;
use crate::services::alarm::earliest;
use crate::services::codec;
use crate::services::idempotency;
use crate::services::metadata::{Metadata, META_KEY};
use crate::services::purge;

/// The record a job kind keeps beside the metadata, read by every step of its instances.
pub(crate) trait KindRecord: Serialize + DeserializeOwned + Default {
    /// Its storage key.
    const KEY: &'static str;

    /// When the instance's alarm must fire, given this record and the metadata: the
    /// earliest of the kind's due work, `None` for no alarm.
    fn alarm(&self, meta: Option<&Metadata>) -> Option<i64>;
}

/// One open step of an instance. Dropping it without [`finish`](Self::finish) commits
/// nothing, which is what a read-only request does.
#[must_use = "a step commits nothing until `finish` is called"]
pub(crate) struct Step<'a, B: Storage, R> {
    engine: &'a Engine<B>,
    /// Ends the storage's step when dropped, before the lock below is released.
    _scope: StepScope<'a, B>,
    /// Held until the step is finished or dropped: steps of one instance never overlap.
    _lock: MutexGuard<'a, ()>,
    instance: &'a InstanceId,
    now: i64,
    meta: Option<Metadata>,
    meta_changed: bool,
    record: R,
    /// Whether the record was stored when the step began.
    record_found: bool,
    record_changed: bool,
    record_deleted: bool,
    /// The extra keys asked for, as read.
    extra: Vec<Option<Vec<u8>>>,
    /// The alarm the stored records implied when the step began.
    alarm_before: Option<i64>,
    /// The platform's alarm was consumed (the step runs on an alarm): write the alarm even
    /// if the records still imply the same time.
    rearm: bool,
    /// Write no alarm at all (see [`leave_alarm`](Self::leave_alarm)).
    leave_alarm: bool,
    /// Delete everything of the instance instead of the step's writes.
    purge: bool,
    writes: WriteBatch,
    events: Vec<JobEvent>,
    /// The earliest expiry of the event ids this step remembered: a sweep in the same step
    /// reads storage, which does not hold them yet.
    remembered_until: Option<i64>,
}

/// The storage's side of an open step, ended when dropped.
struct StepScope<'a, B: Storage> {
    backend: &'a B,
}

impl<B: Storage> Drop for StepScope<'_, B> {
    fn drop(&mut self) {
        self.backend.end_step();
    }
}

impl<B: Storage + Clock> Engine<B> {
    /// Opens a step for a request on `instance`, reading `extra` keys with the records.
    pub(crate) async fn step<'a, R: KindRecord>(
        &'a self,
        instance: &'a InstanceId,
        extra: &[&str],
    ) -> Result<Step<'a, B, R>, JobError> {
        Step::open(self, instance, extra, false).await
    }

    /// Opens a step of the running alarm. The platform consumed the alarm that woke the
    /// instance, so this step always writes the alarm again. It also ends the mark of
    /// [`Step::mark_running`]: the step that records an execution's outcome holds the lock
    /// before a request can see the work as no longer running.
    pub(crate) async fn alarm_step<'a, R: KindRecord>(
        &'a self,
        instance: &'a InstanceId,
        extra: &[&str],
    ) -> Result<Step<'a, B, R>, JobError> {
        let step = Step::open(self, instance, extra, true).await?;
        self.running.borrow_mut().clear();
        Ok(step)
    }
}

impl<'a, B: Storage + Clock, R: KindRecord> Step<'a, B, R> {
    async fn open(
        engine: &'a Engine<B>,
        instance: &'a InstanceId,
        extra: &[&str],
        rearm: bool,
    ) -> Result<Self, JobError> {
        let lock = engine.lock.lock().await;
        let kind = if rearm {
            StepKind::Alarm
        } else {
            StepKind::Request
        };
        engine.backend.begin_step(kind).await?;
        let scope = StepScope {
            backend: &engine.backend,
        };
        let mut keys = Vec::with_capacity(2 + extra.len());
        keys.extend([META_KEY, R::KEY]);
        keys.extend_from_slice(extra);
        let mut found = engine.backend.get_many(&keys).await?.into_iter();
        let meta: Option<Metadata> = decode_next(&mut found, META_KEY)?;
        let record: Option<R> = decode_next(&mut found, R::KEY)?;
        let record_found = record.is_some();
        let record = record.unwrap_or_default();
        let alarm_before = alarm_of(&record, meta.as_ref());
        Ok(Step {
            engine,
            _scope: scope,
            _lock: lock,
            instance,
            now: engine.now(),
            meta,
            meta_changed: false,
            record,
            record_found,
            record_changed: false,
            record_deleted: false,
            extra: found.collect(),
            alarm_before,
            rearm,
            leave_alarm: false,
            purge: false,
            writes: WriteBatch::new(),
            events: Vec::new(),
            remembered_until: None,
        })
    }

    /// The time the step began (ms since the epoch).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// The instance the step works on.
    pub fn instance(&self) -> &'a InstanceId {
        self.instance
    }

    /// The engine: for what the step needs of it besides storage (is an execution running?).
    pub fn engine(&self) -> &'a Engine<B> {
        self.engine
    }

    /// The metadata, if the instance exists.
    pub fn meta(&self) -> Option<&Metadata> {
        self.meta.as_ref()
    }

    /// The metadata, to change (written at `finish`).
    pub fn meta_mut(&mut self) -> Option<&mut Metadata> {
        self.meta_changed |= self.meta.is_some();
        self.meta.as_mut()
    }

    /// Changes the metadata, if the instance exists, with `change`, which says whether it
    /// changed anything: only then is the metadata written.
    pub fn change_meta(&mut self, change: impl FnOnce(&mut Metadata) -> bool) -> bool {
        let changed = self.meta.as_mut().is_some_and(change);
        self.meta_changed |= changed;
        changed
    }

    /// Creates the instance's metadata if it does not exist yet.
    pub fn create_meta(&mut self) {
        if self.meta.is_none() {
            self.meta = Some(Metadata::new(self.instance.clone(), self.now));
            self.meta_changed = true;
        }
    }

    /// Replaces the metadata.
    pub fn set_meta(&mut self, meta: Metadata) {
        self.meta_changed = true;
        self.meta = Some(meta);
    }

    /// The kind's record (its default when none is stored).
    pub fn record(&self) -> &R {
        &self.record
    }

    /// Whether the kind's record was stored when the step began.
    pub fn record_found(&self) -> bool {
        self.record_found
    }

    /// The kind's record, to change (written at `finish`).
    pub fn record_mut(&mut self) -> &mut R {
        self.record_changed = true;
        &mut self.record
    }

    /// Replaces the kind's record.
    pub fn set_record(&mut self, record: R) {
        self.record_changed = true;
        self.record = record;
    }

    /// Deletes the kind's record (a later change writes it again).
    pub fn delete_record(&mut self) {
        self.record = R::default();
        self.record_changed = false;
        self.record_deleted = true;
    }

    /// Decodes extra key `index` (in the order they were asked for).
    pub fn extra<T: DeserializeOwned>(
        &self,
        index: usize,
        key: &str,
    ) -> Result<Option<T>, JobError> {
        codec::decode_opt(key, self.extra.get(index).and_then(Option::as_ref))
    }

    /// Takes the raw bytes of extra key `index`.
    pub fn take_extra(&mut self, index: usize) -> Option<Vec<u8>> {
        self.extra.get_mut(index).and_then(Option::take)
    }

    /// Reads and decodes one more record.
    pub async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, JobError> {
        let bytes = self.engine.backend.get(key).await?;
        codec::decode_opt(key, bytes.as_ref())
    }

    /// Reads and decodes an ordered range of records.
    pub async fn list<T: DeserializeOwned>(
        &self,
        options: ListOptions<'_>,
    ) -> Result<Vec<(String, T)>, JobError> {
        let rows = self.engine.backend.list(options).await?;
        rows.into_iter()
            .map(|(key, bytes)| codec::decode(&key, &bytes).map(|value| (key, value)))
            .collect()
    }

    /// The step's other writes (queued events, idempotency records...).
    pub fn writes(&mut self) -> &mut WriteBatch {
        &mut self.writes
    }

    /// Encodes and writes a record under `key`.
    pub fn put<T: Serialize>(&mut self, key: impl Into<String>, value: &T) -> Result<(), JobError> {
        self.writes.put(key, codec::encode(value)?);
        Ok(())
    }

    /// Remembers `event_id` with `record` until `expires_at`. `replaces` is the expiry of
    /// the record it overwrites, if that one expired.
    pub fn remember_id<T: Serialize>(
        &mut self,
        event_id: &str,
        record: &T,
        expires_at: i64,
        replaces: Option<i64>,
    ) -> Result<(), JobError> {
        idempotency::put(&mut self.writes, event_id, record, expires_at, replaces)?;
        self.remembered_until = earliest([self.remembered_until, Some(expires_at)]);
        self.change_meta(|meta| {
            let sooner = meta.sweep_at.is_none_or(|t| expires_at < t);
            if sooner {
                meta.sweep_at = Some(expires_at);
            }
            sooner
        });
        Ok(())
    }

    /// Remembers `event_id` with `record` until it is replaced (a queued or dead event).
    pub fn pin_id<T: Serialize>(
        &mut self,
        event_id: &str,
        record: &T,
        replaces: Option<i64>,
    ) -> Result<(), JobError> {
        idempotency::put_pinned(&mut self.writes, event_id, record, replaces)
    }

    /// Forgets up to `limit` expired event ids, and notes when the next one expires.
    pub async fn sweep_ids(&mut self, limit: usize) -> Result<(), JobError> {
        let swept =
            idempotency::sweep(&self.engine.backend, &mut self.writes, self.now, limit).await?;
        let next = earliest([swept.next_expiry, self.remembered_until]);
        self.change_meta(|meta| {
            let changed = meta.sweep_at != next;
            meta.sweep_at = next;
            changed
        });
        Ok(())
    }

    /// Reports a lifecycle event of the instance once the step is durable.
    pub fn emit(&mut self, kind: EventKind) {
        let event = self.engine.event(self.instance, kind);
        self.events.push(event);
    }

    /// Reports `event`, built earlier, once the step is durable, in order with the step's
    /// other events.
    pub fn report(&mut self, event: JobEvent) {
        self.events.push(event);
    }

    /// Marks `keys` as what the coming executions work on, so that requests leave them
    /// alone from this claim until the step that records the outcomes. Set under the lock:
    /// a request between the claim and the user code must already see them.
    pub fn mark_running(&mut self, keys: Vec<String>) {
        *self.engine.running.borrow_mut() = keys;
    }

    /// Leaves the alarm as stored, even on an alarm step: a claim whose execution follows
    /// keeps the alarm that woke it, and the step that records the outcome sets it.
    pub fn leave_alarm(&mut self) {
        self.leave_alarm = true;
    }

    /// Deletes everything of the instance, alarm included, instead of the step's writes.
    pub fn purge(&mut self) {
        self.purge = true;
    }

    /// Commits the step: what changed, the alarm the records now imply, and the events.
    pub async fn finish(mut self) -> Result<(), JobError> {
        if self.purge {
            return self.engine.commit(purge::purge_batch(), self.events).await;
        }
        if self.meta_changed {
            if let Some(meta) = &self.meta {
                self.writes.put(META_KEY, codec::encode(meta)?);
            }
        }
        if self.record_changed {
            self.writes.put(R::KEY, codec::encode(&self.record)?);
        } else if self.record_deleted && self.record_found {
            self.writes.delete(R::KEY);
        }
        let alarm = alarm_of(&self.record, self.meta.as_ref());
        if !self.leave_alarm && (self.rearm || alarm != self.alarm_before) {
            self.writes.set_alarm(alarm);
        }
        self.engine.commit(self.writes, self.events).await
    }
}

/// The instance's alarm: the kind's next work, or a sweep of expired event ids.
fn alarm_of<R: KindRecord>(record: &R, meta: Option<&Metadata>) -> Option<i64> {
    earliest([record.alarm(meta), meta.and_then(|m| m.sweep_at)])
}

fn decode_next<T: DeserializeOwned>(
    found: &mut impl Iterator<Item = Option<Vec<u8>>>,
    key: &str,
) -> Result<Option<T>, JobError> {
    codec::decode_opt(key, found.next().flatten().as_ref())
}
