//! Ten thousand malformed frames on one socket (`scripts/chaos/malformed-frames`).

use super::*;

/// The malformed frame number `i` and the error code docs/api.md promises for it.
fn malformed(i: usize) -> (awc::ws::Message, &'static str) {
    use awc::ws::Message;
    let text = |s: String| Message::Text(s.into());
    match i % 10 {
        0 => (text("this is not JSON".into()), "BAD_FRAME"),
        1 => (text(r#"{"type":"dance"}"#.into()), "BAD_FRAME"),
        2 => (text(r#"{"type":"ack"}"#.into()), "BAD_FRAME"),
        3 => (text(r#"{"type":"ack","ids":[]}"#.into()), "BAD_FRAME"),
        4 => (
            text(r#"{"type":"ack","ids":["ntf_not-an-id"]}"#.into()),
            "BAD_FRAME",
        ),
        5 => (
            text(
                json!({"type": "ack", "ids": vec!["ntf_01M8GQ1G2KPTKMAVK3251502CA"; 1001]})
                    .to_string(),
            ),
            "BAD_FRAME",
        ),
        6 => (
            Message::Binary(vec![0xde, 0xad, 0xbe, 0xef].into()),
            "UNSUPPORTED",
        ),
        7 => (text(r#"{"type":"auth"}"#.into()), "BAD_FRAME"),
        8 => (
            text(r#"{"type":"ack","ids":["ntf_01M8GQ1G2KPTKMAVK3251502CA"],"x":1}"#.into()),
            "BAD_FRAME",
        ),
        _ => (
            text(format!("{}{}", "[".repeat(500), "]".repeat(500))),
            "BAD_FRAME",
        ),
    }
}

/// The attacker of relay A, on a thread of its own (so that the bystander and the publishers do
/// not share the test's thread with it): `count` malformed frames written while the answers are
/// read, each answer checked; then a notification through the same socket, and the last bad frame
/// that closes it with 1008. The attack's duration, s.
async fn attack(port: u16, admin_token: &str, attacker: &Device, count: usize) -> f64 {
    let (_res, framed) = awc::Client::new()
        .ws(format!("ws://127.0.0.1:{port}/api/v1/ws"))
        .bearer_auth(&attacker.access_token)
        .connect()
        .await
        .unwrap();
    let (mut sink, mut stream) = framed.split();
    let hello = stream.next().await.unwrap().unwrap();
    assert!(
        matches!(&hello, awc::ws::Frame::Text(b) if b.starts_with(br#"{"type":"hello""#)),
        "{hello:?}"
    );
    let attack = Instant::now();
    let write = async {
        for i in 0..count {
            sink.send(malformed(i).0)
                .await
                .expect("the relay reads every frame");
        }
    };
    let read = async {
        let mut answered = 0;
        while answered < count {
            let frame = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .unwrap_or_else(|_| panic!("no answer within 30 s after {answered} error frames"));
            match frame {
                Some(Ok(awc::ws::Frame::Text(bytes))) => {
                    let value: Value = serde_json::from_slice(&bytes).unwrap();
                    assert_eq!(value["type"], "error", "{value}");
                    assert_eq!(
                        value["code"],
                        malformed(answered).1,
                        "frame {answered}: {value}"
                    );
                    answered += 1;
                }
                Some(Ok(awc::ws::Frame::Ping(_))) => {}
                other => panic!("after {answered} error frames: {other:?}"),
            }
        }
        answered
    };
    let ((), answered) = futures_util::join!(write, read);
    let seconds = attack.elapsed().as_secs_f64();
    assert_eq!(answered, count);

    // The socket still serves its device: a notification arrives and its ack is taken.
    let res = awc::Client::new()
        .post(format!("http://127.0.0.1:{port}/api/v1/notifications"))
        .bearer_auth(admin_token)
        .send_json(&json!({"title": "for the attacker", "targets": [attacker.id]}))
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 202);
    let id = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
        {
            Some(Ok(awc::ws::Frame::Text(bytes))) => {
                let value: Value = serde_json::from_slice(&bytes).unwrap();
                assert_eq!(value["type"], "notifications", "{value}");
                break value["items"][0]["id"].as_str().unwrap().to_owned();
            }
            Some(Ok(awc::ws::Frame::Ping(_))) => {}
            other => panic!("waiting for the notification: {other:?}"),
        }
    };
    sink.send(awc::ws::Message::Text(
        json!({"type": "ack", "ids": [id]}).to_string().into(),
    ))
    .await
    .unwrap();
    // One bad frame more reaches websocket.max_bad_frames: an error frame, then 1008.
    sink.send(malformed(0).0).await.unwrap();
    let mut last = Vec::new();
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
        {
            Some(Ok(awc::ws::Frame::Text(bytes))) => {
                last.push(serde_json::from_slice::<Value>(&bytes).unwrap())
            }
            Some(Ok(awc::ws::Frame::Close(reason))) => break reason.map(|r| u16::from(r.code)),
            Some(Ok(_)) => {}
            other => panic!("waiting for the close: {other:?}"),
        }
    };
    assert_eq!(code, Some(1008), "after {last:?}");
    assert_eq!(last.len(), 1, "{last:?}");
    seconds
}

/// `CHAOS_MALFORMED_FRAMES` (10000), `CHAOS_PUBLISHERS` (2) publishing to a bystander device
/// meanwhile, `CHAOS_DRAIN_SECONDS` (60).
///
/// Relay A runs with `websocket.max_bad_frames` one above the count (and the frame rate lifted),
/// so that every frame is answered: the attacker's socket sends them all (ten kinds: not JSON, an
/// unknown type, missing or unknown fields, an empty or oversized or malformed ack, binary, JSON
/// nested 500 deep) while reading, and must get exactly one error frame per frame, in order, with
/// the code docs/api.md gives; its socket still delivers a notification afterwards, and the next
/// bad frame closes it with 1008. Relay B runs the defaults: the same frames blasted without
/// waiting get 10 error frames and a close with 1008 at the 10th. Both relays stay up, and the
/// bystander on A loses nothing.
#[actix_web::test]
#[ignore = "chaos: run by scripts/chaos/malformed-frames"]
async fn ten_thousand_malformed_frames_on_one_socket_leave_the_others_unaffected() {
    let count: usize = setting("CHAOS_MALFORMED_FRAMES", 10_000);
    let publishers: usize = setting("CHAOS_PUBLISHERS", 2);
    let drain: f64 = setting("CHAOS_DRAIN_SECONDS", 60.0);
    let began = Instant::now();

    let max_bad = (count + 1).to_string();
    let mut env = vec![("BEEP__WEBSOCKET__MAX_BAD_FRAMES", max_bad.as_str())];
    env.extend_from_slice(LIFTED_LIMITS);
    let mut a = Relay::start(&env).await;
    let bystander = a.pair("bystander").await;
    let attacker = a.pair("attacker").await;
    let mut load = Load::new(a.port(), vec![vec![bystander.id.clone()]]);
    let bystander_log = load.device(&bystander);
    let online = until(
        &load.roaming.progress,
        Instant::now() + Duration::from_secs(30),
        || bystander_log.hellos.get() > 0,
    )
    .await;
    assert!(online, "the bystander did not connect");
    load.publish(publishers, &a.token, "");
    let load_began = Instant::now();
    let rss_before = a.rss_kb();
    // Two seconds of load first: the bystander's rate without the attack.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let received_before = bystander_log.items.borrow().len();
    let rate_before = received_before as f64 / load_began.elapsed().as_secs_f64();
    let attack_seconds = {
        let (port, token, attacker) = (a.port(), a.token.clone(), attacker.clone());
        tokio::task::spawn_blocking(move || {
            actix_rt::System::new().block_on(attack(port, &token, &attacker, count))
        })
        .await
        .expect("the attack's checks hold (its panic is above)")
    };
    let received_during = bystander_log.items.borrow().len() - received_before;
    assert!(
        received_during > 0,
        "the bystander received nothing during the attack"
    );
    assert_eq!(a.live().await, 200);

    // Relay B, the defaults: the same frames blasted without waiting.
    let b = Relay::start(&[]).await;
    let blaster = b.pair("blaster").await;
    let (_res, framed) = awc::Client::new()
        .ws(format!("ws://127.0.0.1:{}/api/v1/ws", b.port()))
        .bearer_auth(&blaster.access_token)
        .connect()
        .await
        .unwrap();
    let (mut sink, mut stream) = framed.split();
    let sent = Rc::new(Cell::new(0));
    let write = async {
        for i in 0..count {
            if sink.send(malformed(i).0).await.is_err() {
                break; // the relay closed the connection
            }
            sent.set(i + 1);
        }
    };
    let read = async {
        let mut errors = Vec::new();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("an answer within 30 s");
            match frame {
                Some(Ok(awc::ws::Frame::Text(bytes))) => {
                    let value: Value = serde_json::from_slice(&bytes).unwrap();
                    if value["type"] == "error" {
                        errors.push(value);
                    }
                }
                Some(Ok(awc::ws::Frame::Close(reason))) => {
                    return (errors, reason.map(|r| u16::from(r.code)))
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("after {} error frames: {e}", errors.len()),
                None => return (errors, None),
            }
        }
    };
    // The writer may block on a connection the relay no longer reads: the close ends both.
    tokio::pin!(write, read);
    let (errors, code) = tokio::select! {
        answer = &mut read => answer,
        () = &mut write => read.await,
    };
    assert_eq!(
        code,
        Some(1008),
        "relay B's close after {} error frames",
        errors.len()
    );
    assert_eq!(errors.len(), 10, "{errors:?}");
    for (i, error) in errors.iter().enumerate() {
        assert_eq!(error["code"], malformed(i).1, "{error}");
    }
    assert_eq!(b.live().await, 200);
    let after = b.pair("after").await;
    assert_eq!(probe_socket(b.port(), &after.access_token).await, Ok(()));

    load.stop_publishing().await;
    let drained = load.drain(drain).await;
    load.done();
    let tally = load.tally();
    let rss_after = a.rss_kb();
    eprintln!(
        "malformed-frames: {count} malformed frames answered in {attack_seconds:.2} s, the \
         bystander received {received_during} meanwhile ({:.0}/s, {rate_before:.0}/s before); relay A RSS {} MiB before, {} MiB after; \
         relay B closed with 1008 after 10 error frames, {} frames written before its close; \
         {:.1} s in all (drained: {drained}); other publish outcomes {:?}",
        received_during as f64 / attack_seconds,
        rss_before / 1024,
        rss_after / 1024,
        sent.get(),
        began.elapsed().as_secs_f64(),
        load.published.outcomes.borrow(),
    );
    tally.print("malformed-frames");
    assert!(a.running(), "relay A exited");
    tally.assert_nothing_lost();
}
