//! One device's deliveries: [`DeviceQueue`], the per-device priority heap, in-flight window and
//! quiet-hours hold.
//!
//! Its invariants are private and kept by its methods alone:
//!
//! - every delivery it holds has exactly one slot, ready or in flight (with its ack deadline);
//! - the in-flight count equals the number of in-flight slots and never exceeds the window;
//! - ready deliveries leave in priority order, then store sequence (oldest first).
//!
//! The heap may hold stale entries (acknowledged, expired or already in flight): removing from the
//! middle of a heap is O(n), so they are skipped when they reach the top instead.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use crate::metrics::QueueGauges;
use crate::model::{DevicePolicy, NotificationId, QueuedNotification};

/// Heap entry: highest priority first, then lowest sequence (oldest) first.
struct ReadyEntry(Arc<QueuedNotification>);

impl PartialEq for ReadyEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for ReadyEntry {}
impl PartialOrd for ReadyEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ReadyEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.0.priority, Reverse(self.0.seq)).cmp(&(other.0.priority, Reverse(other.0.seq)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum SlotState {
    Ready,
    InFlight { deadline: i64, sent_at: i64 },
}

struct Slot {
    note: Arc<QueuedNotification>,
    state: SlotState,
    /// Whether it was sent before (it is a redelivery when sent again).
    sent_before: bool,
}

/// What one [`DeviceQueue::dispatch`] took out of the queue.
#[derive(Debug, Default)]
pub struct Dispatched {
    /// Now in flight, in the order they should arrive (highest priority, then oldest, first).
    pub sent: Vec<Arc<QueuedNotification>>,
    /// Expired before they could be sent; dropped from the queue.
    pub expired: Vec<Arc<QueuedNotification>>,
    /// Indices into `sent` of the deliveries this queue had sent before (ack timeout, reconnect),
    /// ascending; empty (no allocation) in the common case.
    pub resent: Vec<usize>,
}

/// A delivery [`DeviceQueue::ack`] ended.
#[derive(Debug)]
pub struct Acked {
    /// Its notification.
    pub note: Arc<QueuedNotification>,
    /// When it was last sent, if it was in flight (epoch milliseconds).
    pub sent_at: Option<i64>,
}

/// One device's deliveries: a `BinaryHeap` of ready ones (priority, then store sequence), a slot
/// per delivery it holds (ready or in flight, with its ack deadline), the in-flight window, and
/// whether quiet hours hold ready ones back. See the module documentation for its invariants.
///
/// Public so that `benches/queue.rs` measures the real structure; the queue actor is its only
/// other user.
pub struct DeviceQueue {
    policy: DevicePolicy,
    ready: BinaryHeap<ReadyEntry>,
    slots: HashMap<NotificationId, Slot>,
    in_flight: usize,
    /// Ready deliveries by priority (indexed by `Priority as usize`); they sum to `ready()`.
    ready_by_priority: [usize; 4],
    window: usize,
    held: bool,
    /// The relay-wide gauges this queue's counts are added to (see [`with_gauges`](Self::with_gauges)).
    gauges: Option<Arc<QueueGauges>>,
}

impl DeviceQueue {
    /// An empty queue for a device with `policy`, with no in-flight window (see
    /// [`with_window`](Self::with_window)).
    pub fn new(policy: DevicePolicy) -> Self {
        Self {
            policy,
            ready: BinaryHeap::new(),
            slots: HashMap::new(),
            in_flight: 0,
            ready_by_priority: [0; 4],
            window: usize::MAX,
            held: false,
            gauges: None,
        }
    }

    /// The same queue, adding its counts to `gauges` (an empty queue: nothing to add yet).
    pub fn with_gauges(mut self, gauges: Arc<QueueGauges>) -> Self {
        self.gauges = Some(gauges);
        self
    }

    fn ready_changed(&mut self, priority: usize, by: isize) {
        self.ready_by_priority[priority] = self.ready_by_priority[priority].wrapping_add_signed(by);
        if let Some(gauges) = &self.gauges {
            gauges.ready_changed(priority, by as i64);
        }
    }

    fn in_flight_changed(&mut self, by: isize) {
        self.in_flight = self.in_flight.wrapping_add_signed(by);
        if let Some(gauges) = &self.gauges {
            gauges.in_flight.add(by as i64);
        }
    }

    /// The same queue, sending at most `window` unacknowledged deliveries at a time.
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window;
        self
    }

    /// The device's delivery policy.
    pub fn policy(&self) -> &DevicePolicy {
        &self.policy
    }

    /// Replaces the device's delivery policy (it applies from the next dispatch on).
    pub fn set_policy(&mut self, policy: DevicePolicy) {
        self.policy = policy;
    }

    /// Adds a delivery unless the device already has it (restores and late commits may overlap).
    pub fn add(&mut self, note: &Arc<QueuedNotification>) -> bool {
        self.add_restored(note, false)
    }

    /// [`add`](Self::add) for a delivery read back from the store: `sent_before` when it was
    /// sent before the restart, so that sending it again counts as a redelivery.
    pub fn add_restored(&mut self, note: &Arc<QueuedNotification>, sent_before: bool) -> bool {
        if self.slots.contains_key(&note.id) {
            return false;
        }
        self.slots.insert(
            note.id.clone(),
            Slot {
                note: note.clone(),
                state: SlotState::Ready,
                sent_before,
            },
        );
        self.ready.push(ReadyEntry(note.clone()));
        self.ready_changed(note.priority as usize, 1);
        true
    }

    /// The ready delivery that goes next, after discarding stale heap entries on the way.
    pub fn peek_ready(&mut self) -> Option<&Arc<QueuedNotification>> {
        while let Some(top) = self.ready.peek() {
            let fresh = self
                .slots
                .get(&top.0.id)
                .is_some_and(|slot| slot.state == SlotState::Ready);
            if fresh {
                break;
            }
            self.ready.pop();
        }
        self.ready.peek().map(|entry| &entry.0)
    }

    /// Takes the next ready delivery (the one [`peek_ready`](Self::peek_ready) shows) and marks it
    /// in flight from `now` until `deadline`; `None` when nothing is ready or the window is full.
    /// The flag says whether it had been sent before.
    pub fn send_next(
        &mut self,
        now: i64,
        deadline: i64,
    ) -> Option<(Arc<QueuedNotification>, bool)> {
        if self.in_flight >= self.window {
            return None;
        }
        self.peek_ready()?;
        let ReadyEntry(note) = self.ready.pop()?;
        // peek_ready left a fresh entry on top: its slot exists and is ready.
        let slot = self.slots.get_mut(&note.id)?;
        slot.state = SlotState::InFlight {
            deadline,
            sent_at: now,
        };
        let again = std::mem::replace(&mut slot.sent_before, true);
        self.in_flight_changed(1);
        self.ready_changed(note.priority as usize, -1);
        Some((note, again))
    }

    /// Drops the next ready delivery (it expired).
    fn drop_next(&mut self) -> Option<Arc<QueuedNotification>> {
        self.peek_ready()?;
        let ReadyEntry(note) = self.ready.pop()?;
        self.slots.remove(&note.id);
        self.ready_changed(note.priority as usize, -1);
        Some(note)
    }

    /// Takes what the device may receive at `now`, up to its window, marking it in flight until
    /// `deadline`; drops what expired on the way. Stops at the first delivery that quiet hours
    /// hold back, and remembers that (see [`is_held`](Self::is_held)).
    pub fn dispatch(&mut self, now: i64, deadline: i64) -> Dispatched {
        self.held = false;
        let mut out = Dispatched::default();
        while self.in_flight < self.window {
            let Some((expires_at, priority)) =
                self.peek_ready().map(|n| (n.expires_at, n.priority))
            else {
                break;
            };
            if expires_at <= now {
                out.expired.extend(self.drop_next());
                continue;
            }
            if !self.policy.may_send(priority, now) {
                self.held = true;
                break;
            }
            match self.send_next(now, deadline) {
                Some((note, again)) => {
                    if again {
                        out.resent.push(out.sent.len());
                    }
                    out.sent.push(note);
                }
                None => break,
            }
        }
        out
    }

    /// Whether the last dispatch stopped at a delivery that quiet hours hold back.
    pub fn is_held(&self) -> bool {
        self.held
    }

    /// Ends the delivery of `id` (acknowledged); returns it if the device had it.
    pub fn ack(&mut self, id: &NotificationId) -> Option<Acked> {
        let slot = self.slots.remove(id)?;
        let sent_at = match slot.state {
            SlotState::InFlight { sent_at, .. } => {
                self.in_flight_changed(-1);
                Some(sent_at)
            }
            SlotState::Ready => {
                self.ready_changed(slot.note.priority as usize, -1);
                None
            }
        };
        Some(Acked {
            note: slot.note,
            sent_at,
        })
    }

    /// The ack deadline `deadline` of `id` passed: if it is still in flight under that deadline
    /// (not acknowledged, not sent again since), it goes back to the heap. Returns whether it did.
    pub fn ack_timeout(&mut self, id: &NotificationId, deadline: i64) -> bool {
        let Some(slot) = self.slots.get_mut(id) else {
            return false;
        };
        if !matches!(slot.state, SlotState::InFlight { deadline: d, .. } if d == deadline) {
            return false;
        }
        slot.state = SlotState::Ready;
        let note = slot.note.clone();
        self.in_flight_changed(-1);
        self.ready_changed(note.priority as usize, 1);
        self.ready.push(ReadyEntry(note));
        true
    }

    /// The device went offline: every in-flight delivery goes back to the heap, and nothing is
    /// held any more (it is re-evaluated on the next dispatch).
    pub fn requeue_in_flight(&mut self) {
        let mut back = [0isize; 4];
        for slot in self.slots.values_mut() {
            if matches!(slot.state, SlotState::InFlight { .. }) {
                slot.state = SlotState::Ready;
                back[slot.note.priority as usize] += 1;
                self.ready.push(ReadyEntry(slot.note.clone()));
            }
        }
        for (priority, count) in back.into_iter().enumerate() {
            if count > 0 {
                self.ready_changed(priority, count);
            }
        }
        let in_flight = self.in_flight as isize;
        self.in_flight_changed(-in_flight);
        self.held = false;
    }

    /// Drops every delivery (ready or in flight) whose notification expired at `now`; returns them.
    pub fn sweep_expired(&mut self, now: i64) -> Vec<Arc<QueuedNotification>> {
        let mut expired = Vec::new();
        let mut dropped_in_flight = 0isize;
        let mut dropped_ready = [0isize; 4];
        self.slots.retain(|_, slot| {
            if slot.note.expires_at > now {
                return true;
            }
            match slot.state {
                SlotState::InFlight { .. } => dropped_in_flight += 1,
                SlotState::Ready => dropped_ready[slot.note.priority as usize] += 1,
            }
            expired.push(slot.note.clone());
            false
        });
        for (priority, count) in dropped_ready.into_iter().enumerate() {
            if count > 0 {
                self.ready_changed(priority, -count);
            }
        }
        if dropped_in_flight > 0 {
            self.in_flight_changed(-dropped_in_flight);
        }
        expired
    }

    /// Drops every delivery, ready or in flight (a clustered relay forgets a device that left
    /// it: the store keeps them, and the relay it connects to next reads them back).
    pub fn clear(&mut self) {
        for (priority, count) in self.ready_by_priority.into_iter().enumerate() {
            if count > 0 {
                self.ready_changed(priority, -(count as isize));
            }
        }
        let in_flight = self.in_flight as isize;
        self.in_flight_changed(-in_flight);
        self.slots.clear();
        self.ready.clear();
        self.held = false;
    }

    /// Deliveries sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Deliveries waiting to be sent.
    pub fn ready(&self) -> usize {
        self.slots.len() - self.in_flight
    }

    /// Deliveries waiting to be sent, by priority (indexed by `Priority as usize`).
    pub fn ready_by_priority(&self) -> [usize; 4] {
        self.ready_by_priority
    }

    /// When the oldest ready delivery was published (epoch ms, the notification's `created_at`).
    /// Walks every slot, so it is for health checks, not for the hot path.
    pub fn oldest_ready(&self) -> Option<i64> {
        self.slots
            .values()
            .filter(|slot| slot.state == SlotState::Ready)
            .map(|slot| slot.note.created_at)
            .min()
    }

    /// Deliveries held (ready or in flight).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the device has no deliveries.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

impl Drop for DeviceQueue {
    /// A removed device (or a queue rebuilt on restart) takes its counts out of the shared totals.
    fn drop(&mut self) {
        if let Some(gauges) = &self.gauges {
            for (priority, count) in self.ready_by_priority.into_iter().enumerate() {
                gauges.ready_changed(priority, -(count as i64));
            }
            gauges.in_flight.sub(self.in_flight as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::model::Priority;

    fn note(priority: Priority, seq: i64, expires_at: i64) -> Arc<QueuedNotification> {
        Arc::new(QueuedNotification {
            id: NotificationId::generate(),
            seq,
            priority,
            expires_at,
            created_at: seq,
            payload: Bytes::new(),
            trace_id: None,
        })
    }

    #[test]
    fn oldest_ready_is_the_oldest_not_in_flight() {
        let mut queue = DeviceQueue::new(DevicePolicy::default());
        assert!(queue.oldest_ready().is_none());
        let (old, newer) = (
            note(Priority::Low, 1, i64::MAX),
            note(Priority::Normal, 2, i64::MAX),
        );
        let critical = note(Priority::Critical, 3, i64::MAX);
        for n in [&old, &newer, &critical] {
            queue.add(n);
        }
        assert_eq!(queue.oldest_ready(), Some(old.created_at));
        // Priority order sends the critical one first; then the normal one, then the old one.
        queue.send_next(0, 10);
        assert_eq!(queue.oldest_ready(), Some(old.created_at));
        queue.send_next(0, 10);
        queue.send_next(0, 10);
        assert!(queue.oldest_ready().is_none(), "all in flight");
    }

    fn key(n: &QueuedNotification) -> (Priority, Reverse<i64>) {
        (n.priority, Reverse(n.seq))
    }

    #[test]
    fn serves_highest_priority_then_oldest() {
        let mut queue = DeviceQueue::new(DevicePolicy::default());
        for (p, s) in [
            (Priority::Low, 1),
            (Priority::High, 5),
            (Priority::Normal, 2),
            (Priority::High, 3),
            (Priority::Critical, 9),
            (Priority::Normal, 0),
        ] {
            queue.add(&note(p, s, i64::MAX));
        }
        let order: Vec<_> = queue
            .dispatch(0, 1)
            .sent
            .iter()
            .map(|n| (n.priority, n.seq))
            .collect();
        assert_eq!(
            order,
            vec![
                (Priority::Critical, 9),
                (Priority::High, 3),
                (Priority::High, 5),
                (Priority::Normal, 0),
                (Priority::Normal, 2),
                (Priority::Low, 1),
            ]
        );
    }

    #[test]
    fn ignores_a_delivery_it_already_has() {
        let mut queue = DeviceQueue::new(DevicePolicy::default());
        let n = note(Priority::Normal, 1, i64::MAX);
        assert!(queue.add(&n));
        assert!(!queue.add(&n));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.dispatch(0, 1).sent.len(), 1);
        assert!(queue.dispatch(0, 1).sent.is_empty());
    }

    #[test]
    fn clear_drops_ready_and_in_flight_and_their_counts() {
        let gauges = crate::metrics::Metrics::new("test", "test").queue.clone();
        let mut queue = DeviceQueue::new(DevicePolicy::default())
            .with_window(1)
            .with_gauges(gauges.clone());
        let (a, b) = (
            note(Priority::High, 1, i64::MAX),
            note(Priority::Low, 2, i64::MAX),
        );
        queue.add(&a);
        queue.add(&b);
        assert_eq!(queue.dispatch(0, 1).sent.len(), 1);
        assert_eq!((queue.in_flight(), queue.ready()), (1, 1));
        queue.clear();
        assert_eq!((queue.len(), queue.in_flight(), queue.ready()), (0, 0, 0));
        assert_eq!(queue.ready_by_priority(), [0; 4]);
        assert_eq!(gauges.in_flight.get(), 0);
        assert!(gauges.ready.iter().all(|g| g.get() == 0));
        assert!(queue.peek_ready().is_none(), "no stale heap entry survives");
        assert!(queue.add(&a), "a delivery read back later is new again");
    }

    #[test]
    fn quiet_hours_hold_all_but_critical() {
        let quiet = crate::model::QuietHours {
            start: chrono::NaiveTime::MIN,
            end: chrono::NaiveTime::from_hms_opt(23, 59, 59).unwrap(),
            timezone: chrono_tz::UTC,
        };
        let mut queue = DeviceQueue::new(DevicePolicy {
            quiet_hours: Some(quiet),
            ..DevicePolicy::default()
        });
        queue.add(&note(Priority::Normal, 1, i64::MAX));
        let critical = note(Priority::Critical, 2, i64::MAX);
        queue.add(&critical);
        let out = queue.dispatch(0, 1);
        assert_eq!(out.sent.len(), 1);
        assert_eq!(out.sent[0].id, critical.id);
        assert!(queue.is_held());
        queue.set_policy(DevicePolicy::default());
        assert_eq!(queue.dispatch(0, 1).sent.len(), 1);
        assert!(!queue.is_held());
    }

    /// One step of a device's life, as the queue actor drives it.
    #[derive(Debug, Clone)]
    enum Op {
        /// A new notification is committed for the device.
        Push { priority: usize, ttl: i64 },
        /// A notification it already holds is added again (a restore overlapping a commit).
        PushAgain { pick: usize },
        /// The device may receive what is ready.
        Dispatch,
        /// The device acknowledges one of the notifications it was ever given.
        Ack { pick: usize },
        /// Time passes; ack deadlines that passed fire, in send order.
        Advance { ms: i64 },
        /// The expiry sweep runs.
        Sweep,
        /// The device's last socket closes.
        Offline,
        /// The queue restarts and is rebuilt from what the store still holds.
        Restore,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..4usize, 1..400i64).prop_map(|(priority, ttl)| Op::Push { priority, ttl }),
            1 => any::<usize>().prop_map(|pick| Op::PushAgain { pick }),
            4 => Just(Op::Dispatch),
            3 => any::<usize>().prop_map(|pick| Op::Ack { pick }),
            2 => (1..120i64).prop_map(|ms| Op::Advance { ms }),
            1 => Just(Op::Sweep),
            1 => Just(Op::Offline),
            1 => Just(Op::Restore),
        ]
    }

    /// Where the model says a notification is.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Where {
        Ready,
        InFlight(i64),
        Acked,
        Expired,
    }

    const ACK_TIMEOUT: i64 = 50;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Across any interleaving of push, dispatch, ack, ack timeout, sweep, offline and
        /// restore: deliveries leave in priority-then-sequence order, the window is never
        /// exceeded, and every notification ends acknowledged or expired exactly once.
        #[test]
        fn no_delivery_is_lost_duplicated_or_out_of_order(
            window in 1..6usize,
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            // Shared totals, as the relay keeps them over all its devices: this queue's counts,
            // and after a restore only the new queue's (the old one took its own back out).
            let metrics = crate::metrics::Metrics::new("test", "test");
            let mut queue = DeviceQueue::new(DevicePolicy::default())
                .with_window(window)
                .with_gauges(metrics.queue.clone());
            let mut now = 0i64;
            let mut seq = 0i64;
            let mut notes: Vec<Arc<QueuedNotification>> = Vec::new();
            let mut state: HashMap<NotificationId, Where> = HashMap::new();
            // Ack deadlines in send order, as the actor keeps them.
            let mut deadlines: Vec<(i64, NotificationId)> = Vec::new();

            for op in ops {
                match op {
                    Op::Push { priority, ttl } => {
                        seq += 1;
                        let n = note(Priority::ALL[priority], seq, now + ttl);
                        prop_assert!(queue.add(&n));
                        state.insert(n.id.clone(), Where::Ready);
                        notes.push(n);
                    }
                    Op::PushAgain { pick } => {
                        let held: Vec<_> = notes.iter()
                            .filter(|n| matches!(state[&n.id], Where::Ready | Where::InFlight(_)))
                            .collect();
                        if let Some(n) = held.get(pick % held.len().max(1)) {
                            prop_assert!(!queue.add(n), "a held delivery was added twice");
                        }
                    }
                    Op::Dispatch => {
                        let deadline = now + ACK_TIMEOUT;
                        let out = queue.dispatch(now, deadline);
                        for n in &out.expired {
                            prop_assert_eq!(state[&n.id], Where::Ready);
                            prop_assert!(n.expires_at <= now);
                            state.insert(n.id.clone(), Where::Expired);
                        }
                        for pair in out.sent.windows(2) {
                            prop_assert!(key(&pair[0]) > key(&pair[1]), "out of order");
                        }
                        for n in &out.sent {
                            prop_assert_eq!(state[&n.id], Where::Ready, "sent while not ready");
                            prop_assert!(n.expires_at > now, "sent after expiry");
                            state.insert(n.id.clone(), Where::InFlight(deadline));
                            deadlines.push((deadline, n.id.clone()));
                        }
                        // Nothing better was left behind, and the window was used.
                        let left: Vec<_> = notes.iter()
                            .filter(|n| state[&n.id] == Where::Ready && n.expires_at > now)
                            .collect();
                        if let Some(worst_sent) = out.sent.last() {
                            for n in &left {
                                prop_assert!(key(n) < key(worst_sent), "a better one was left");
                            }
                        }
                        if !left.is_empty() {
                            prop_assert_eq!(queue.in_flight(), window, "room left unused");
                        }
                    }
                    Op::Ack { pick } => {
                        if let Some(n) = notes.get(pick % notes.len().max(1)) {
                            let held = matches!(state[&n.id], Where::Ready | Where::InFlight(_));
                            let acked = queue.ack(&n.id);
                            prop_assert_eq!(acked.is_some(), held);
                            if let Some(acked) = &acked {
                                let in_flight = matches!(state[&n.id], Where::InFlight(_));
                                prop_assert_eq!(acked.sent_at.is_some(), in_flight);
                            }
                            if held {
                                state.insert(n.id.clone(), Where::Acked);
                            }
                        }
                    }
                    Op::Advance { ms } => {
                        now += ms;
                        let due: Vec<_> = deadlines.iter()
                            .take_while(|(d, _)| *d <= now).cloned().collect();
                        deadlines.drain(..due.len());
                        for (deadline, id) in due {
                            let expect = state[&id] == Where::InFlight(deadline);
                            prop_assert_eq!(queue.ack_timeout(&id, deadline), expect);
                            if expect {
                                state.insert(id, Where::Ready);
                            }
                        }
                    }
                    Op::Sweep => {
                        let swept: HashSet<_> =
                            queue.sweep_expired(now).iter().map(|n| n.id.clone()).collect();
                        let due: HashSet<_> = notes.iter()
                            .filter(|n| matches!(state[&n.id], Where::Ready | Where::InFlight(_)))
                            .filter(|n| n.expires_at <= now)
                            .map(|n| n.id.clone())
                            .collect();
                        prop_assert_eq!(&swept, &due);
                        for id in swept {
                            state.insert(id, Where::Expired);
                        }
                    }
                    Op::Offline => {
                        queue.requeue_in_flight();
                        for w in state.values_mut() {
                            if matches!(w, Where::InFlight(_)) {
                                *w = Where::Ready;
                            }
                        }
                    }
                    Op::Restore => {
                        queue = DeviceQueue::new(DevicePolicy::default())
                            .with_window(window)
                            .with_gauges(metrics.queue.clone());
                        deadlines.clear();
                        for n in &notes {
                            match state[&n.id] {
                                Where::Ready | Where::InFlight(_) => {
                                    prop_assert!(queue.add(n));
                                    state.insert(n.id.clone(), Where::Ready);
                                }
                                Where::Acked | Where::Expired => {}
                            }
                        }
                    }
                }
                // After every step: the counts agree with the model and the window holds.
                let in_flight = state.values().filter(|w| matches!(w, Where::InFlight(_))).count();
                let held = state.values()
                    .filter(|w| matches!(w, Where::Ready | Where::InFlight(_))).count();
                prop_assert_eq!(queue.in_flight(), in_flight);
                prop_assert_eq!(queue.len(), held);
                prop_assert_eq!(queue.ready(), held - in_flight);
                let mut ready_by_priority = [0usize; 4];
                for n in &notes {
                    if matches!(state[&n.id], Where::Ready) {
                        ready_by_priority[n.priority as usize] += 1;
                    }
                }
                prop_assert_eq!(queue.ready_by_priority(), ready_by_priority);
                let shared: Vec<i64> = metrics.queue.ready.iter().map(|g| g.get()).collect();
                let expected: Vec<i64> = ready_by_priority.iter().map(|&n| n as i64).collect();
                prop_assert_eq!(shared, expected);
                prop_assert_eq!(metrics.queue.in_flight.get(), in_flight as i64);
                prop_assert!(queue.in_flight() <= window, "window exceeded");
            }

            // Drain: everything still held goes out once and is acknowledged once.
            queue.requeue_in_flight();
            for w in state.values_mut() {
                if matches!(w, Where::InFlight(_)) {
                    *w = Where::Ready;
                }
            }
            loop {
                let out = queue.dispatch(now, now + ACK_TIMEOUT);
                for n in &out.expired {
                    prop_assert_eq!(state.insert(n.id.clone(), Where::Expired), Some(Where::Ready));
                }
                if out.sent.is_empty() {
                    break;
                }
                for n in &out.sent {
                    prop_assert!(queue.ack(&n.id).is_some());
                    prop_assert!(queue.ack(&n.id).is_none(), "acknowledged twice");
                    state.insert(n.id.clone(), Where::Acked);
                }
            }
            for n in queue.sweep_expired(i64::MAX) {
                prop_assert_eq!(state.insert(n.id.clone(), Where::Expired), Some(Where::Ready));
            }
            prop_assert!(queue.is_empty());
            for n in &notes {
                prop_assert!(
                    matches!(state[&n.id], Where::Acked | Where::Expired),
                    "{:?} lost in {:?}", n.id, state[&n.id]
                );
            }
        }
    }
}
