//! A device that never reads (`scripts/chaos/slow-reader`).

use super::*;

/// A WebSocket for `token` over a raw TCP socket whose receive buffer is as small as the kernel
/// allows: the upgrade's answer is read, and after it nothing, ever (until the test says so).
async fn non_reading_socket(port: u16, token: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let request = format!(
        "GET /api/v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Byte by byte, so that not one byte past the answer's head is read.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.unwrap());
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// An empty, masked client ping frame.
const PING: [u8; 6] = [0x89, 0x80, 0x12, 0x34, 0x56, 0x78];

/// Reads what waited on a non-reading socket, to its end: the frames' count and the close code
/// (`None`: the connection ended without a close frame), or `Err` if nothing ended it in 10 s.
async fn read_what_waited(
    mut stream: tokio::net::tcp::OwnedReadHalf,
) -> Result<(u64, Option<u16>), String> {
    use actix_codec::Decoder;
    let mut codec = awc::ws::Codec::new()
        .client_mode()
        .max_size(16 * 1024 * 1024);
    let mut buffer = bytes::BytesMut::new();
    let mut frames = 0;
    loop {
        while let Some(frame) = codec.decode(&mut buffer).map_err(|e| e.to_string())? {
            match frame {
                awc::ws::Frame::Close(reason) => {
                    return Ok((frames, reason.map(|r| u16::from(r.code))))
                }
                _ => frames += 1,
            }
        }
        let mut chunk = vec![0; 64 * 1024];
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
            Err(_) => {
                return Err(format!(
                    "still open after {frames} frames and 10 s of silence"
                ))
            }
            Ok(Ok(0)) => return Ok((frames, None)),
            Ok(Ok(n)) => buffer.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(format!("{e} after {frames} frames")),
        }
    }
}

/// `CHAOS_SLOW_SECONDS`: how long the relay may take to drop the non-reading sockets (60);
/// `CHAOS_SLOW_SOCKETS`: non-reading sockets of the slow device (2: the first silent, the others
/// pinging twice a second, so that the heartbeat timeout cannot be what drops them);
/// `CHAOS_SLOW_BACKLOG`: notifications queued for the slow device (1000);
/// `CHAOS_SLOW_AFTER_SECONDS`: load after the drop (5); `CHAOS_SLOW_MAX_RSS_MB`: how much the
/// relay's RSS may grow while the slow sockets are open (64); `CHAOS_PUBLISHERS` (4),
/// `CHAOS_DRAIN_SECONDS` (60).
///
/// A steady device reads and acks everything the publishers send it (4,000-character bodies); the
/// slow device has a backlog, and sockets that never read. A socket's outbound buffer
/// (`websocket.outbound_buffer_frames`, 256) holds a full in-flight window
/// (`delivery.max_in_flight_per_device`, 256; the configuration insists), so a non-reading
/// device overflows it through resends: the relay runs with a 1 s `delivery.ack_timeout_seconds`
/// and one notification per frame (`delivery.batch_max_items = 1`) so that it happens within
/// seconds rather than an hour.
///
/// Asserts: the relay drops every non-reading socket with 1008 `outbound buffer full`
/// (`beepmyphone_ws_closed_total`) and releases it (its open-file count comes back to what it was
/// before those sockets, `beepmyphone_sockets_open` to the steady device's one); the steady device
/// keeps receiving meanwhile; the relay's RSS grows by less than the bound; and once the slow
/// device reconnects with a reading client it gets its whole backlog.
#[actix_web::test]
#[ignore = "chaos: run by scripts/chaos/slow-reader"]
async fn a_device_that_never_reads_is_dropped_and_the_others_keep_receiving() {
    let drop_within = Duration::from_secs_f64(setting("CHAOS_SLOW_SECONDS", 60.0));
    let sockets: usize = setting("CHAOS_SLOW_SOCKETS", 2);
    let backlog: usize = setting("CHAOS_SLOW_BACKLOG", 1000);
    let after = Duration::from_secs_f64(setting("CHAOS_SLOW_AFTER_SECONDS", 5.0));
    let max_rss_mb: u64 = setting("CHAOS_SLOW_MAX_RSS_MB", 64);
    let publishers: usize = setting("CHAOS_PUBLISHERS", 4);
    let drain: f64 = setting("CHAOS_DRAIN_SECONDS", 60.0);
    let began = Instant::now();

    let mut env = vec![
        ("BEEP__DELIVERY__ACK_TIMEOUT_SECONDS", "1"),
        ("BEEP__DELIVERY__BATCH_MAX_ITEMS", "1"),
        // Batches of 100 notifications of 4 KB for the backlog.
        ("BEEP__SERVER__MAX_BODY_BYTES", "4194304"),
    ];
    env.extend_from_slice(LIFTED_LIMITS);
    let mut relay = Relay::start(&env).await;
    let steady = relay.pair("steady").await;
    let slow = relay.pair("slow").await;
    let body = "x".repeat(4_000);
    let slow_titles: Vec<String> = (0..backlog).map(|k| format!("slow {k}")).collect();
    for chunk in slow_titles.chunks(100) {
        let items: Vec<Value> = chunk
            .iter()
            .map(|t| json!({"title": t, "body": body, "targets": [slow.id]}))
            .collect();
        relay.publish_batch(&items).await;
    }
    let mut load = Load::new(relay.port(), vec![vec![steady.id.clone()]]);
    let steady_log = load.device(&steady);
    let online = until(
        &load.roaming.progress,
        Instant::now() + Duration::from_secs(30),
        || steady_log.hellos.get() > 0,
    )
    .await;
    assert!(online, "the steady device did not connect");
    load.publish(publishers, &relay.token, &body);
    let load_began = Instant::now();
    // Warm-up: the relay's allocator and pools at their working size before the baseline.
    let warm = until(
        &load.roaming.progress,
        Instant::now() + Duration::from_secs(30),
        || steady_log.items.borrow().len() >= 500,
    )
    .await;
    assert!(
        warm,
        "the steady device did not receive 500 notifications in 30 s"
    );
    let (rss_before, fds_before) = (relay.rss_kb(), relay.open_fds());
    let closed = |code: &str| format!(r#"beepmyphone_ws_closed_total{{code="{code}"}}"#);
    let closed_before = relay.metric(&closed("1008")).await;

    // The slow device's sockets: never read; all but the first ping twice a second.
    let mut readers = Vec::new();
    let mut silent = Vec::new();
    let mut pingers = Vec::new();
    for i in 0..sockets {
        let (read, mut write) = non_reading_socket(relay.port(), &slow.access_token)
            .await
            .into_split();
        readers.push(read);
        if i == 0 {
            silent.push(write); // held open: dropping it would half-close the connection
            continue;
        }
        pingers.push(actix_rt::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(500));
            loop {
                every.tick().await;
                if write.write_all(&PING).await.is_err() {
                    return;
                }
            }
        }));
    }
    let opened = Instant::now();
    let received_when_opened = steady_log.items.borrow().len();
    let rate_before = received_when_opened as f64 / load_began.elapsed().as_secs_f64();

    // The relay drops them: polled on its metrics (another process, no event to await).
    let mut problems = Vec::new();
    let mut dropped_after = None;
    let mut rss_peak = relay.rss_kb();
    let mut reported = Duration::ZERO;
    while opened.elapsed() < drop_within {
        let dropped = relay.metric(&closed("1008")).await - closed_before;
        rss_peak = rss_peak.max(relay.rss_kb());
        if dropped >= sockets as f64 {
            dropped_after = Some(opened.elapsed());
            break;
        }
        if opened.elapsed() >= reported + Duration::from_secs(5) {
            reported = opened.elapsed();
            eprintln!(
                "slow-reader: {:>4.1} s: closed with 1008 {dropped}, with 1001 {}; sockets open \
                 {}; RSS {} MiB; open files {}; the steady device received {}",
                reported.as_secs_f64(),
                relay.metric(&closed("1001")).await,
                relay.metric("beepmyphone_sockets_open").await,
                relay.rss_kb() / 1024,
                relay.open_fds(),
                steady_log.items.borrow().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received_until_drop = steady_log.items.borrow().len() - received_when_opened;
    for line in relay.log_lines(|l| {
        l["device_id"] == slow.id.as_str()
            || l["msg"] == "device is not reading; dropping its socket"
    }) {
        eprintln!("slow-reader: relay log: {line}");
    }
    match dropped_after {
        None => problems.push(format!(
            "the relay did not close the {sockets} non-reading sockets with 1008 within {:.0} s",
            drop_within.as_secs_f64()
        )),
        Some(t) => eprintln!(
            "slow-reader: {sockets} non-reading sockets closed with 1008 after {:.2} s; the steady \
             device received {received_until_drop} meanwhile ({:.0}/s, {rate_before:.0}/s before)",
            t.as_secs_f64(),
            received_until_drop as f64 / t.as_secs_f64()
        ),
    }
    if received_until_drop == 0 {
        problems.push("the steady device received nothing while the slow one stalled".into());
    }

    // The load goes on without them.
    tokio::time::sleep(after).await;
    rss_peak = rss_peak.max(relay.rss_kb());
    load.stop_publishing().await;
    let sockets_open = relay.metric("beepmyphone_sockets_open").await;
    if sockets_open != 1.0 {
        problems.push(format!(
            "beepmyphone_sockets_open is {sockets_open}, not 1 (the steady device)"
        ));
    }
    // The relay releases the dropped connections: its open files back to the baseline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut fds = relay.open_fds();
    while fds > fds_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds = relay.open_fds();
    }
    if fds > fds_before {
        problems.push(format!(
            "the relay still holds {} more open files than before the non-reading sockets \
             ({fds} against {fds_before}), 10 s after dropping them: their connections stay open",
            fds - fds_before
        ));
    }
    let rss_end = relay.rss_kb();
    eprintln!(
        "slow-reader: relay RSS {} MiB before the slow sockets, peak {} MiB, {} MiB at the end; \
         open files {fds_before} before, {fds} at the end",
        rss_before / 1024,
        rss_peak / 1024,
        rss_end / 1024
    );
    if rss_peak.saturating_sub(rss_before) > max_rss_mb * 1024 {
        problems.push(format!(
            "the relay's RSS grew by {} MiB (bound {max_rss_mb} MiB)",
            (rss_peak - rss_before) / 1024
        ));
    }
    // What a non-reading socket finds when it reads at last.
    for pinger in pingers {
        pinger.abort();
    }
    for (i, reader) in readers.into_iter().enumerate() {
        eprintln!(
            "slow-reader: socket {i} reads at last: {:?}",
            read_what_waited(reader).await
        );
    }
    drop(silent);

    // Reading now, the slow device gets its whole backlog.
    let slow_log = load.device(&slow);
    let drained = load.drain(drain).await;
    let slow_complete = {
        let deadline = Instant::now() + Duration::from_secs_f64(drain);
        until(&load.roaming.progress, deadline, || {
            let items = slow_log.items.borrow();
            let titles: HashSet<&String> = items.values().collect();
            slow_titles.iter().all(|t| titles.contains(t))
        })
        .await
    };
    load.done();
    let mut tally = load.tally();
    {
        let items = slow_log.items.borrow();
        let titles: HashSet<&String> = items.values().collect();
        for (k, title) in slow_titles.iter().enumerate() {
            tally.deliveries += 1;
            if titles.contains(title) {
                tally.delivered += 1;
            } else {
                tally
                    .lost
                    .push((u64::try_from(k).unwrap(), slow.id.clone()));
            }
        }
        tally.duplicated += slow_log.duplicates.get();
    }
    eprintln!(
        "slow-reader: {:.1} s in all (drained: {drained}, the slow backlog: {slow_complete}); \
         other publish outcomes {:?}",
        began.elapsed().as_secs_f64(),
        load.published.outcomes.borrow(),
    );
    tally.print("slow-reader");
    assert!(relay.running(), "the relay exited");
    assert!(problems.is_empty(), "{problems:#?}");
    tally.assert_nothing_lost();
}
