//! The key manager: owns the ring of RS256 signing keys, rotates it and retires old keys.
//!
//! The ring itself (generating keys, keeping them on disk, building the verification snapshot that
//! request handlers read) is behind the [`KeyRing`] port (declared in [`crate::ports`], re-exported here with its types),
//! which the binary implements. This actor
//! owns the *policy* and serialises every change:
//!
//! - the newest key signs; an older key keeps verifying until the last token it can have signed has
//!   expired, then it is retired ([`classify`] states the rule);
//! - on every tick of the injected clock (every [`KeyPolicy::scan_every`]) it rescans the ring, so a
//!   key added by the CLI while the relay runs is picked up, retires what is due, rotates when the
//!   newest key is older than [`KeyPolicy::rotate_every`], and publishes a new snapshot when the set
//!   of keys in force changed;
//! - [`Rotate`] creates a new key at once (the admin API); [`Rescan`] runs a tick on demand.
//!
//! On-demand rotations are bounded, so that neither a script nor a stolen admin token can grow the
//! ring (and the anonymous JWK set) without limit: none while [`MAX_KEYS_IN_FORCE`] keys are in
//! force ([`reconcile`], so the CLI too), and through this actor at most one per
//! [`MIN_ROTATION_INTERVAL`] (the CLI, run by whoever owns the keys directory, is bound by the
//! ring size only). A refused rotation says when to retry
//! ([`RotationRefused`]); no key is ever retired early to make room, so no unexpired token is
//! invalidated. Scheduled rotations and the first key of an empty ring are not bounded by either.
//!
//! Handlers never talk to this actor to verify a token: they read the snapshot the port publishes.
//! Ring operations block (RSA key generation, file I/O), so they run on the blocking pool, one at a
//! time: while one runs, the actor processes nothing else.
//!
//! [`reconcile`] is the whole step as a plain function, so that the CLI (`beepmyphone keys rotate`)
//! applies exactly the same rules as the running relay.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::audit::Record;
use crate::clock::SharedClock;
use crate::guard::guarded;
use crate::ports::audit::{Action, AuditEvent, Outcome};
pub use crate::ports::{DataKeyReport, DataKeyRing};
pub use crate::ports::{KeyInfo, KeyRing, KeyRingError, KeyState, KeyStatus};
use crate::reencrypt::Wake;

/// Minimum time between two on-demand rotations through the key manager (the admin API). A clock
/// that went back does not count against it; [`MAX_KEYS_IN_FORCE`] still applies.
pub const MIN_ROTATION_INTERVAL: Duration = Duration::from_secs(60);

/// Keys in force at most: the current one and those still verifying. With RSA-2048 keys that
/// keeps the anonymous JWK set under about 4 KB. An on-demand rotation that would exceed it is
/// refused until the oldest verifying key retires.
pub const MAX_KEYS_IN_FORCE: usize = 8;

/// Why an on-demand rotation was refused; nothing was created.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RotationRefused {
    /// The previous on-demand rotation was less than [`MIN_ROTATION_INTERVAL`] ago.
    #[error("the previous rotation was less than the minimum interval between rotations ago")]
    TooSoon {
        /// Milliseconds until the interval has passed.
        retry_after_ms: i64,
    },
    /// [`MAX_KEYS_IN_FORCE`] keys are in force; the oldest must retire first.
    #[error("the key ring is full: every key in force may still verify unexpired tokens")]
    RingFull {
        /// Milliseconds until the oldest verifying key retires.
        retry_after_ms: i64,
    },
}

impl RotationRefused {
    /// Whole seconds until a retry may succeed (at least 1), for `Retry-After`.
    pub fn retry_after_secs(&self) -> u64 {
        let ms = match self {
            RotationRefused::TooSoon { retry_after_ms }
            | RotationRefused::RingFull { retry_after_ms } => *retry_after_ms,
        };
        u64::try_from(ms.saturating_add(999) / 1_000)
            .unwrap_or(0)
            .max(1)
    }
}

/// Whether the key manager refuses an on-demand rotation at `now_ms` because the previous one, at
/// `last_ms`, was less than [`MIN_ROTATION_INTERVAL`] ago.
pub fn too_soon(last_ms: i64, now_ms: i64) -> Option<RotationRefused> {
    let age = now_ms.saturating_sub(last_ms);
    let min = millis(MIN_ROTATION_INTERVAL);
    (0..min).contains(&age).then_some(RotationRefused::TooSoon {
        retry_after_ms: min - age,
    })
}

/// Whether an on-demand rotation of `keys` (oldest first) is refused at `now_ms` because
/// [`MAX_KEYS_IN_FORCE`] keys are in force.
pub fn ring_full(keys: &[KeyInfo], now_ms: i64, policy: &KeyPolicy) -> Option<RotationRefused> {
    let live: Vec<KeyStatus> = classify(keys, now_ms, policy)
        .into_iter()
        .filter(|k| k.state != KeyState::Retired)
        .collect();
    if live.len() >= MAX_KEYS_IN_FORCE {
        let retires_at = live
            .iter()
            .filter_map(|k| k.retires_at_ms)
            .min()
            .unwrap_or(now_ms);
        return Some(RotationRefused::RingFull {
            retry_after_ms: retires_at.saturating_sub(now_ms).max(1),
        });
    }
    None
}

/// Creates a new signing key that signs from now on; answers with it.
#[derive(Message, Debug)]
#[rtype(result = "Result<KeyStatus, KeyManagerError>")]
pub struct Rotate {
    /// Who asked (an API token id, `cli`, `schedule`), for the log.
    pub requested_by: String,
}

/// Runs a tick now: rescans the ring, retires what is due, rotates if the schedule says so, and
/// publishes; answers with the keys in force, oldest first.
#[derive(Message, Debug)]
#[rtype(result = "Result<Vec<KeyStatus>, KeyManagerError>")]
pub struct Rescan;

/// Starts new data keys for every sealing purpose: new values are sealed under them at once, and
/// the re-encryption job moves the old rows; answers with the ring after the rotation.
#[derive(Message, Debug)]
#[rtype(result = "Result<DataKeyReport, KeyManagerError>")]
pub struct RotateData {
    /// Who asked, for the log.
    pub requested_by: String,
}

/// The data keys as the last upkeep step found them (`None` before the first, or without data
/// keys).
#[derive(Message, Debug)]
#[rtype(result = "Option<DataKeyReport>")]
pub struct DataStatus;

/// The rules of the ring.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    /// Age of the newest key after which a new one is made (`auth.key_rotation_days`).
    pub rotate_every: Duration,
    /// How long a token stays acceptable after it was signed: access-token lifetime plus the
    /// verification leeway.
    pub token_lifetime: Duration,
    /// How often the ring is rescanned. Also the grace a replaced key gets: a relay may keep
    /// signing with it for up to one scan after a newer key appeared on disk.
    pub scan_every: Duration,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl KeyPolicy {
    /// Milliseconds after its successor appeared at which a key is retired.
    pub fn retire_after_ms(&self) -> i64 {
        millis(self.token_lifetime).saturating_add(millis(self.scan_every))
    }

    /// Whether the newest key, created at `created_ms`, is due for replacement at `now_ms`.
    pub fn rotation_due(&self, created_ms: i64, now_ms: i64) -> bool {
        now_ms.saturating_sub(created_ms) >= millis(self.rotate_every)
    }
}

/// The state of every key at `now_ms`. `keys` must be in creation order, oldest first (as
/// [`KeyRing::list`] returns them).
///
/// The newest key is current. A key stops signing when its successor is created, and a relay
/// notices that within one scan; the last token it signed then expires `token_lifetime` later. So
/// a key is retired at its successor's creation + `token_lifetime` + `scan_every`, and verifies
/// until then.
pub fn classify(keys: &[KeyInfo], now_ms: i64, policy: &KeyPolicy) -> Vec<KeyStatus> {
    let retire_after = policy.retire_after_ms();
    keys.iter()
        .enumerate()
        .map(|(i, key)| {
            let (state, retires_at_ms) = match keys.get(i + 1) {
                None => (KeyState::Current, None),
                Some(next) => {
                    let at = next.created_ms.saturating_add(retire_after);
                    let state = if now_ms >= at {
                        KeyState::Retired
                    } else {
                        KeyState::Verifying
                    };
                    (state, Some(at))
                }
            };
            KeyStatus {
                kid: key.kid.clone(),
                created_ms: key.created_ms,
                state,
                retires_at_ms,
            }
        })
        .collect()
}

/// What one [`reconcile`] step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// The keys in force afterwards, oldest first (the last one is current).
    pub keys: Vec<KeyStatus>,
    /// The key created by this step, if any.
    pub created: Option<KeyStatus>,
    /// The ids of the keys retired by this step.
    pub retired: Vec<String>,
    /// Whether a new snapshot was published.
    pub published: bool,
    /// Why the requested rotation was not made, if it was refused.
    pub refused: Option<RotationRefused>,
}

/// One step of the ring's life at `now_ms`: list the ring; create a key if there is none, if the
/// newest is due for rotation, or if `rotate` is set and [`ring_full`] does not refuse it
/// (then [`Reconciled::refused`] says why); publish the keys in force unless they
/// equal `published`; retire the keys that are due. Blocks: call it on a blocking thread.
///
/// A new key is created at `now_ms`, or just after the newest key if the clock is behind it, so
/// that it is the newest and signs at once.
pub fn reconcile(
    ring: &dyn KeyRing,
    now_ms: i64,
    policy: &KeyPolicy,
    rotate: bool,
    published: Option<&[KeyStatus]>,
) -> Result<Reconciled, KeyRingError> {
    let mut keys = ring.list()?;
    let due = keys
        .last()
        .is_none_or(|newest| policy.rotation_due(newest.created_ms, now_ms));
    let refused = if rotate && !due {
        ring_full(&keys, now_ms, policy)
    } else {
        None
    };
    let mut created_kid = None;
    if due || (rotate && refused.is_none()) {
        let at = keys.last().map_or(now_ms, |newest| {
            now_ms.max(newest.created_ms.saturating_add(1))
        });
        let key = ring.create(at)?;
        created_kid = Some(key.kid.clone());
        keys.push(key);
    }
    let (retired, live): (Vec<KeyStatus>, Vec<KeyStatus>) = classify(&keys, now_ms, policy)
        .into_iter()
        .partition(|k| k.state == KeyState::Retired);
    let changed = published != Some(live.as_slice());
    if changed {
        ring.publish(&live)?;
    }
    for key in &retired {
        ring.retire(&key.kid)?;
    }
    let created = created_kid.and_then(|kid| live.iter().find(|k| k.kid == kid).cloned());
    Ok(Reconciled {
        keys: live,
        created,
        retired: retired.into_iter().map(|k| k.kid).collect(),
        published: changed,
        refused,
    })
}

/// Why the key manager could not answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyManagerError {
    /// The ring failed; the previous snapshot stays in force.
    #[error(transparent)]
    Ring(#[from] KeyRingError),
    /// The rotation was refused (too soon, or the ring is full); nothing changed.
    #[error(transparent)]
    Refused(#[from] RotationRefused),
    /// The actor restarted or its blocking task died before answering.
    #[error("the key manager is unavailable")]
    Unavailable,
}

/// The key manager actor.
pub struct KeyManager {
    ring: Arc<dyn KeyRing>,
    policy: KeyPolicy,
    clock: SharedClock,
    log: slog::Logger,
    /// What was last published, to publish only on change.
    published: Option<Vec<KeyStatus>>,
    /// When the last on-demand rotation was made, for [`MIN_ROTATION_INTERVAL`].
    last_rotation_ms: Option<i64>,
    /// Counts restarts, when set ([`KeyManager::with_restarts`]).
    restarts: Option<prometheus::IntCounter>,
    /// The data-key ring, when set ([`KeyManager::with_data_keys`]).
    data: Option<Arc<dyn DataKeyRing>>,
    /// Woken when rows are left under old data keys.
    reencrypt: Option<Recipient<Wake>>,
    /// What the last data-key step found.
    data_report: Option<DataKeyReport>,
    /// When the last on-demand data-key rotation was made, for [`MIN_ROTATION_INTERVAL`].
    last_data_rotation_ms: Option<i64>,
    /// Where scheduled rotations and every retirement are recorded (on-demand rotations are
    /// recorded by whoever asked, before and after).
    audit: Option<Recipient<Record>>,
}

impl KeyManager {
    /// A key manager over `ring`.
    pub fn new(
        ring: Arc<dyn KeyRing>,
        policy: KeyPolicy,
        clock: SharedClock,
        log: slog::Logger,
    ) -> Self {
        Self {
            ring,
            policy,
            clock,
            log,
            published: None,
            last_rotation_ms: None,
            restarts: None,
            data: None,
            reencrypt: None,
            data_report: None,
            last_data_rotation_ms: None,
            audit: None,
        }
    }

    /// Records scheduled rotations and retirements into `audit`.
    pub fn with_audit(mut self, audit: Recipient<Record>) -> Self {
        self.audit = Some(audit);
        self
    }

    fn audit(&self, action: Action, subject: impl std::fmt::Display, details: serde_json::Value) {
        if let Some(audit) = &self.audit {
            audit.do_send(Record {
                event: AuditEvent::system(action, Outcome::Ok)
                    .on(subject.to_string())
                    .with_details(details),
            });
        }
    }

    /// Also keeps the data-encryption keys, on the same ticks, and wakes `reencrypt` when rows
    /// are left under old keys.
    pub fn with_data_keys(
        mut self,
        data: Arc<dyn DataKeyRing>,
        reencrypt: Recipient<Wake>,
    ) -> Self {
        self.data = Some(data);
        self.reencrypt = Some(reencrypt);
        self
    }

    /// A data-key step on the blocking pool (nothing without data keys).
    fn data_step(
        &mut self,
        rotate: Option<String>,
    ) -> impl ActorFuture<Self, Output = Result<DataKeyReport, KeyManagerError>> {
        let data = self.data.clone();
        let now = self.clock.now_ms();
        let forced = rotate.is_some();
        let work = tokio::task::spawn_blocking(move || data.map(|data| data.step(now, forced)));
        async move {
            match work.await {
                Ok(Some(result)) => result.map_err(KeyManagerError::from),
                Ok(None) => Ok(DataKeyReport::default()),
                Err(_) => Err(KeyManagerError::Unavailable),
            }
        }
        .into_actor(self)
        .map(move |result, act, _| {
            match &result {
                Ok(report) => {
                    for id in &report.created {
                        slog::info!(act.log, "new data key"; "id" => id,
                            "requested_by" => rotate.as_deref().unwrap_or("schedule"));
                        if rotate.is_none() {
                            let purpose = report.keys.iter().find(|k| k.id == *id).map(|k| k.purpose.clone());
                            act.audit(
                                Action::DataKeyRotated,
                                id,
                                serde_json::json!({ "by": "schedule", "purpose": purpose }),
                            );
                        }
                    }
                    for id in &report.retired {
                        slog::info!(act.log, "data key retired: no row uses it"; "id" => id);
                        act.audit(Action::DataKeyRetired, id, serde_json::Value::Null);
                    }
                    if report.stale_rows > 0 {
                        if let Some(wake) = &act.reencrypt {
                            wake.do_send(Wake);
                        }
                    }
                    if act.data.is_some() {
                        act.data_report = Some(report.clone());
                    }
                }
                Err(e) => {
                    slog::error!(act.log, "data-key step failed; the keys in force stay"; "error" => %e);
                }
            }
            result
        })
    }

    /// Counts this actor's restarts into `counter` (`beepmyphone_actor_restarts_total{actor}`).
    pub fn with_restarts(mut self, counter: prometheus::IntCounter) -> Self {
        self.restarts = Some(counter);
        self
    }

    /// Starts it under an actix `Supervisor` (restarted with the same address if it stops).
    pub fn start_supervised(self) -> Addr<Self> {
        actix::Supervisor::start(move |_| self)
    }

    /// A [`reconcile`] step on the blocking pool, applied to the actor when it is done.
    fn step(
        &mut self,
        rotate: Option<String>,
    ) -> impl ActorFuture<Self, Output = Result<Reconciled, KeyManagerError>> {
        let ring = self.ring.clone();
        let policy = self.policy.clone();
        let now = self.clock.now_ms();
        let published = self.published.clone();
        let forced = rotate.is_some();
        let work = tokio::task::spawn_blocking(move || {
            reconcile(&*ring, now, &policy, forced, published.as_deref())
        });
        async move {
            match work.await {
                Ok(result) => result.map_err(KeyManagerError::from),
                Err(_) => Err(KeyManagerError::Unavailable),
            }
        }
        .into_actor(self)
        .map(move |result, act, ctx| {
            let log = act.log.clone();
            guarded("keys", &log, ctx, |_| act.apply(&result, rotate.as_deref()))
                .unwrap_or(Err(KeyManagerError::Unavailable))
                .and(result)
        })
    }

    /// Records and logs what a step did.
    fn apply(
        &mut self,
        result: &Result<Reconciled, KeyManagerError>,
        requested_by: Option<&str>,
    ) -> Result<(), KeyManagerError> {
        match result {
            Ok(done) => {
                if let Some(key) = &done.created {
                    slog::info!(self.log, "new signing key"; "kid" => &key.kid,
                        "requested_by" => requested_by.unwrap_or("schedule"));
                    if requested_by.is_none() {
                        self.audit(
                            Action::SigningKeyRotated,
                            &key.kid,
                            serde_json::json!({ "by": "schedule" }),
                        );
                    }
                }
                if let Some(refused) = &done.refused {
                    slog::warn!(self.log, "key rotation refused"; "reason" => %refused,
                        "retry_after_secs" => refused.retry_after_secs(),
                        "requested_by" => requested_by.unwrap_or("schedule"));
                }
                for kid in &done.retired {
                    slog::info!(self.log, "signing key retired"; "kid" => kid);
                    self.audit(Action::SigningKeyRetired, kid, serde_json::Value::Null);
                }
                if done.published {
                    let kids: Vec<&str> = done.keys.iter().map(|k| k.kid.as_str()).collect();
                    slog::debug!(self.log, "key snapshot published"; "kids" => kids.join(","));
                }
                self.published = Some(done.keys.clone());
                Ok(())
            }
            Err(e) => {
                slog::error!(self.log, "key ring step failed; the previous keys stay in force"; "error" => %e);
                Ok(())
            }
        }
    }
}

impl Actor for KeyManager {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.add_stream(self.clock.interval(self.policy.scan_every));
        let first = self.step(None).map(|_, _, _| ());
        ctx.wait(first);
        let data = self.data_step(None).map(|_, _, _| ());
        ctx.wait(data);
    }
}

impl Supervised for KeyManager {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        if let Some(counter) = &self.restarts {
            counter.inc();
        }
        slog::warn!(self.log, "key manager restarting; rescanning the ring");
        // Publish again whatever the ring holds.
        self.published = None;
    }
}

impl StreamHandler<()> for KeyManager {
    fn handle(&mut self, _tick: (), ctx: &mut Self::Context) {
        let tick = self.step(None).map(|_, _, _| ());
        ctx.wait(tick);
        let data = self.data_step(None).map(|_, _, _| ());
        ctx.wait(data);
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {}
}

impl Handler<Rotate> for KeyManager {
    type Result = AtomicResponse<Self, Result<KeyStatus, KeyManagerError>>;

    fn handle(&mut self, msg: Rotate, _ctx: &mut Self::Context) -> Self::Result {
        let now = self.clock.now_ms();
        if let Some(refused) = self.last_rotation_ms.and_then(|ms| too_soon(ms, now)) {
            slog::warn!(self.log, "key rotation refused"; "reason" => %refused,
                "retry_after_secs" => refused.retry_after_secs(),
                "requested_by" => &msg.requested_by);
            return AtomicResponse::new(Box::pin(fut::ready(Err(refused.into()))));
        }
        AtomicResponse::new(Box::pin(self.step(Some(msg.requested_by)).map(
            move |result, act, _| {
                result.and_then(|done| {
                    if done.created.is_some() {
                        act.last_rotation_ms = Some(now);
                    }
                    if let Some(refused) = done.refused {
                        return Err(KeyManagerError::Refused(refused));
                    }
                    done.created.ok_or_else(|| {
                        KeyManagerError::Ring(KeyRingError(
                            "the new key was retired at once; check the clock".into(),
                        ))
                    })
                })
            },
        )))
    }
}

impl Handler<RotateData> for KeyManager {
    type Result = AtomicResponse<Self, Result<DataKeyReport, KeyManagerError>>;

    fn handle(&mut self, msg: RotateData, _ctx: &mut Self::Context) -> Self::Result {
        if self.data.is_none() {
            return AtomicResponse::new(Box::pin(fut::ready(Err(KeyManagerError::Ring(
                KeyRingError("no data keys".into()),
            )))));
        }
        let now = self.clock.now_ms();
        if let Some(refused) = self.last_data_rotation_ms.and_then(|ms| too_soon(ms, now)) {
            slog::warn!(self.log, "data-key rotation refused"; "reason" => %refused,
                "requested_by" => &msg.requested_by);
            return AtomicResponse::new(Box::pin(fut::ready(Err(refused.into()))));
        }
        AtomicResponse::new(Box::pin(self.data_step(Some(msg.requested_by)).map(
            move |result, act, _| {
                if result.as_ref().is_ok_and(|r| !r.created.is_empty()) {
                    act.last_data_rotation_ms = Some(now);
                }
                result
            },
        )))
    }
}

impl Handler<DataStatus> for KeyManager {
    type Result = Option<DataKeyReport>;

    fn handle(&mut self, _msg: DataStatus, _ctx: &mut Self::Context) -> Self::Result {
        self.data_report.clone()
    }
}

impl Handler<Rescan> for KeyManager {
    type Result = AtomicResponse<Self, Result<Vec<KeyStatus>, KeyManagerError>>;

    fn handle(&mut self, _msg: Rescan, _ctx: &mut Self::Context) -> Self::Result {
        AtomicResponse::new(Box::pin(
            self.step(None)
                .map(|result, _, _| result.map(|done| done.keys)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Mutex;

    const HOUR: Duration = Duration::from_secs(3_600);

    fn policy() -> KeyPolicy {
        KeyPolicy {
            rotate_every: Duration::from_secs(30 * 24 * 3_600),
            token_lifetime: HOUR + Duration::from_secs(30),
            scan_every: Duration::from_secs(10),
        }
    }

    fn info(kid: &str, created_ms: i64) -> KeyInfo {
        KeyInfo {
            kid: kid.into(),
            created_ms,
        }
    }

    /// An in-memory ring that records what it was asked to do.
    #[derive(Default)]
    struct FakeRing {
        keys: Mutex<Vec<KeyInfo>>,
        published: Mutex<Vec<Vec<KeyStatus>>>,
        retired: Mutex<Vec<String>>,
        fail_create: std::sync::atomic::AtomicBool,
    }

    impl FakeRing {
        fn with(keys: Vec<KeyInfo>) -> Arc<Self> {
            Arc::new(Self {
                keys: Mutex::new(keys),
                ..Self::default()
            })
        }

        fn last_published(&self) -> Option<Vec<KeyStatus>> {
            self.published.lock().unwrap().last().cloned()
        }

        fn kids(&self) -> Vec<String> {
            self.last_published()
                .unwrap_or_default()
                .into_iter()
                .map(|k| k.kid)
                .collect()
        }

        fn publications(&self) -> usize {
            self.published.lock().unwrap().len()
        }
    }

    impl KeyRing for FakeRing {
        fn list(&self) -> Result<Vec<KeyInfo>, KeyRingError> {
            Ok(self.keys.lock().unwrap().clone())
        }

        fn create(&self, created_ms: i64) -> Result<KeyInfo, KeyRingError> {
            if self.fail_create.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(KeyRingError("disk full".into()));
            }
            let mut keys = self.keys.lock().unwrap();
            let key = info(&format!("k{}", keys.len() + 1), created_ms);
            keys.push(key.clone());
            Ok(key)
        }

        fn retire(&self, kid: &str) -> Result<(), KeyRingError> {
            self.keys.lock().unwrap().retain(|k| k.kid != kid);
            self.retired.lock().unwrap().push(kid.to_owned());
            Ok(())
        }

        fn publish(&self, keys: &[KeyStatus]) -> Result<(), KeyRingError> {
            let current = keys.iter().filter(|k| k.state == KeyState::Current).count();
            assert_eq!(current, 1, "exactly one current key: {keys:?}");
            self.published.lock().unwrap().push(keys.to_vec());
            Ok(())
        }
    }

    /// Waits until `ready` holds. Run under `tokio::time::pause()`: each sleep returns only once
    /// the runtime is idle (tokio does not auto-advance paused time while a blocking task, such as
    /// the key manager's ring step, runs), so no real time passes and the result is deterministic.
    async fn until(what: &str, ready: impl Fn() -> bool) {
        for _ in 0..200 {
            if ready() {
                return;
            }
            settle().await;
        }
        panic!("never saw {what}");
    }

    /// Returns once every actor and blocking task has nothing left to do (paused time only).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    #[test]
    fn classify_keeps_a_replaced_key_until_its_last_token_expired() {
        let p = policy();
        let keys = [info("a", 0), info("b", 1_000_000)];
        let retire_at = 1_000_000 + 3_630_000 + 10_000;
        let now = classify(&keys, 1_000_001, &p);
        assert_eq!(now[0].state, KeyState::Verifying);
        assert_eq!(now[0].retires_at_ms, Some(retire_at));
        assert_eq!(now[1].state, KeyState::Current);
        assert_eq!(now[1].retires_at_ms, None);
        assert_eq!(
            classify(&keys, retire_at - 1, &p)[0].state,
            KeyState::Verifying
        );
        assert_eq!(classify(&keys, retire_at, &p)[0].state, KeyState::Retired);
        // The current key is never retired, however old.
        assert_eq!(classify(&keys, i64::MAX, &p)[1].state, KeyState::Current);
        assert!(classify(&[], 0, &p).is_empty());
    }

    #[test]
    fn reconcile_creates_a_first_key_rotates_on_schedule_and_publishes_only_changes() {
        let p = policy();
        let ring = FakeRing::with(vec![]);
        let first = reconcile(&*ring, 1_000, &p, false, None).unwrap();
        assert_eq!(first.created.as_ref().unwrap().kid, "k1");
        assert!(first.published);
        let again = reconcile(&*ring, 2_000, &p, false, Some(&first.keys)).unwrap();
        assert_eq!(again.created, None);
        assert!(!again.published);
        assert_eq!(ring.publications(), 1);
        let later = 1_000 + millis(p.rotate_every);
        let rotated = reconcile(&*ring, later, &p, false, Some(&again.keys)).unwrap();
        assert_eq!(rotated.created.as_ref().unwrap().kid, "k2");
        assert_eq!(rotated.keys.len(), 2);
        assert_eq!(rotated.keys[0].state, KeyState::Verifying);
    }

    #[test]
    fn a_new_key_is_newest_even_if_the_clock_is_behind() {
        let ring = FakeRing::with(vec![info("k1", 50_000)]);
        let done = reconcile(&*ring, 10_000, &policy(), true, None).unwrap();
        let created = done.created.unwrap();
        assert_eq!(created.created_ms, 50_001);
        assert_eq!(created.state, KeyState::Current);
    }

    #[test]
    fn on_demand_rotations_are_bounded_in_rate_and_ring_size() {
        let p = policy();
        let ring = FakeRing::with(vec![info("k1", 0)]);
        let step = millis(MIN_ROTATION_INTERVAL);
        let mut now = step;
        let mut published: Option<Vec<KeyStatus>> = None;
        let mut created = 0;
        let mut refusals = Vec::new();
        // 515 attempts, one every 10 s, as the key manager would run them: far more than the
        // bounds allow.
        let mut last_rotation: Option<i64> = None;
        for _ in 0..515 {
            if let Some(r) = last_rotation.and_then(|ms| too_soon(ms, now)) {
                refusals.push(r);
                now += 10_000;
                continue;
            }
            let done = reconcile(&*ring, now, &p, true, published.as_deref()).unwrap();
            assert!(done.keys.len() <= MAX_KEYS_IN_FORCE, "{:?}", done.keys);
            match &done.refused {
                None => {
                    created += 1;
                    last_rotation = Some(now);
                }
                Some(r) => refusals.push(r.clone()),
            }
            assert_eq!(done.created.is_some(), done.refused.is_none());
            published = Some(done.keys);
            now += 10_000;
        }
        // No key was retired before its tokens expired: everything retired was past its time.
        assert!(ring.retired.lock().unwrap().len() < created);
        assert!(refusals
            .iter()
            .any(|r| matches!(r, RotationRefused::TooSoon { .. })));
        assert!(refusals
            .iter()
            .any(|r| matches!(r, RotationRefused::RingFull { .. })));
        // Over 5150 s with a 3640 s retirement, the ring cap (not the interval) bounds creation.
        assert!(created < 515 / 6, "created {created}");
    }

    #[test]
    fn a_refusal_says_when_to_retry_and_never_retires_early() {
        let p = policy();
        let ring = FakeRing::with(vec![info("k1", 0)]);
        let soon = too_soon(0, 1_000).unwrap();
        assert_eq!(
            soon,
            RotationRefused::TooSoon {
                retry_after_ms: millis(MIN_ROTATION_INTERVAL) - 1_000
            }
        );
        assert_eq!(soon.retry_after_secs(), 59);
        assert_eq!(too_soon(0, millis(MIN_ROTATION_INTERVAL)), None);
        assert_eq!(
            too_soon(5_000, 1_000),
            None,
            "a clock behind the key is not 'too soon'"
        );
        // Fill the ring, one key per minimum interval.
        let step = millis(MIN_ROTATION_INTERVAL);
        let mut now = 0;
        for _ in 1..MAX_KEYS_IN_FORCE {
            now += step;
            assert!(reconcile(&*ring, now, &p, true, None)
                .unwrap()
                .created
                .is_some());
        }
        now += step;
        let full = reconcile(&*ring, now, &p, true, None).unwrap();
        // k1 retires at k2's creation + the retirement delay.
        let k1_retires = step + p.retire_after_ms();
        assert_eq!(
            full.refused,
            Some(RotationRefused::RingFull {
                retry_after_ms: k1_retires - now
            })
        );
        assert_eq!(full.keys.len(), MAX_KEYS_IN_FORCE);
        assert!(ring.retired.lock().unwrap().is_empty());
        // Once k1 has retired, there is room again.
        let later = reconcile(&*ring, k1_retires, &p, true, None).unwrap();
        assert_eq!(later.refused, None);
        assert_eq!(later.retired, vec!["k1".to_owned()]);
        assert_eq!(later.keys.len(), MAX_KEYS_IN_FORCE);
        // A scheduled rotation is not bounded (it happens once per rotate_every).
        let empty = FakeRing::with(vec![]);
        assert!(reconcile(&*empty, 0, &p, true, None)
            .unwrap()
            .created
            .is_some());
    }

    #[actix::test]
    async fn the_manager_answers_a_refused_rotation_with_its_reason() {
        let clock = ManualClock::new(1_000_000);
        let ring = FakeRing::with(vec![info("k1", 1_000_000)]);
        let manager = KeyManager::new(
            ring.clone(),
            policy(),
            Arc::new(clock.clone()),
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .start_supervised();
        let rotate = || Rotate {
            requested_by: "test".into(),
        };
        assert_eq!(manager.send(rotate()).await.unwrap().unwrap().kid, "k2");
        let err = manager.send(rotate()).await.unwrap().unwrap_err();
        assert!(matches!(
            err,
            KeyManagerError::Refused(RotationRefused::TooSoon { .. })
        ));
        assert_eq!(ring.kids(), vec!["k1", "k2"]);
        clock.advance(MIN_ROTATION_INTERVAL);
        assert_eq!(manager.send(rotate()).await.unwrap().unwrap().kid, "k3");
    }

    #[actix::test]
    async fn rotate_then_retire_on_the_clock() {
        tokio::time::pause();
        let clock = ManualClock::new(1_000_000);
        let ring = FakeRing::with(vec![info("k1", 900_000)]);
        let manager = KeyManager::new(
            ring.clone(),
            policy(),
            Arc::new(clock.clone()),
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .start_supervised();
        let initial = manager.send(Rescan).await.unwrap().unwrap();
        assert_eq!(initial.len(), 1);
        assert_eq!(ring.kids(), vec!["k1"]);

        let new = manager
            .send(Rotate {
                requested_by: "test".into(),
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(new.kid, "k2");
        assert_eq!(new.state, KeyState::Current);
        let published = ring.last_published().unwrap();
        assert_eq!(ring.kids(), vec!["k1", "k2"]);
        let retires_at = published[0].retires_at_ms.unwrap();
        assert_eq!(retires_at, 1_000_000 + policy().retire_after_ms());

        // Not yet: a tick before the retirement point changes nothing.
        clock.advance(HOUR);
        settle().await;
        assert_eq!(ring.kids(), vec!["k1", "k2"]);
        assert!(ring.retired.lock().unwrap().is_empty());

        // Past it, the next tick retires k1 and publishes the ring without it.
        clock.advance(Duration::from_secs(60));
        until("k1 retired", || ring.kids() == vec!["k2"]).await;
        assert_eq!(*ring.retired.lock().unwrap(), vec!["k1".to_owned()]);
    }

    #[actix::test]
    async fn picks_up_a_key_added_behind_its_back_and_rotates_on_schedule() {
        tokio::time::pause();
        let clock = ManualClock::new(1_000_000);
        let ring = FakeRing::with(vec![info("k1", 1_000_000)]);
        let p = policy();
        let manager = KeyManager::new(
            ring.clone(),
            p.clone(),
            Arc::new(clock.clone()),
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .start_supervised();
        manager.send(Rescan).await.unwrap().unwrap();
        // The CLI adds a key on disk; the next scan publishes it.
        ring.keys.lock().unwrap().push(info("cli", 1_000_500));
        clock.advance(p.scan_every);
        until("the CLI key", || ring.kids() == vec!["k1", "cli"]).await;
        // Thirty days on, the schedule rotates (and k1 has long been retired).
        clock.advance(p.rotate_every);
        until("a scheduled key", || ring.kids() == vec!["cli", "k3"]).await;
        assert_eq!(*ring.retired.lock().unwrap(), vec!["k1".to_owned()]);
        let current = ring.last_published().unwrap();
        assert_eq!(current[1].state, KeyState::Current);
    }

    #[actix::test]
    async fn a_failing_ring_keeps_the_previous_snapshot_and_reports_the_error() {
        let clock = ManualClock::new(1_000_000);
        let ring = FakeRing::with(vec![info("k1", 900_000)]);
        let manager = KeyManager::new(
            ring.clone(),
            policy(),
            Arc::new(clock.clone()),
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .start_supervised();
        manager.send(Rescan).await.unwrap().unwrap();
        ring.fail_create
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let err = manager
            .send(Rotate {
                requested_by: "test".into(),
            })
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(err, KeyManagerError::Ring(KeyRingError("disk full".into())));
        assert_eq!(ring.kids(), vec!["k1"]);
        assert_eq!(ring.publications(), 1);
        // And it keeps answering.
        assert_eq!(manager.send(Rescan).await.unwrap().unwrap().len(), 1);
    }
}
