//! Partial results across a cluster hop, on a real etcd (Debian's `etcd-server`) and two
//! `nmid` processes on 127.0.0.1: a streaming call made on B of a function whose worker is
//! on A gets the worker's partials in order through B's peer link, then the result.

mod cluster_support;
mod common;

use bytes::Bytes;
use cluster_support::{serves, Etcd, Nmid};
use common::PATIENCE;
use futures_util::StreamExt;
use nmid::client::{CallOptions, Client, StreamEvent};
use nmid::worker::{Job, JobError, Worker};

/// Sends `n` (its params, as text) partials `part i`, with progress at the start and the
/// end, then the result `counted`.
async fn count(job: Job) -> Result<Bytes, JobError> {
    let n: u64 = std::str::from_utf8(job.params())?.parse()?;
    job.progress(0, n);
    for i in 0..n {
        job.send_partial(format!("part {i}"))?;
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    job.progress(n, n);
    Ok(Bytes::from_static(b"counted"))
}

/// A worker on A, a `call_stream` client on B: B forwards the call as a streaming call and
/// passes back all 1,000 partials in order, the progress, then the result; a plain call on
/// B of the same function gets the result alone.
#[actix_rt::test]
async fn partials_cross_a_cluster_hop_in_order() {
    let etcd = Etcd::start().await;
    let a = Nmid::start(&etcd.url);
    let b = Nmid::start(&etcd.url);
    let worker = Worker::builder()
        .name("counter")
        .server(a.tcp.to_string())
        .function("Count", count)
        .start()
        .unwrap();
    b.wait_json("/api/v1/cluster", PATIENCE, "A's Count seen", |v| {
        serves(v, &a.id, "Count")
    })
    .await;
    let client = Client::connect(b.tcp.to_string()).await.unwrap();
    let mut events = client
        .call_stream("Count", "1000", CallOptions::default())
        .await
        .unwrap();
    let (mut partials, mut progress, mut done) = (Vec::new(), Vec::new(), None);
    while let Some(event) = tokio::time::timeout(PATIENCE, events.next()).await.unwrap() {
        assert!(done.is_none(), "nothing after the result: {event:?}");
        match event.unwrap() {
            StreamEvent::Partial(data) => partials.push(data),
            StreamEvent::Progress {
                numerator,
                denominator,
            } => progress.push((numerator, denominator)),
            StreamEvent::Done(ret) => done = Some(ret),
        }
    }
    assert_eq!(done.as_deref(), Some(&b"counted"[..]));
    assert_eq!(progress, vec![(0, 1000), (1000, 1000)]);
    assert_eq!(partials.len(), 1000);
    for (i, data) in partials.iter().enumerate() {
        assert_eq!(
            data,
            &Bytes::from(format!("part {i}")),
            "partial {i} in order"
        );
    }
    let plain = client.call("Count", "10").await.unwrap();
    assert_eq!(&plain[..], b"counted");
    worker.stop().await;
}
