//! Panics in user code become errors (G9 in docs/ARCHITECTURE.md): a panicking `execute`,
//! reducer or hook is a failed attempt with the panic message as its error, and never
//! unwinds into the engine or the runtime.
//!
//! Where panics abort instead of unwinding (wasm32 builds without `panic=unwind`), these
//! catch nothing; such a runtime records each attempt before user code runs instead.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

/// Runs `work`, turning a panic into `Err` with the panic's message.
pub(crate) async fn catch<F: Future>(work: F) -> Result<F::Output, String> {
    // The engine holds no lock and no half-made change while user code runs, so nothing
    // it owns is left broken by an unwinding future.
    AssertUnwindSafe(work).catch_unwind().await.map_err(message)
}

/// Calls `f`, turning a panic into `Err` with the panic's message.
pub(crate) fn catch_sync<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(message)
}

fn message(payload: Box<dyn Any + Send>) -> String {
    let text = match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => (*text).to_string(),
            Err(_) => "a panic without a message".to_string(),
        },
    };
    format!("panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_their_message() {
        assert_eq!(
            catch_sync(|| panic!("boom {}", 1)),
            Err::<(), _>("panicked: boom 1".into())
        );
        assert_eq!(
            catch_sync(|| panic!("static")),
            Err::<(), _>("panicked: static".into())
        );
        assert_eq!(catch_sync(|| 7), Ok(7));
        let caught = futures::executor::block_on(catch(async { panic!("later") }));
        assert_eq!(caught, Err::<(), _>("panicked: later".into()));
    }
}
