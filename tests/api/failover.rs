//! Tests: a cluster's failures. kill -9 of one relay of three under load (real processes on one
//! PostgreSQL database and one Redis): its devices reconnect to the other two and get every
//! notification that was answered 202, whichever relay took it. Redis going away and coming back
//! (a private redis-server): the relays keep serving the sockets they hold, lose nothing that was
//! acknowledged, and catch up from PostgreSQL on what the outage kept from waking them.

use std::cell::Cell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::{device_loop, spawn_process_with, until, ChildRelay, DeviceLog, Roaming};

/// Three relays' shared settings, as environment variables.
fn cluster_env(url: &str, keys: &std::path::Path, prefix: &str) -> Vec<(String, String)> {
    vec![
        ("BEEP__STORAGE__URL".into(), url.to_owned()),
        ("BEEP__STORAGE__KEYS_DIR".into(), keys.display().to_string()),
        ("BEEP__REDIS__URL".into(), crate::identity::redis_url()),
        ("BEEP__REDIS__KEY_PREFIX".into(), prefix.to_owned()),
        ("BEEP__CLUSTER__HEARTBEAT_SECONDS".into(), "1".into()),
    ]
}

fn start(dir: &std::path::Path, env: &[(String, String)]) -> ChildRelay {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    spawn_process_with(dir, &env)
}

#[actix_web::test]
async fn kill_9_of_one_relay_under_load_loses_nothing_its_devices_were_due() {
    let url = crate::cluster::fresh_database();
    let keys = tempfile::tempdir().unwrap();
    let prefix = format!("beeptest:{}:", ulid::Ulid::new());
    let env = cluster_env(&url, keys.path(), &prefix);
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(dirs[0].path(), &env);
    let token = std::fs::read_to_string(dirs[0].path().join("initial-admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    for dir in &dirs[1..] {
        std::fs::write(dir.path().join("initial-admin-token"), &token).unwrap();
    }
    let b = start(dirs[1].path(), &env);
    let c = start(dirs[2].path(), &env);
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish();
    let post = |address: &str, path: &str, body: Value| {
        client
            .post(format!("{address}{path}"))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .send_json(&body)
    };

    // Three devices, paired through A, connected to B; when B dies they go to C, then A.
    let (_relays, list) = tokio::sync::watch::channel(vec![b.port, c.port, a.port]);
    let roaming = Roaming {
        relays: list,
        done: Rc::new(Cell::new(false)),
        progress: Rc::new(tokio::sync::Notify::new()),
    };
    let mut devices = Vec::new();
    for i in 0..3 {
        let code: Value = post(&a.address, "/api/v1/pairing-codes", json!({}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let paired: Value = post(
            &a.address,
            "/api/v1/devices/pair",
            json!({"code": code["code"], "name": format!("phone {i}"), "platform": "ios"}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        let log = Rc::new(DeviceLog::default());
        actix_rt::spawn(device_loop(
            paired["accessToken"].as_str().unwrap().to_owned(),
            roaming.clone(),
            log.clone(),
        ));
        devices.push(log);
    }

    // Publish to everyone on A and C, 25 at a time; kill B after the first half is accepted.
    let total = 300;
    let mut accepted = HashSet::new();
    let mut b = Some(b);
    for round in 0..total / 25 {
        let mut batch = futures_util::stream::FuturesUnordered::new();
        for i in 0..25 {
            let address = if i % 2 == 0 { &a.address } else { &c.address };
            batch.push(post(
                address,
                "/api/v1/notifications",
                json!({"title": format!("r{round} n{i}")}),
            ));
        }
        while let Some(result) = batch.next().await {
            let mut res = result.unwrap();
            assert_eq!(res.status().as_u16(), 202);
            let body: Value = res.json().await.unwrap();
            accepted.insert(body["id"].as_str().unwrap().to_owned());
        }
        if accepted.len() >= total / 2 {
            if let Some(b) = b.take() {
                b.kill_9();
            }
        }
    }
    assert_eq!(accepted.len(), total);

    // Every device gets every accepted notification from the relays left.
    let missing = || -> Vec<usize> {
        devices
            .iter()
            .map(|log| {
                let items = log.items.borrow();
                accepted
                    .iter()
                    .filter(|id| !items.contains_key(*id))
                    .count()
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let all = until(&roaming.progress, deadline, || {
        missing().iter().all(|m| *m == 0)
    })
    .await;
    assert!(
        all,
        "after kill -9 of B, devices still miss {:?} of {total}",
        missing()
    );
    roaming.done.set(true);
    drop((a, c));
}

#[actix_web::test]
async fn a_relay_that_loses_redis_serves_its_devices_and_catches_up_when_it_returns() {
    let mut redis = crate::identity::PrivateRedis::start();
    let url = redis.url();
    // No periodic reconcile: catching up must come from the subscription's return.
    let (apps, _keys) = crate::cluster::relays(2, |s| {
        s.redis.url = url.clone();
        s.redis.timeout_ms = 300;
        s.cluster.reconcile_seconds = 0;
    })
    .await;
    let [a, b] = &apps[..] else { unreachable!() };
    let device = a.pair_device("phone").await;
    let mut ws = crate::cluster::connect_held(a, &device).await;
    let before = crate::cluster::publish_to(b, &device, "before", "normal").await;
    let got = ws.receive(1).await;
    assert_eq!(crate::cluster::ids(&got), vec![before.clone()]);
    ws.ack(&[&before]).await;
    crate::helpers::wait_for_delivery_status(b, &before, "acked").await;

    redis.kill();
    // B stores what it takes (PostgreSQL is the truth) but cannot wake A.
    let missed = crate::cluster::publish_to(b, &device, "while Redis is away", "high").await;
    // A keeps serving the socket it holds.
    let local = crate::cluster::publish_to(a, &device, "from A", "normal").await;
    assert_eq!(
        crate::cluster::ids(&ws.receive(1).await),
        vec![local.clone()]
    );

    redis.restart();
    // A subscribes again and reads its devices' backlogs: the missed one arrives.
    assert_eq!(
        crate::cluster::ids(&ws.receive(1).await),
        vec![missed.clone()]
    );
    ws.ack(&[&local, &missed]).await;
    for id in [&before, &local, &missed] {
        crate::helpers::wait_for_delivery_status(a, id, "acked").await;
    }
    // Nothing acknowledged comes back after the restart, on either relay.
    ws.close().await;
    let mut ws = crate::cluster::connect_held(b, &device).await;
    let after = crate::cluster::publish_to(a, &device, "after", "low").await;
    assert_eq!(crate::cluster::ids(&ws.receive(1).await), vec![after]);
}
