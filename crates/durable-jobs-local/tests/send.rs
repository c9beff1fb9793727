//! The client's futures are `Send` on this runtime, so they can be spawned on a
//! multi-threaded executor or awaited in a web handler.

use durable_jobs::Registry;
use durable_jobs_conformance::jobs::{Collector, Count, Hook, Log, Task, Ticker, Worker};
use durable_jobs_local::LocalRuntime;

fn assert_send<T: Send>(value: T) -> T {
    value
}

#[test]
fn client_futures_are_send() {
    let log = Log::default();
    let registry = Registry::builder()
        .continuous(
            "ticker",
            Ticker::every(&log, std::time::Duration::from_secs(60)),
        )
        .debounce("hooks", Collector::new(&log))
        .worker_pool("tasks", Worker::new(&log, 2))
        .build()
        .unwrap();
    let rt = LocalRuntime::builder(registry).in_memory().open().unwrap();
    let client = assert_send(rt.client());
    futures::executor::block_on(async {
        let hook = Hook { n: 1 };
        let task = Task::named("t");
        let count = Count { n: 0 };
        let added = assert_send(client.debounce::<Collector>().add("k", &hook)).await;
        assert_eq!(added.unwrap().event_count, 1);
        let events = [("k", &hook, None), ("j", &hook, Some("e1"))];
        let added = assert_send(client.debounce::<Collector>().add_many(events)).await;
        assert_eq!(added.unwrap().len(), 2);
        assert_send(client.worker_pool::<Worker>().enqueue(&task))
            .await
            .unwrap();
        assert_send(client.worker_pool::<Worker>().status())
            .await
            .unwrap();
        assert_send(client.continuous::<Ticker>().start("a", &count))
            .await
            .unwrap();
    });
    // And from another thread.
    let other = std::thread::spawn(move || {
        futures::executor::block_on(client.continuous::<Ticker>().status("a"))
            .unwrap()
            .is_some()
    });
    assert!(other.join().unwrap());
    futures::executor::block_on(rt.shutdown());
}
