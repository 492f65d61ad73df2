//! Test holds: stop a running job at a named point until a test lets it go.
//!
//! Races between workers (a re-claim overtaking a released attempt, a crash between the upload
//! and its database record) are reproduced exactly by holding one attempt at a point while the
//! test moves the world around it, instead of hoping a sleep lands in the window. A hold is
//! armed for the next attempt that reaches its point and is one-shot: later attempts pass.
//! Nothing is armed in production, where `Holds::reach` is one uncontended lock.
//!
//! The worker binary arms one hold from `WORKER_TEST_HOLD=<point>:<directory>` (tests of the
//! real binary): it creates `<directory>/reached` when an attempt arrives and waits for
//! `<directory>/release` to appear.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::watch;

/// Where a job can be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldPoint {
    /// An export has sent its first chunk of the file to storage.
    AfterFirstChunk,
    /// Every byte of an export is uploaded; the upload is not completed yet.
    BeforeUploadFinish,
    /// The export's file is complete in storage; its database record is not written yet.
    BeforeRecord,
    /// An attempt that did not complete is about to record its setback (retry, release, failure).
    BeforeSetback,
}

impl HoldPoint {
    fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "after_first_chunk" => Self::AfterFirstChunk,
            "before_upload_finish" => Self::BeforeUploadFinish,
            "before_record" => Self::BeforeRecord,
            "before_setback" => Self::BeforeSetback,
            _ => return None,
        })
    }
}

/// The holds armed in one worker process.
#[derive(Debug, Clone, Default)]
pub struct Holds(Arc<Mutex<HashMap<HoldPoint, Hold>>>);

/// One armed hold: the test waits for [`Hold::reached`], then calls [`Hold::release`].
#[derive(Debug, Clone)]
pub struct Hold {
    reached: watch::Sender<bool>,
    released: watch::Sender<bool>,
}

impl Holds {
    /// Holds the next attempt that reaches `point`.
    pub fn arm(&self, point: HoldPoint) -> Hold {
        let hold = Hold { reached: watch::Sender::new(false), released: watch::Sender::new(false) };
        self.0.lock().expect("not poisoned").insert(point, hold.clone());
        hold
    }

    /// Called by a job at `point`: waits there if a hold is armed for it (and disarms it).
    pub(crate) async fn reach(&self, point: HoldPoint) {
        let Some(hold) = self.0.lock().expect("not poisoned").remove(&point) else { return };
        tracing::warn!(?point, "held at a test hold point");
        hold.reached.send_replace(true);
        let mut released = hold.released.subscribe();
        let _ = released.wait_for(|r| *r).await;
    }

    /// Arms the hold named by `WORKER_TEST_HOLD=<point>:<directory>`, bridged to files.
    pub fn arm_from_env(&self) -> anyhow::Result<()> {
        let Ok(spec) = std::env::var("WORKER_TEST_HOLD") else { return Ok(()) };
        let (point, dir) = spec
            .split_once(':')
            .and_then(|(p, d)| Some((HoldPoint::parse(p)?, PathBuf::from(d))))
            .ok_or_else(|| anyhow::anyhow!("WORKER_TEST_HOLD: expected <point>:<directory>, got {spec:?}"))?;
        let hold = self.arm(point);
        tokio::spawn(async move {
            hold.reached().await;
            let _ = std::fs::write(dir.join("reached"), b"");
            while !dir.join("release").exists() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            hold.release();
        });
        Ok(())
    }
}

impl Hold {
    /// Resolves once an attempt waits at the point.
    pub async fn reached(&self) {
        let _ = self.reached.subscribe().wait_for(|r| *r).await;
    }

    /// Lets the held attempt go on.
    pub fn release(&self) {
        self.released.send_replace(true);
    }
}
