//! A thousand devices reconnecting at once (`scripts/chaos/reconnect-storm`).

use super::*;

/// The source address of device `i` of `n`: 127.0.0.2 and up, 10 devices each, so that the
/// default per-IP limits (50 sockets, 60 connects a minute, 100 unauthenticated requests a
/// minute) hold without being lifted.
fn source_of(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + u8::try_from(i / 10 % 250).unwrap())
}

/// A client whose connections leave from `source`.
fn client_from(source: Ipv4Addr) -> awc::Client {
    awc::Client::builder()
        .connector(
            awc::Connector::new()
                .local_address(std::net::IpAddr::V4(source))
                .limit(0),
        )
        .timeout(Duration::from_secs(30))
        .finish()
}

/// One device of the storm: holds a socket from its own source address, acks what it gets, and
/// when the socket drops waits for the next relay port (empty while the relay is down).
async fn storm_device(
    client: awc::Client,
    token: String,
    mut relays: watch::Receiver<Vec<u16>>,
    log: Rc<DeviceLog>,
    progress: Rc<Notify>,
) {
    loop {
        let port = loop {
            let port = relays.borrow_and_update().first().copied();
            if let Some(port) = port {
                break port;
            }
            if relays.changed().await.is_err() {
                return;
            }
        };
        let Ok((_res, mut framed)) = client
            .ws(format!("ws://127.0.0.1:{port}/api/v1/ws"))
            .bearer_auth(&token)
            .max_frame_size(16 * 1024 * 1024)
            .connect()
            .await
        else {
            log.drops.set(log.drops.get() + 1);
            progress.notify_one();
            // Refused or timed out: a device's backoff, cut short by a new port.
            if let Ok(Err(_)) = tokio::time::timeout(RECONNECT_BACKOFF, relays.changed()).await {
                return;
            }
            continue;
        };
        while let Some(Ok(frame)) = framed.next().await {
            let bytes = match frame {
                awc::ws::Frame::Text(bytes) => bytes,
                awc::ws::Frame::Ping(bytes) => {
                    let _ = framed.send(awc::ws::Message::Pong(bytes)).await;
                    continue;
                }
                awc::ws::Frame::Close(reason) => {
                    let code = reason.map_or(0, |r| u16::from(r.code));
                    *log.closes.borrow_mut().entry(code).or_default() += 1;
                    break;
                }
                _ => continue,
            };
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            if value["type"] == "hello" {
                log.hellos.set(log.hellos.get() + 1);
                progress.notify_one();
                continue;
            }
            let mut ids = Vec::new();
            for item in value["items"].as_array().into_iter().flatten() {
                let id = item["id"].as_str().unwrap().to_owned();
                let title = item["title"].as_str().unwrap().to_owned();
                if log.items.borrow_mut().insert(id.clone(), title).is_some() {
                    log.duplicates.set(log.duplicates.get() + 1);
                }
                ids.push(id);
            }
            progress.notify_one();
            if !ids.is_empty() {
                let ack = json!({"type": "ack", "ids": ids}).to_string();
                let _ = framed.send(awc::ws::Message::Text(ack.into())).await;
            }
        }
        log.drops.set(log.drops.get() + 1);
        progress.notify_one();
        // The relay was killed (the test emptied the list first, so the loop above waits for its
        // next port), or it closed this socket: back off, cut short by a new port.
        if let Ok(Err(_)) = tokio::time::timeout(RECONNECT_BACKOFF, relays.changed()).await {
            return;
        }
    }
}

/// `CHAOS_STORM_DEVICES` (1000), `CHAOS_STORM_BACKLOG` notifications per device (5),
/// `CHAOS_STORM_SECONDS` for the storm to complete (120).
///
/// Every device connects from one of 100 loopback addresses and gets one notification, which it
/// acks. The relay is killed with SIGKILL (every socket drops at once) and started again; while
/// the devices wait, each gets a backlog published for it; then the new port is announced and
/// all of them reconnect at the same moment. Every device must get its whole backlog (nothing
/// foreign, nothing lost); the notification of before the kill may come again (counted).
#[actix_web::test]
#[ignore = "chaos: run by scripts/chaos/reconnect-storm"]
async fn a_thousand_devices_reconnecting_at_once_all_get_their_backlog() {
    let n: usize = setting("CHAOS_STORM_DEVICES", 1000);
    let backlog: usize = setting("CHAOS_STORM_BACKLOG", 5);
    let within = Duration::from_secs_f64(setting("CHAOS_STORM_SECONDS", 120.0));
    let began = Instant::now();
    beepmyphone::bench::raise_nofile_limit();

    // The documented defaults (the per-IP limits hold: 10 devices per source address).
    let mut relay = Relay::start(&[]).await;
    let clients: Vec<awc::Client> = (0..n.div_ceil(10))
        .map(|a| client_from(source_of(a * 10)))
        .collect();
    let mut paired = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(32) {
        let batch = futures_util::future::join_all(chunk.iter().map(|i| {
            let (relay, client, name) = (&relay, &clients[i / 10], format!("storm {i}"));
            async move { relay.pair_via(client, &name).await }
        }))
        .await;
        paired.extend(batch);
    }
    eprintln!(
        "reconnect-storm: {n} devices paired in {:.1} s",
        began.elapsed().as_secs_f64()
    );

    let (relays, list) = watch::channel(vec![relay.port()]);
    let progress = Rc::new(Notify::new());
    let logs: Vec<Rc<DeviceLog>> = (0..n).map(|_| Rc::new(DeviceLog::default())).collect();
    for (i, device) in paired.iter().enumerate() {
        actix_rt::spawn(storm_device(
            clients[i / 10].clone(),
            device.access_token.clone(),
            list.clone(),
            logs[i].clone(),
            progress.clone(),
        ));
    }
    let wait = |what: &'static str, condition: Box<dyn Fn() -> bool>| {
        let progress = progress.clone();
        async move {
            let ok = until(&progress, Instant::now() + within, condition).await;
            assert!(ok, "{what} within {:.0} s", within.as_secs_f64());
        }
    };
    let connected = Instant::now();
    {
        let logs = logs.clone();
        wait(
            "every device connected",
            Box::new(move || logs.iter().all(|l| l.hellos.get() == 1)),
        )
        .await;
    }
    let connect_seconds = connected.elapsed().as_secs_f64();
    let title = |i: usize, k: &str| format!("storm {i} {k}");
    let items: Vec<Value> = paired
        .iter()
        .enumerate()
        .map(|(i, d)| json!({"title": title(i, "before"), "targets": [d.id]}))
        .collect();
    for chunk in items.chunks(500) {
        relay.publish_batch(chunk).await;
    }
    {
        let logs = logs.clone();
        wait(
            "every device got its first notification",
            Box::new(move || logs.iter().all(|l| !l.items.borrow().is_empty())),
        )
        .await;
    }
    assert_eq!(relay.metric("beepmyphone_sockets_open").await, n as f64);

    // Every socket drops at once; the devices wait for the relay's next port.
    relays.send_replace(Vec::new());
    let restart = relay.kill_9_and_restart().await;
    {
        let logs = logs.clone();
        wait(
            "every device saw its socket drop",
            Box::new(move || logs.iter().all(|l| l.drops.get() >= 1)),
        )
        .await;
    }
    let items: Vec<Value> = paired
        .iter()
        .enumerate()
        .flat_map(|(i, d)| {
            (0..backlog).map(move |k| json!({"title": format!("storm {i} {k}"), "targets": [d.id]}))
        })
        .collect();
    for chunk in items.chunks(500) {
        relay.publish_batch(chunk).await;
    }
    let rss_before = relay.rss_kb();

    // The storm: every device wakes on the same port change.
    let storm = Instant::now();
    relays.send_replace(vec![relay.port()]);
    {
        let logs = logs.clone();
        wait(
            "every device reconnected",
            Box::new(move || logs.iter().all(|l| l.hellos.get() >= 2)),
        )
        .await;
    }
    let reconnect_seconds = storm.elapsed().as_secs_f64();
    // Each device's backlog, and the notification of before the kill (received then).
    let due = |i: usize| {
        (0..backlog)
            .map(move |k| format!("storm {i} {k}"))
            .chain([format!("storm {i} before")])
    };
    let complete = {
        let logs = logs.clone();
        move || {
            logs.iter().enumerate().all(|(i, l)| {
                let items = l.items.borrow();
                let titles: HashSet<&String> = items.values().collect();
                due(i).all(|t| titles.contains(&t))
            })
        }
    };
    let ok = until(&progress, storm + within, &complete).await;
    let backlog_seconds = storm.elapsed().as_secs_f64();
    let sockets_open = relay.metric("beepmyphone_sockets_open").await;
    let rss_after = relay.rss_kb();

    let mut tally = Tally::default();
    let mut foreign = 0;
    for (i, log) in logs.iter().enumerate() {
        let items = log.items.borrow();
        let titles: HashSet<&String> = items.values().collect();
        for t in due(i) {
            tally.deliveries += 1;
            if titles.contains(&t) {
                tally.delivered += 1;
            } else {
                tally.lost.push((u64::try_from(i).unwrap(), t));
            }
        }
        tally.duplicated += log.duplicates.get();
        let mine = format!("storm {i} ");
        foreign += titles.iter().filter(|t| !t.starts_with(&mine)).count();
    }
    eprintln!(
        "reconnect-storm: {n} devices connected in {connect_seconds:.2} s; after kill -9 the relay \
         listened again in {:.2} s; all {n} reconnected at once in {reconnect_seconds:.2} s, their \
         {backlog} each delivered in {backlog_seconds:.2} s (complete: {ok}); sockets open {sockets_open}; \
         relay RSS {} MiB before the storm, {} MiB after; {:.1} s in all",
        restart.as_secs_f64(),
        rss_before / 1024,
        rss_after / 1024,
        began.elapsed().as_secs_f64()
    );
    tally.print("reconnect-storm");
    assert_eq!(
        foreign, 0,
        "devices received notifications meant for others"
    );
    assert_eq!(sockets_open, n as f64, "sockets open after the storm");
    assert!(relay.running(), "the relay exited");
    tally.assert_nothing_lost();
}
