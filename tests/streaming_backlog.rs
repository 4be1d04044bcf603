//! The worker library's partials under a connection that stops reading (issue 23): a
//! stand-in dispatcher on 127.0.0.1 takes one job, reads its first partial, then reads
//! nothing for a while. `send_partial_paced` slows the handler to the connection's pace (what
//! it queued stays near `max_partial_bytes_queued` plus the sockets' buffers, far from what the
//! handler would send), `send_partial` refuses with `Backlog` once the queue is full, a run of
//! progress reports keeps only the last, and once the reader goes on every partial queued
//! arrives, in order, before the result.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use nmid::codec::{self, Frame, NmidCodec, TaggedCall, TaggedProgress};
use nmid::worker::{Job, JobError, PartialError, Worker};
use tokio_util::codec::Framed;

/// Partial `i`: 8 KiB, its number first.
fn piece(i: usize) -> Bytes {
    let mut data = format!("{i:08}").into_bytes();
    data.resize(8 * 1024, b'.');
    Bytes::from(data)
}

/// Partials `Rows` sends: 64 MiB in all.
const ROWS: usize = 8_000;

/// A stand-in dispatcher whose socket buffers are small (an explicit `SO_RCVBUF` also stops
/// the kernel from growing it), so that not reading soon stalls the worker's writes.
fn stand_in() -> tokio::net::TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(8).unwrap()
}

/// Takes the worker's connection and, once `function` is registered, gives it job 1.
async fn assign(
    listener: &tokio::net::TcpListener,
    function: &str,
) -> Framed<tokio::net::TcpStream, NmidCodec> {
    let (socket, _) = listener.accept().await.unwrap();
    let mut frames = Framed::new(socket, NmidCodec::new(1 << 20));
    while let Some(frame) = frames.next().await {
        if let Frame::WAddFunc { .. } = frame.unwrap() {
            break;
        }
    }
    let job = TaggedCall {
        id: 1,
        timeout_ms: 60_000,
        params_type: codec::ParamsType::MSGPACK,
        handle_type: codec::HANDLE_TYPE_ORIGINAL,
        function: Bytes::copy_from_slice(function.as_bytes()),
        params: Bytes::new(),
        meta: Vec::new(),
    };
    frames.send(Frame::SJob(job)).await.unwrap();
    frames
}

/// Reads job 1's frames to its result: its partials' data and its progress reports.
async fn read_to_result(
    frames: &mut Framed<tokio::net::TcpStream, NmidCodec>,
    partials: &mut Vec<Bytes>,
) -> Vec<TaggedProgress> {
    let mut progress = Vec::new();
    let read = async {
        while let Some(frame) = frames.next().await {
            match frame.unwrap() {
                Frame::WJobPartial(p) if p.id == 1 => partials.push(p.data),
                Frame::WJobProgress(p) if p.id == 1 => progress.push(p),
                Frame::WJobResult(r) if r.id == 1 => return,
                _ => {}
            }
        }
        panic!("the worker closed before its result");
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the result within 60 s");
    progress
}

#[actix_rt::test]
async fn send_partial_paced_waits_for_a_stalled_connection_and_loses_nothing() {
    let listener = stand_in();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = sent.clone();
    let worker = Worker::builder()
        .name("streamer")
        .server(addr.to_string())
        .function("Rows", move |job: Job| {
            let sent = counted.clone();
            async move {
                for i in 0..ROWS {
                    job.send_partial_paced(piece(i)).await?;
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<_, JobError>(Bytes::from_static(b"done"))
            }
        })
        .start()
        .unwrap();
    let mut frames = assign(&listener, "Rows").await;
    let mut partials = Vec::new();
    // The first partial, then nothing read for 2 s.
    while partials.is_empty() {
        if let Frame::WJobPartial(p) = frames.next().await.unwrap().unwrap() {
            partials.push(p.data);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stalled_at = sent.load(Ordering::SeqCst);
    // 1 MiB queued, what actix's writer holds, and the two sockets' buffers (the sender's
    // grows to 4 MiB): about 700 pieces of 8 KiB. Unpaced, all 8,000 (64 MiB) at once.
    assert!(
        stalled_at < 1_500,
        "{stalled_at} partials of 8 KiB sent to a connection not read for 2 s"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sent.load(Ordering::SeqCst), stalled_at, "the handler waits");

    read_to_result(&mut frames, &mut partials).await;
    assert_eq!(partials.len(), ROWS, "every partial arrived");
    for (i, got) in partials.iter().enumerate() {
        assert_eq!(*got, piece(i), "partial {i} in order");
    }
    drop(frames);
    worker.stop().await;
}

#[actix_rt::test]
async fn send_partial_refuses_past_the_backlog_and_progress_keeps_the_last() {
    let listener = stand_in();
    let addr = listener.local_addr().unwrap();
    let refusal = Arc::new(std::sync::Mutex::new(None));
    let seen = refusal.clone();
    let queued = Arc::new(AtomicUsize::new(0));
    let counted = queued.clone();
    let worker = Worker::builder()
        .name("flooder")
        .server(addr.to_string())
        .max_partial_bytes_queued(256 * 1024)
        .function("Flood", move |job: Job| {
            let (seen, queued) = (seen.clone(), counted.clone());
            async move {
                // Nothing here awaits: the link writes only once the handler returns.
                for n in 0..10_000 {
                    job.progress(n, 10_000);
                }
                for i in 0..ROWS {
                    match job.send_partial(piece(i)) {
                        Ok(()) => queued.fetch_add(1, Ordering::SeqCst),
                        Err(e) => {
                            *seen.lock().unwrap() = Some(e);
                            break;
                        }
                    };
                }
                Ok::<_, JobError>(Bytes::from_static(b"done"))
            }
        })
        .start()
        .unwrap();
    let mut frames = assign(&listener, "Flood").await;
    let mut partials = Vec::new();
    let progress = read_to_result(&mut frames, &mut partials).await;

    // 256 KiB hold 31 pieces of 8 KiB with their 24-byte frame allowance.
    let taken = queued.load(Ordering::SeqCst);
    assert_eq!(taken, 256 * 1024 / (8 * 1024 + 24), "pieces queued");
    let refused = refusal.lock().unwrap().clone().expect("a refusal");
    let PartialError::Backlog { queued, max } = &refused else {
        panic!("refused as {refused:?}")
    };
    assert_eq!((*queued, *max), (taken * (8 * 1024 + 24), 256 * 1024));
    assert!(
        refused.to_string().contains("max_partial_bytes_queued"),
        "{refused}"
    );
    assert_eq!(partials.len(), taken, "every queued partial arrived");
    for (i, got) in partials.iter().enumerate() {
        assert_eq!(*got, piece(i), "partial {i} in order");
    }
    // 10,000 reports with nothing between them: one frame, the last.
    let last: Vec<(u64, u64)> = progress
        .iter()
        .map(|p| (p.numerator, p.denominator))
        .collect();
    assert_eq!(last, [(9_999, 10_000)]);
    drop(frames);
    worker.stop().await;
}
