//! Submissions written in groups: the jobs this actor accepts in one turn (one drain of its
//! mailbox) go to the store in one write. Once it is committed they are released in one go
//! (so their jobs start in one pump, and leave for their worker in one round) and each
//! submitter is answered; if it failed, they are forgotten, never run, and answered so.

use actix::prelude::*;
use tokio::sync::oneshot;

use super::{Background, SubmitError, Submitted};
use crate::jobs::Change;

/// A submission waiting for the write of its group.
pub(super) struct Unwritten {
    /// The new job's number; `None` when it shares a job already accepted.
    pub(super) seq: Option<u64>,
    /// Its answer once written.
    pub(super) submitted: Submitted,
    /// Where the answer goes.
    pub(super) answer: oneshot::Sender<Result<Submitted, SubmitError>>,
}

/// Writes the submissions accepted so far (sent to itself once per group).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct WriteSubmissions;

impl Handler<WriteSubmissions> for Background {
    type Result = ();

    fn handle(&mut self, _: WriteSubmissions, ctx: &mut Self::Context) {
        self.write_submissions(ctx);
    }
}

impl Background {
    /// Adds a submission (and the job it writes, if new) to the group written at the end of
    /// this turn.
    pub(super) fn queue_submission(
        &mut self,
        change: Option<Change>,
        unwritten: Unwritten,
        ctx: &mut Context<Self>,
    ) {
        if self.unwritten.is_empty() {
            ctx.notify(WriteSubmissions);
        }
        self.unwritten_changes.extend(change);
        self.unwritten.push(unwritten);
    }

    /// Sends the group to the store now: before any write that must come after it (a
    /// cancellation of one of its jobs, a flush).
    pub(super) fn write_submissions(&mut self, ctx: &mut Context<Self>) {
        if self.unwritten.is_empty() {
            return;
        }
        let group = std::mem::take(&mut self.unwritten);
        let changes = std::mem::take(&mut self.unwritten_changes);
        let written = self.store.write(changes, self.book.next_seq());
        let done = written.into_actor(self).map(move |result, jobs, ctx| {
            let result = result.unwrap_or_else(|_| Err("the store's writer stopped".to_owned()));
            jobs.written(group, result, ctx);
        });
        ctx.spawn(done);
    }

    /// The group's write ended: its jobs may start (or are forgotten), and its submitters
    /// are answered.
    fn written(
        &mut self,
        group: Vec<Unwritten>,
        result: Result<(), String>,
        ctx: &mut Context<Self>,
    ) {
        match result {
            Ok(()) => {
                for seq in group.iter().filter_map(|u| u.seq) {
                    self.book.release(seq);
                }
                self.pump(ctx);
                for unwritten in group {
                    let _ = unwritten.answer.send(Ok(unwritten.submitted));
                }
            }
            Err(cause) => {
                // Not accepted, so never run: each submitter is told it failed.
                for unwritten in group {
                    if let Some(seq) = unwritten.seq {
                        self.book.forget(seq);
                        self.notify(seq);
                    }
                    let _ = (unwritten.answer).send(Err(SubmitError::Store(cause.clone())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::super::Submit;
    use super::*;
    use crate::actors::job::JobServices;
    use crate::actors::registry::Registry;
    use crate::jobs::callback::Callbacks;
    use crate::jobs::record::now_ms;
    use crate::jobs::{Book, Fsync, JobState, Store};

    /// Submissions that reach the jobs' actor together are written in one commit, and each
    /// is answered with its own job once it is in the store.
    #[actix_rt::test]
    async fn submissions_accepted_in_one_turn_share_one_write() {
        let dir = std::env::temp_dir().join(format!("nmid-submissions-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // Changes written behind (the jobs' starts) wait long: only submissions commit.
        let wait = Duration::from_secs(30);
        let (store, loaded) = Store::open_waiting(&dir, Fsync::Always, wait).unwrap();
        let config = crate::config::Config::default().jobs;
        let (book, _) = Book::new(
            loaded.node,
            loaded.next_seq,
            config.limits(),
            vec![],
            now_ms(),
        );
        let services = JobServices::with_registry(Registry::new(16).start());
        let callbacks = Callbacks::from_config(&config).unwrap();
        let gauges = Arc::new(Mutex::new(Default::default()));
        let jobs = Background::new(book, store.clone(), services, 16, gauges, callbacks).start();
        let record = || {
            let mut record = crate::jobs::record::tests::sample();
            record.state = JobState::Queued;
            record.attempts = 0;
            record.output = None;
            record.finished_ms = None;
            record
        };
        let sent: Vec<_> = (0..32)
            .map(|_| jobs.send(Submit { record: record() }))
            .collect();
        let mut seqs = Vec::new();
        for answer in futures_util::future::join_all(sent).await {
            let submitted = answer.unwrap().unwrap();
            assert!(!submitted.shared);
            seqs.push(submitted.id.seq);
        }
        seqs.dedup();
        assert_eq!(seqs.len(), 32, "each its own job");
        assert_eq!(store.waited_writes(), 1, "32 submissions, one write");
        assert_eq!(store.commits(), 1, "and one commit");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
