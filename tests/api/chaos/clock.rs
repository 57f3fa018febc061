//! Clock jumps under load (`scripts/chaos/clock-jumps`): the relay runs in this process on the
//! manual clock, which the test moves forward by seconds, minutes and hours at a time while
//! publishers publish and devices ack.

use crate::helpers::{device_loop_with, spawn_app_at, Acks, TestApp};

use super::*;

/// 2026-12-07 20:00 UTC, where the relay's clock starts.
fn evening() -> i64 {
    chrono::NaiveDate::from_ymd_opt(2026, 12, 7)
        .and_then(|d| d.and_hms_opt(20, 0, 0))
        .expect("a valid time")
        .and_utc()
        .timestamp_millis()
}

/// A device whose access token the test refreshes, as a phone does once it expires.
struct Phone {
    device: Device,
    token: Rc<RefCell<String>>,
    log: Rc<DeviceLog>,
}

impl Phone {
    /// `POST /auth/refresh` with its refresh token; the device loop connects with the new access
    /// token from its next attempt on.
    async fn refresh(&mut self, app: &TestApp) {
        let (status, body) = app
            .post(
                "/api/v1/auth/refresh",
                None,
                &json!({"refreshToken": self.device.refresh_token}),
            )
            .await;
        assert_eq!(status, 200, "refresh of {}: {body}", self.device.id);
        self.device.refresh_token = body["refreshToken"].as_str().unwrap().to_owned();
        self.device.access_token = body["accessToken"].as_str().unwrap().to_owned();
        *self.token.borrow_mut() = self.device.access_token.clone();
    }

    /// Sequence numbers of the `chaos SEQ` notifications it received.
    fn seqs(&self) -> Vec<u64> {
        self.log
            .items
            .borrow()
            .values()
            .filter_map(|t| t.strip_prefix("chaos ")?.parse().ok())
            .collect()
    }

    fn closed_with(&self, code: u16) -> u64 {
        self.log.closes.borrow().get(&code).copied().unwrap_or(0)
    }
}

/// Moves the clock by `by`, past every access token's expiry: every socket must close with 4001
/// (at its next heartbeat) and no device come back on its old token; then each refreshes its
/// token and every device must come back.
async fn jump_past_expiry(
    app: &TestApp,
    load: &Load,
    phones: &mut [Phone],
    by: Duration,
    when: &str,
) {
    let hellos: Vec<u64> = phones.iter().map(|p| p.log.hellos.get()).collect();
    let closed: Vec<u64> = phones.iter().map(|p| p.closed_with(4001)).collect();
    app.clock.advance(by);
    let within = || Instant::now() + Duration::from_secs(30);
    let all_closed = until(&load.roaming.progress, within(), || {
        phones
            .iter()
            .zip(&closed)
            .all(|(p, c)| p.closed_with(4001) > *c)
    })
    .await;
    assert!(
        all_closed,
        "{when}: not every socket was closed with 4001 past its token's expiry"
    );
    let now: Vec<u64> = phones.iter().map(|p| p.log.hellos.get()).collect();
    assert_eq!(
        now, hellos,
        "{when}: a device came back on an expired token"
    );
    for phone in phones.iter_mut() {
        phone.refresh(app).await;
    }
    let back = until(&load.roaming.progress, within(), || {
        phones
            .iter()
            .zip(&hellos)
            .all(|(p, h)| p.log.hellos.get() > *h)
    })
    .await;
    assert!(
        back,
        "{when}: the devices did not come back with refreshed tokens"
    );
}

/// `CHAOS_DEVICES` devices (12: a third sleeping 20:30–07:00 UTC, one acking only what comes a
/// second time), `CHAOS_PUBLISHERS` (8), `CHAOS_CYCLE_SECONDS` of load between jumps (2),
/// `CHAOS_DRAIN_SECONDS` (60).
///
/// The relay's clock starts at 20:00 UTC; access tokens live an hour, the ack timeout is 30 s,
/// and some devices have quiet hours from 20:30 to 07:00 UTC. While the load runs the clock jumps:
///
/// 1. +31 s, past the ack timeout: what the late-acking device left unacked comes again;
/// 2. to 20:40, into quiet hours: from here the sleeping devices get nothing (all is `normal`),
///    the others everything;
/// 3. to 21:05, past every access token's expiry: every socket is closed with 4001 at its next
///    heartbeat; the devices refresh their tokens and come back;
/// 4. to 07:01 the next morning, out of quiet hours and past the new tokens' expiry: the devices
///    refresh again, and the sleeping ones get everything held for them.
///
/// At the end (the clock moving on by the ack timeout while the rest drains) every 202'd
/// notification reached its device.
#[actix_web::test]
#[ignore = "chaos: run by scripts/chaos/clock-jumps"]
async fn clock_jumps_across_ack_timeouts_quiet_hours_and_token_expiry_lose_nothing() {
    let devices: usize = setting("CHAOS_DEVICES", 12).max(3);
    let publishers: usize = setting("CHAOS_PUBLISHERS", 8);
    let between = Duration::from_secs_f64(setting("CHAOS_CYCLE_SECONDS", 2.0));
    let drain: f64 = setting("CHAOS_DRAIN_SECONDS", 60.0);
    let began = Instant::now();

    let app = spawn_app_at(evening(), |s| {
        // The limits are not what this is about; the clock jumps would refill them anyway.
        s.limits.enabled = false;
        s.delivery.ack_timeout_seconds = 30;
        s.auth.access_token_ttl_seconds = 3_600;
    })
    .await;
    let mut phones = Vec::new();
    for i in 0..devices {
        let device = app.pair_device(&format!("phone {i}")).await;
        phones.push(Phone {
            token: Rc::new(RefCell::new(device.access_token.clone())),
            device,
            log: Rc::new(DeviceLog::default()),
        });
    }
    // Phones 0, 3, 6, … sleep; the last one acks late.
    let sleeps = |i: usize| i.is_multiple_of(3);
    let late = devices - 1;
    for (i, phone) in phones.iter().enumerate().filter(|(i, _)| sleeps(*i)) {
        let quiet = json!({"start": "20:30", "end": "07:00", "timezone": "UTC"});
        let (status, body) = app
            .patch(
                &format!("/api/v1/devices/{}", phone.device.id),
                Some(&app.admin_token),
                &json!({"settings": {"quietHours": quiet}}),
            )
            .await;
        assert_eq!(status, 200, "quiet hours of phone {i}: {body}");
    }
    let mut load = Load::new(
        app.port,
        phones.iter().map(|p| vec![p.device.id.clone()]).collect(),
    );
    for (i, phone) in phones.iter().enumerate() {
        load.logs.insert(phone.device.id.clone(), phone.log.clone());
        let acks = if i == late {
            Acks::Redeliveries
        } else {
            Acks::Every
        };
        actix_rt::spawn(device_loop_with(
            phone.token.clone(),
            acks,
            load.roaming.clone(),
            phone.log.clone(),
        ));
    }
    let connected = load.all_connected().await;
    assert!(
        connected,
        "the devices did not connect: closes {:?}, drops {:?}",
        phones
            .iter()
            .map(|p| p.log.closes.borrow().clone())
            .collect::<Vec<_>>(),
        phones.iter().map(|p| p.log.drops.get()).collect::<Vec<_>>()
    );
    load.publish(publishers, &app.admin_token, "");
    tokio::time::sleep(between).await;

    // 1. Past the ack timeout.
    let redelivered = phones[late].log.duplicates.get();
    app.clock.advance(Duration::from_secs(31));
    let again = until(
        &load.roaming.progress,
        Instant::now() + Duration::from_secs(30),
        || phones[late].log.duplicates.get() > redelivered,
    )
    .await;
    assert!(again, "nothing came again after the ack timeout");
    tokio::time::sleep(between).await;
    eprintln!(
        "clock +31 s (20:00:31): the late-acking device got {} notifications again",
        phones[late].log.duplicates.get() - redelivered
    );

    // 2. Into quiet hours.
    app.clock.advance(Duration::from_secs(39 * 60 + 29));
    let quiet_from = load.next_seq.get();
    tokio::time::sleep(between).await;

    // 3. Past the tokens' expiry (issued at 20:00 for an hour): closed with 4001 at the next
    // heartbeat, refused until refreshed.
    jump_past_expiry(
        &app,
        &load,
        &mut phones,
        Duration::from_secs(25 * 60),
        "at 21:05",
    )
    .await;
    tokio::time::sleep(between).await;

    // Quiet hours held: the sleeping devices got nothing published since 20:40, the others did.
    let quiet_until = load.next_seq.get();
    for (i, phone) in phones.iter().enumerate() {
        let during = phone
            .seqs()
            .into_iter()
            .filter(|s| *s >= quiet_from)
            .count();
        if sleeps(i) {
            assert_eq!(
                during, 0,
                "phone {i} got {during} notifications in its quiet hours"
            );
        } else {
            assert!(during > 0, "phone {i} got nothing while the others slept");
        }
    }
    eprintln!(
        "clock 20:40–21:05: quiet hours held {} notifications for the sleeping devices; every \
         socket closed with 4001 past the tokens' expiry and came back after a refresh",
        (quiet_from..quiet_until)
            .filter(|s| sleeps(usize::try_from(*s).unwrap() % devices))
            .count()
    );

    // 4. The next morning: out of quiet hours, past the refreshed tokens' expiry too.
    let by = Duration::from_secs(9 * 3_600 + 56 * 60);
    jump_past_expiry(&app, &load, &mut phones, by, "the next morning").await;
    tokio::time::sleep(between).await;
    load.stop_publishing().await;

    // The rest drains; the late-acking device needs the ack timeout to pass for each window.
    let deadline = Instant::now() + Duration::from_secs_f64(drain);
    let mut drained = false;
    while Instant::now() < deadline {
        let step = Instant::now() + Duration::from_secs(1);
        drained = until(&load.roaming.progress, step.min(deadline), || {
            load.tally().lost.is_empty()
        })
        .await;
        if drained {
            break;
        }
        app.clock.advance(Duration::from_secs(31));
    }
    load.done();
    let tally = load.tally();
    let held = phones
        .iter()
        .enumerate()
        .filter(|(i, _)| sleeps(*i))
        .map(|(_, p)| {
            p.seqs()
                .into_iter()
                .filter(|s| (quiet_from..quiet_until).contains(s))
                .count()
        })
        .sum::<usize>();
    eprintln!(
        "clock-jumps: 10 h 56 min of relay time in {:.1} s (drained: {drained}); the sleeping \
         devices got {held} held notifications after 07:00; other publish outcomes {:?}; \
         closes {:?}",
        began.elapsed().as_secs_f64(),
        load.published.outcomes.borrow(),
        phones.iter().fold(BTreeMap::new(), |mut all, p| {
            for (code, n) in p.log.closes.borrow().iter() {
                *all.entry(*code).or_insert(0) += n;
            }
            all
        }),
    );
    tally.print("clock-jumps");
    tally.assert_nothing_lost();
}
