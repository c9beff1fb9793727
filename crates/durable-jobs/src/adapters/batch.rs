//! The writes of one step.

/// One change to the instance's alarm, committed with the writes of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmWrite {
    /// Fire at this time (ms since the epoch); replaces any earlier alarm.
    Set(i64),
    /// No alarm.
    Clear,
}

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Store `value` under `key`.
    Put(String, Vec<u8>),
    /// Remove `key`.
    Delete(String),
}

/// The writes of one step, committed all together or not at all.
///
/// Deleting everything (if asked) comes first, then the puts and deletes in order, then the
/// alarm change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    delete_all: bool,
    ops: Vec<WriteOp>,
    alarm: Option<AlarmWrite>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, key: impl Into<String>, value: Vec<u8>) -> &mut Self {
        self.ops.push(WriteOp::Put(key.into(), value));
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<String>) -> &mut Self {
        self.ops.push(WriteOp::Delete(key.into()));
        self
    }

    /// Removes every key of the instance, and its alarm, before the batch's other writes.
    pub fn delete_all(&mut self) -> &mut Self {
        self.delete_all = true;
        self
    }

    /// Sets (`Some`) or clears (`None`) the alarm as part of the batch.
    pub fn set_alarm(&mut self, at: Option<i64>) -> &mut Self {
        self.alarm = Some(match at {
            Some(t) => AlarmWrite::Set(t),
            None => AlarmWrite::Clear,
        });
        self
    }

    /// Whether the batch removes every key of the instance first.
    pub fn deletes_all(&self) -> bool {
        self.delete_all
    }

    /// The puts and deletes, in order.
    pub fn ops(&self) -> &[WriteOp] {
        &self.ops
    }

    /// The alarm change the batch makes: the one set, else `Clear` when it deletes all.
    pub fn alarm(&self) -> Option<AlarmWrite> {
        match self.alarm {
            None if self.delete_all => Some(AlarmWrite::Clear),
            alarm => alarm,
        }
    }

    /// Drops the alarm change from the batch (a runtime that finds the alarm already in
    /// place skips writing it), returning what it was.
    pub fn take_alarm(&mut self) -> Option<AlarmWrite> {
        let alarm = self.alarm();
        self.alarm = None;
        alarm
    }

    /// The batch's parts: whether it deletes all, its writes, and its alarm change.
    pub fn into_parts(self) -> (bool, Vec<WriteOp>, Option<AlarmWrite>) {
        let alarm = self.alarm();
        (self.delete_all, self.ops, alarm)
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        !self.delete_all && self.ops.is_empty() && self.alarm.is_none()
    }
}
