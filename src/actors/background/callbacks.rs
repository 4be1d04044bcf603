//! The callbacks of background jobs: a final state POSTed, in a task of its own, to the URL
//! its submitter gave, and what became of it written to the job.

use actix::prelude::*;

use super::Background;
use crate::jobs::callback::{CallbackOutcome, Delivery};
use crate::jobs::{Change, JobRecord, JobState};

/// What became of a job's callback.
#[derive(Message)]
#[rtype(result = "()")]
struct CallbackDone {
    seq: u64,
    outcome: CallbackOutcome,
}

impl Handler<CallbackDone> for Background {
    type Result = ();

    fn handle(&mut self, done: CallbackDone, _: &mut Self::Context) {
        let text = match done.outcome {
            CallbackOutcome::Delivered { attempts, status } => {
                format!("delivered: HTTP {status} after {attempts} attempt(s)")
            }
            CallbackOutcome::GaveUp {
                attempts,
                last_error,
            } => format!("failed after {attempts} attempt(s): {last_error}"),
        };
        if let Some(record) = self.book.note_callback(done.seq, text) {
            let change = Change::Put(Box::new(record.clone()));
            self.store.write_later(vec![change], self.book.next_seq());
        }
    }
}

impl Background {
    /// POSTs `record`'s final state to its callback URL, if it has one, in a task of its
    /// own; the outcome comes back as [`CallbackDone`].
    pub(super) fn call_back(&mut self, record: &JobRecord, ctx: &mut Context<Self>) {
        let Some(url) = &record.callback_url else {
            return;
        };
        let seq = record.seq;
        let url = match self.callbacks.validate(url) {
            Ok(url) => url,
            Err(refused) => {
                // The allow list changed since the submission.
                let outcome = CallbackOutcome::GaveUp {
                    attempts: 0,
                    last_error: refused.to_string(),
                };
                ctx.notify(CallbackDone { seq, outcome });
                return;
            }
        };
        // A succeeded job's body is its result as `/call` answers it (the RetStruct's
        // `Data`), as OpenFaaS sends a function's output; a failed one's its error.
        let failed = record.state == JobState::Failed;
        let delivery = Delivery {
            job_id: self.book.id(seq).to_string(),
            function: String::from_utf8_lossy(&record.function).into_owned(),
            state: record.state.as_str(),
            attempts: record.attempts,
            result: record.result_data().map(|(data, _)| data),
            error: (record.output.as_ref())
                .filter(|_| failed)
                .map(|o| String::from_utf8_lossy(o).into_owned()),
            submitter: record.caller.clone(),
        };
        let callbacks = self.callbacks.clone();
        let me = ctx.address();
        actix::spawn(async move {
            let outcome = callbacks.deliver(&url, delivery).await;
            me.do_send(CallbackDone { seq, outcome });
        });
    }
}
