//! Calls of many events (`enqueue_many`, `add_many`): each instance gets its share in
//! requests of at most [`MAX_EVENTS_PER_REQUEST`] events, in the order given, and instances
//! are sent to in parallel.

use std::future::Future;

use futures::stream::{self, StreamExt};

use crate::engine::MAX_EVENTS_PER_REQUEST;
use crate::errors::JobError;

/// One instance's share of a call: its key, its items in order, and the position in the
/// call of each.
pub(crate) type Share<K, I> = (K, Vec<I>, Vec<usize>);

/// Sends every share through `send` (one request of up to [`MAX_EVENTS_PER_REQUEST`]
/// items, answered with one result per item), at most `parallel` instances at once, and
/// answers one result per position of the call (`count` in all).
///
/// Once a request of a share fails, the rest of that share is not sent and fails with the
/// same error: an instance that took later events without the earlier ones would run them
/// out of the order they were given in.
pub(crate) async fn send_shares<K, I, T, F, Fut>(
    shares: Vec<Share<K, I>>,
    count: usize,
    parallel: usize,
    send: F,
) -> Vec<Result<T, JobError>>
where
    K: Clone,
    F: Fn(K, Vec<I>) -> Fut,
    Fut: Future<Output = Result<Vec<Result<T, JobError>>, JobError>>,
{
    let send = &send;
    let sent = shares
        .into_iter()
        .map(|(key, items, positions)| async move {
            let mut outcomes = Vec::with_capacity(items.len());
            let mut items = items.into_iter().peekable();
            while items.peek().is_some() {
                let chunk: Vec<I> = items.by_ref().take(MAX_EVENTS_PER_REQUEST).collect();
                let size = chunk.len();
                let answered = send(key.clone(), chunk).await.and_then(|answered| {
                    if answered.len() == size {
                        Ok(answered)
                    } else {
                        Err(JobError::Client {
                            status: 0,
                            message: format!("{} results for {size} events", answered.len()),
                        })
                    }
                });
                match answered {
                    Ok(answered) => outcomes.extend(answered),
                    Err(error) => {
                        // This request and the rest of the share, which is not sent.
                        let failed = size + items.len();
                        outcomes.extend(std::iter::repeat_n(error, failed).map(Err));
                        break;
                    }
                }
            }
            (positions, outcomes)
        });
    let mut results: Vec<Option<Result<T, JobError>>> = (0..count).map(|_| None).collect();
    let mut answers = stream::iter(sent).buffer_unordered(parallel.max(1));
    while let Some((positions, outcomes)) = answers.next().await {
        for (position, result) in positions.into_iter().zip(outcomes) {
            if let Some(slot) = results.get_mut(position) {
                *slot = Some(result);
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(JobError::bad_request("an event got no answer"))))
        .collect()
}
