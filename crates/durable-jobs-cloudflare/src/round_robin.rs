//! The WorkerPool round robin of an isolate.

use std::sync::atomic::AtomicU32;
use std::sync::Arc;

thread_local! {
    /// An isolate runs its wasm on one thread, so this is one counter per isolate.
    static ISOLATE_TURN: Arc<AtomicU32> = Arc::new(AtomicU32::new(random_start()));
}

/// The round-robin counter shared by every client built in this isolate.
///
/// A Worker builds a new client for each request; with a counter of its own, every client
/// would send its first un-keyed event to instance 0, and so would every request. Two
/// measures spread them:
///
/// - one counter per isolate, so the requests an isolate serves take turns;
/// - a random start, since the platform runs many isolates (one or more per location) and
///   replaces idle ones: without it each new isolate would begin at instance 0 again, and
///   a lightly used worker, whose isolates serve a few requests each, would still favour it.
///
/// The counter starts when the isolate first needs it, during a request, where randomness
/// is available.
pub(crate) fn isolate_round_robin() -> Arc<AtomicU32> {
    ISOLATE_TURN.with(Arc::clone)
}

/// A uniformly random `u32`.
fn random_start() -> u32 {
    // `Math.random()` is in [0, 1), so the product is in [0, 2^32): truncating it gives
    // every `u32` alike, and never saturates.
    (js_sys::Math::random() * 4_294_967_296.0) as u32
}
