//! Alarms shared by many processes: each due alarm is taken by one process under a lease
//! (docs/ARCHITECTURE.md, "PostgreSQL"), renewed while its pass runs and released when it
//! ends; a notification channel tells every process of alarms due soon.

pub(crate) mod db;
pub(crate) mod ending;
pub(crate) mod leases;
pub(crate) mod listener;
pub(crate) mod poller;
pub(crate) mod renewer;
