//! The main table: every system at every payload and level, repetition by repetition.
//!
//! Each repetition runs every system in turn, each started afresh and stopped after its cells:
//! a disturbance of the machine (the build's write-back at the start, say) then spoils one
//! repetition of each system rather than every repetition of the first. A system that does
//! not start has its cells recorded as failed; one whose process dies is started again for
//! the cells after. A quick run stops at the first failed cell instead: its ratios would
//! count only the calls that succeeded.

use super::load;
use super::options::Settings;
use super::report::{Run, RunKey};
use super::systems::{Running, System};
use super::Harness;

/// Cells of the table, repetitions counted.
pub fn cell_count(s: &Settings) -> usize {
    s.systems.len() * s.payloads.len() * s.levels.len() * s.reps
}

/// Runs the whole table, adding a run per cell and repetition to `runs`. A quick run stops
/// at the first failure, with it as the error.
pub fn run(h: &Harness, runs: &mut Vec<Run>) -> anyhow::Result<()> {
    for rep in 1..=h.settings.reps {
        for &system in &h.settings.systems {
            run_system(h, system, rep, runs)?;
        }
    }
    Ok(())
}

/// Repetition `rep` of every cell (payload x level) of `system`, on a fresh start of it.
fn run_system(h: &Harness, system: System, rep: usize, runs: &mut Vec<Run>) -> anyhow::Result<()> {
    let s = &h.settings;
    h.progress
        .note(format_args!("starting {} (repetition {rep})", system.id()));
    let mut running = match h.launcher.start(system) {
        Ok(running) => Some(running),
        Err(e) => {
            let e = format!("{} did not start: {e:#}", system.id());
            if s.quick {
                anyhow::bail!(e);
            }
            h.progress.note(&e);
            None
        }
    };
    for &payload in &s.payloads {
        for &level in &s.levels {
            let key = RunKey {
                system: system.id().to_owned(),
                payload,
                level,
                rep,
            };
            h.progress.begin(&key);
            let run = match running.as_mut() {
                None => Run::failed(key, "system did not start".into()),
                Some(r) => load::measure(&h.launcher, s, system.driver(), r, key),
            };
            h.progress.cell_done(&run);
            if let Some(e) = &run.error {
                if s.quick {
                    anyhow::bail!(
                        "{} failed ({payload} B, {level} in flight): {e}; a quick run stops \
                         here, without a ratio (logs in {})",
                        system.id(),
                        h.launcher.logs().display()
                    );
                }
                // A dead process spoils the cells after it: start the system again.
                if let Some(why) = running.as_mut().and_then(Running::dead) {
                    h.progress
                        .note(format_args!("{why}; restarting {}", system.id()));
                    drop(running.take());
                    running = h.launcher.start(system).ok();
                }
            }
            runs.push(run);
        }
    }
    Ok(())
}
