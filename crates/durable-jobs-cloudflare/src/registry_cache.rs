//! The registry of an isolate, built once.

use std::cell::RefCell;

use durable_jobs::{Registry, RegistryError};
use worker::Env;

/// Holds the registry built by the user's function, so that it is built once per isolate
/// and shared by every object and request the isolate serves.
///
/// A failed build is not cached: the next caller tries again.
#[derive(Debug, Default)]
pub struct RegistryCache {
    registry: RefCell<Option<Registry>>,
}

impl RegistryCache {
    /// An empty cache.
    pub const fn new() -> Self {
        RegistryCache {
            registry: RefCell::new(None),
        }
    }

    /// The cached registry, or the one `build` makes from `env` (then cached).
    pub fn get_or_build(
        &self,
        env: &Env,
        build: impl FnOnce(&Env) -> Result<Registry, RegistryError>,
    ) -> Result<Registry, RegistryError> {
        if let Some(registry) = self.registry.borrow().as_ref() {
            return Ok(registry.clone());
        }
        let registry = build(env)?;
        *self.registry.borrow_mut() = Some(registry.clone());
        Ok(registry)
    }
}
