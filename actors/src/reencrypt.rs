//! The re-encryption job: moves rows sealed under decrypt-only data keys, and plaintext rows from
//! before encryption, to the current keys, in batches, paced by the injected clock.
//!
//! The key manager wakes it ([`Wake`]) whenever its upkeep finds such rows (after a rotation, and
//! on every start while any are left). Each tick of the clock (every [`ReencryptConfig::pause`])
//! runs at most one batch of [`ReencryptConfig::batch_rows`] rows on the blocking pool, so the job
//! moves at most `batch_rows / pause` rows a second and never holds the database's write lock
//! for long. Progress (rows left, moved, failed) is in [`Progress`], which health, metrics and the
//! keys API read. A batch is one transaction per table and each row records its key, so a crash
//! loses nothing and the next start carries on where the last committed batch ended.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;

use crate::clock::SharedClock;
use crate::ports::{Reencrypt, ReencryptBatch};

/// Pace of the job.
#[derive(Debug, Clone, Copy)]
pub struct ReencryptConfig {
    /// Rows per batch.
    pub batch_rows: usize,
    /// Pause between two batches.
    pub pause: Duration,
}

impl Default for ReencryptConfig {
    fn default() -> Self {
        Self {
            batch_rows: 500,
            pause: Duration::from_millis(100),
        }
    }
}

/// The job's progress, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct Progress {
    running: AtomicBool,
    remaining: AtomicU64,
    moved: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A copy of [`Progress`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressSnapshot {
    /// Whether the job has rows to move.
    pub running: bool,
    /// Rows left to move.
    pub remaining: u64,
    /// Rows moved since start.
    pub moved: u64,
    /// Rows that did not open since start.
    pub failed: u64,
    /// The last store error, if the last batch failed.
    pub last_error: Option<String>,
}

impl Progress {
    /// The progress now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            running: self.running.load(Ordering::Relaxed),
            remaining: self.remaining.load(Ordering::Relaxed),
            moved: self.moved.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    fn set_error(&self, error: Option<String>) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = error;
        }
    }
}

/// There may be rows to move: count them and start moving.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Wake;

/// The re-encryption actor.
pub struct Reencryptor {
    port: Arc<dyn Reencrypt>,
    config: ReencryptConfig,
    progress: Arc<Progress>,
    clock: SharedClock,
    log: slog::Logger,
    /// A batch or a count is on the blocking pool.
    busy: bool,
    /// Woken while busy: count again when done.
    woken: bool,
    restarts: Option<prometheus::IntCounter>,
}

impl Reencryptor {
    /// A job over `port`, reporting into `progress`.
    pub fn new(
        port: Arc<dyn Reencrypt>,
        config: ReencryptConfig,
        progress: Arc<Progress>,
        clock: SharedClock,
        log: slog::Logger,
    ) -> Self {
        Self {
            port,
            config,
            progress,
            clock,
            log,
            busy: false,
            woken: false,
            restarts: None,
        }
    }

    /// Counts this actor's restarts into `counter`.
    pub fn with_restarts(mut self, counter: prometheus::IntCounter) -> Self {
        self.restarts = Some(counter);
        self
    }

    /// Starts it under an actix `Supervisor`.
    pub fn start_supervised(self) -> Addr<Self> {
        actix::Supervisor::start(move |_| self)
    }

    fn count(&mut self, ctx: &mut Context<Self>) {
        self.busy = true;
        self.woken = false;
        let port = self.port.clone();
        let work = tokio::task::spawn_blocking(move || port.remaining());
        ctx.spawn(
            async move { work.await.map_err(|e| e.to_string()) }
                .into_actor(self)
                .map(|result, act, ctx| {
                    act.busy = false;
                    match result.map(|r| r.map_err(|e| e.to_string())) {
                        Ok(Ok(remaining)) => {
                            let was = act.progress.running.swap(remaining > 0, Ordering::Relaxed);
                            act.progress.remaining.store(remaining, Ordering::Relaxed);
                            if remaining > 0 && !was {
                                slog::info!(act.log, "re-encryption started"; "rows" => remaining);
                            }
                        }
                        Ok(Err(e)) | Err(e) => {
                            slog::warn!(act.log, "re-encryption cannot count its rows"; "error" => &e);
                            act.progress.set_error(Some(e));
                        }
                    }
                    if act.woken {
                        act.count(ctx);
                    }
                }),
        );
    }

    fn batch(&mut self, ctx: &mut Context<Self>) {
        self.busy = true;
        let (port, rows) = (self.port.clone(), self.config.batch_rows);
        let work = tokio::task::spawn_blocking(move || port.step(rows));
        ctx.spawn(
            async move { work.await.map_err(|e| e.to_string()) }
                .into_actor(self)
                .map(|result, act, ctx| {
                    act.busy = false;
                    match result.map(|r| r.map_err(|e| e.to_string())) {
                        Ok(Ok(batch)) => act.done(batch),
                        Ok(Err(e)) | Err(e) => {
                            // Tried again on the next tick.
                            slog::warn!(act.log, "re-encryption batch failed"; "error" => &e);
                            act.progress.set_error(Some(e));
                        }
                    }
                    if act.woken {
                        act.count(ctx);
                    }
                }),
        );
    }

    fn done(&mut self, batch: ReencryptBatch) {
        let p = &self.progress;
        p.set_error(None);
        p.moved.fetch_add(batch.moved, Ordering::Relaxed);
        p.failed.fetch_add(batch.failed, Ordering::Relaxed);
        let left = p
            .remaining
            .load(Ordering::Relaxed)
            .saturating_sub(batch.moved + batch.failed);
        p.remaining
            .store(if batch.more { left.max(1) } else { 0 }, Ordering::Relaxed);
        if batch.failed > 0 {
            slog::error!(self.log, "rows did not open and were left as they are"; "rows" => batch.failed);
        }
        if !batch.more {
            p.running.store(false, Ordering::Relaxed);
            slog::info!(self.log, "re-encryption done"; "moved" => p.moved.load(Ordering::Relaxed));
        }
    }
}

impl Actor for Reencryptor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.add_stream(self.clock.interval(self.config.pause));
        self.count(ctx);
    }
}

impl Supervised for Reencryptor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        if let Some(counter) = &self.restarts {
            counter.inc();
        }
        self.busy = false;
        slog::warn!(
            self.log,
            "re-encryption restarting; counting its rows again"
        );
    }
}

impl StreamHandler<()> for Reencryptor {
    fn handle(&mut self, _tick: (), ctx: &mut Self::Context) {
        if !self.busy && self.progress.running.load(Ordering::Relaxed) {
            self.batch(ctx);
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Handler<Wake> for Reencryptor {
    type Result = ();

    fn handle(&mut self, _msg: Wake, ctx: &mut Self::Context) {
        if self.busy {
            self.woken = true;
        } else {
            self.count(ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::ports::StoreError;

    /// `rows` rows to move; `fail_next` batches fail first.
    struct Rows {
        rows: Mutex<u64>,
        fail_next: Mutex<u32>,
        unreadable: u64,
    }

    impl Reencrypt for Rows {
        fn remaining(&self) -> Result<u64, StoreError> {
            Ok(*self.rows.lock().unwrap() + self.unreadable)
        }

        fn step(&self, max_rows: usize) -> Result<ReencryptBatch, StoreError> {
            let mut fail = self.fail_next.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Err(StoreError("database is locked".into()));
            }
            let mut rows = self.rows.lock().unwrap();
            let moved = (*rows).min(max_rows as u64);
            *rows -= moved;
            let failed = if *rows == 0 { self.unreadable } else { 0 };
            Ok(ReencryptBatch {
                moved,
                failed,
                more: *rows > 0,
            })
        }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[actix_rt::test]
    async fn moves_every_row_in_paced_batches_and_survives_a_failed_batch() {
        let clock = ManualClock::starting_now();
        let port = Arc::new(Rows {
            rows: Mutex::new(1_250),
            fail_next: Mutex::new(1),
            unreadable: 2,
        });
        let progress = Arc::new(Progress::default());
        let config = ReencryptConfig {
            batch_rows: 500,
            pause: Duration::from_millis(100),
        };
        let addr = Reencryptor::new(
            port.clone(),
            config,
            progress.clone(),
            Arc::new(clock.clone()),
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .start();
        settle().await;
        let start = progress.snapshot();
        assert!(start.running);
        assert_eq!(start.remaining, 1_252);
        // Nothing moves without a tick: the clock paces the job.
        assert_eq!(*port.rows.lock().unwrap(), 1_250);
        let tick = || async {
            clock.advance(config.pause);
            settle().await;
        };
        tick().await; // this batch fails and is retried
        let failed = progress.snapshot();
        assert_eq!(failed.moved, 0);
        assert!(failed.last_error.unwrap().contains("locked"));
        tick().await;
        assert_eq!(progress.snapshot().moved, 500);
        assert_eq!(progress.snapshot().last_error, None);
        tick().await;
        tick().await;
        let end = progress.snapshot();
        assert_eq!(
            (end.moved, end.failed, end.remaining, end.running),
            (1_250, 2, 0, false)
        );
        // Idle ticks do nothing.
        tick().await;
        assert_eq!(progress.snapshot(), end);
        // A wake counts again: the rows that did not open are tried once more, and reported.
        addr.send(Wake).await.unwrap();
        settle().await;
        assert_eq!(progress.snapshot().remaining, 2);
        tick().await;
        let again = progress.snapshot();
        assert_eq!(
            (again.moved, again.failed, again.running),
            (1_250, 4, false)
        );
        // New rows (a rotation) and a wake start it again.
        *port.rows.lock().unwrap() = 10;
        addr.send(Wake).await.unwrap();
        settle().await;
        assert_eq!(progress.snapshot().remaining, 12);
        tick().await;
        assert_eq!(progress.snapshot().moved, 1_260);
        assert!(!progress.snapshot().running);
    }
}
