//! The LISTEN connection: wakes the poller when a commit in any process sets an alarm due
//! soon, instead of waiting for the next poll.
//!
//! A connection of its own, outside the pool, subscribed to the schema's channel. The
//! driver only delivers notifications to whoever polls the connection, so this task polls
//! it itself (`Connection::poll_message`) instead of leaving it to a spawned driver. When
//! the connection breaks, it connects again with a growing delay, and wakes the poller
//! once listening again: notifications sent meanwhile were lost.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::shared::Shared;

/// Delay before the first reconnection...
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// ...doubling up to this.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Listens until `stop` changes, reconnecting as needed.
pub(crate) async fn run(
    shared: Arc<Shared>,
    config: tokio_postgres::Config,
    mut stop: watch::Receiver<bool>,
) {
    let mut delay = FIRST_RETRY;
    loop {
        let session = tokio::select! {
            biased;
            _ = stop.changed() => return,
            session = listen(&shared, &config) => session,
        };
        match session {
            // It was listening: the next failure starts from a short delay again.
            Ok(()) => delay = FIRST_RETRY,
            Err(error) => {
                tracing::warn!(error = %crate::cause(&error), "the alarm notification connection failed; reconnecting");
            }
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RETRY);
    }
}

/// One session: connects, listens, and wakes the poller on each notification until the
/// connection ends. `Err` if it could not start listening.
async fn listen(
    shared: &Arc<Shared>,
    config: &tokio_postgres::Config,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let woken = shared.clone();
    let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
    let driver = async move {
        while let Some(message) = messages.next().await {
            match message? {
                AsyncMessage::Notification(_) => woken.wake_poller.notify_one(),
                AsyncMessage::Notice(notice) => {
                    tracing::debug!(notice = %notice.message(), "notice on the notification connection");
                }
                _ => {}
            }
        }
        Ok::<(), tokio_postgres::Error>(())
    };
    tokio::pin!(driver);
    // The LISTEN needs the connection driven: run both, until the LISTEN is done.
    let listen = format!("LISTEN {}", shared.store.schema().quoted());
    let subscribe = client.batch_execute(&listen);
    tokio::select! {
        ended = &mut driver => {
            ended?;
            return Ok(());
        }
        subscribed = subscribe => subscribed?,
    }
    // What was set while nobody listened is found by polling once.
    shared.wake_poller.notify_one();
    if let Err(error) = driver.await {
        tracing::warn!(error = %crate::cause(&error), "the alarm notification connection was lost; reconnecting");
    }
    drop(client);
    Ok(())
}
