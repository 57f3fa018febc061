//! Tests: several relays on one PostgreSQL database and one Redis (a fresh database and key
//! prefix per test; the machine's PostgreSQL and Redis, see tests/api/postgres.rs and
//! tests/api/identity.rs, which fail when either does not answer). Deliveries cross relays,
//! devices paired, changed or deleted through one are known to all, closing a device's sockets
//! reaches the relay that holds them, and revocations and rate limits are shared. Killing a
//! relay under load is in tests/api/failover.rs.

use serde_json::{json, Value};

use beepmyphone::config::Settings;
use beepmyphone_actors::clock::ManualClock;

use crate::helpers::{
    eventually, fresh_postgres_database, start_in_on, test_postgres_server, test_settings, Device,
    TestApp, WsClient,
};

/// A fresh database on the test PostgreSQL server.
pub(crate) fn fresh_database() -> String {
    let server =
        test_postgres_server().unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432".to_owned());
    fresh_postgres_database(
        &server,
        &format!("beep_t_{}", ulid::Ulid::new().to_string().to_lowercase()),
    )
}

/// `n` relays sharing a fresh database, a keys directory (as a cluster must: device tokens one
/// signs verify on the others) and a Redis key prefix; `tweak` adjusts every relay's settings.
pub(crate) async fn relays(
    n: usize,
    tweak: impl Fn(&mut Settings),
) -> (Vec<TestApp>, tempfile::TempDir) {
    let url = fresh_database();
    let redis = crate::identity::redis_url();
    let prefix = format!("beeptest:{}:", ulid::Ulid::new());
    let keys = tempfile::tempdir().unwrap();
    let settings = |dir: &std::path::Path| {
        let mut s = test_settings(dir);
        s.storage.url = url.clone().into();
        s.storage.keys_dir = keys.path().to_path_buf();
        s.redis.url = redis.clone();
        s.redis.key_prefix = prefix.clone();
        s.cluster.heartbeat_seconds = 1;
        tweak(&mut s);
        s
    };
    // One clock for the cluster: each relay on its own, started as it came up, would lag the
    // later ones by as long as starting took (seconds on a busy machine), past the presence TTL.
    let clock = ManualClock::starting_now();
    let mut apps: Vec<TestApp> = Vec::with_capacity(n);
    for _ in 0..n {
        let dir = tempfile::tempdir().unwrap();
        // The first relay writes the initial admin token; the others find it in the store and
        // write none of their own: give them the first one's.
        if let Some(first) = apps.first() {
            std::fs::write(dir.path().join("initial-admin-token"), &first.admin_token).unwrap();
        }
        let s = settings(dir.path());
        apps.push(start_in_on(dir, s, clock.clone()).await);
    }
    (apps, keys)
}

pub(crate) fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

pub(crate) async fn publish_to(
    app: &TestApp,
    device: &Device,
    title: &str,
    priority: &str,
) -> String {
    let published = app
        .publish(json!({"title": title, "priority": priority, "targets": [device.id]}))
        .await;
    published["id"].as_str().unwrap().to_owned()
}

/// Connects `device` to `app` and waits until the relay has announced it to the cluster (the
/// socket's hello comes first; the announcement follows on the relay's own time).
pub(crate) async fn connect_held(app: &TestApp, device: &Device) -> WsClient {
    let ws = app.connect_device(device).await;
    let redis = redis::Client::open(app.state.settings.redis.url.as_str()).unwrap();
    let key = format!(
        "{}presence:{}",
        app.state.settings.redis.key_prefix, device.id
    );
    let node = app.state.cluster.node().to_owned();
    eventually("the device's presence names its relay", || {
        let (redis, key, node) = (redis.clone(), key.clone(), node.clone());
        async move {
            let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
            let holder: Option<String> = redis::AsyncCommands::get(&mut conn, &key).await.unwrap();
            (holder.as_deref() == Some(node.as_str())).then_some(())
        }
    })
    .await;
    ws
}

#[actix_web::test]
async fn a_device_on_a_gets_what_c_took_and_after_moving_to_b_the_rest_in_priority_order() {
    let (apps, _keys) = relays(3, |_| {}).await;
    let [a, b, c] = &apps[..] else { unreachable!() };
    assert!(a.state.cluster.is_clustered());
    // Paired through A: a target on C at once (C reads an unknown target from the store).
    let device = a.pair_device("phone").await;
    let mut ws = connect_held(a, &device).await;

    let first = publish_to(c, &device, "from C", "normal").await;
    assert_eq!(ids(&ws.receive(1).await), vec![first.clone()]);
    let wakes = |app: &TestApp, direction: &str| {
        app.state
            .graph
            .metrics
            .cluster_wakes
            .with_label_values(&[direction])
            .get()
    };
    // Woken, not reconciled (C counts its wake-up once Redis has answered it).
    assert_eq!(wakes(a, "received"), 1);
    eventually("C counts the wake-up it sent", || async {
        (wakes(c, "sent") == 1).then_some(())
    })
    .await;
    let acked = publish_to(b, &device, "from B", "normal").await;
    assert_eq!(ids(&ws.receive(1).await), vec![acked.clone()]);
    // Acked on A: settled for every relay.
    ws.ack(&[&first, &acked]).await;
    let unacked = publish_to(c, &device, "seen, not acked", "low").await;
    assert_eq!(ids(&ws.receive(1).await), vec![unacked.clone()]);
    crate::helpers::wait_for_delivery_status(c, &acked, "acked").await;
    ws.close().await;

    // Published while the device is away, on two relays.
    let low = publish_to(c, &device, "low", "low").await;
    let critical = publish_to(a, &device, "critical", "critical").await;
    let high = publish_to(c, &device, "high", "high").await;

    // On B it gets everything not acknowledged, once, highest priority first then oldest.
    let mut ws = connect_held(b, &device).await;
    let got = ids(&ws.receive(4).await);
    assert_eq!(got, vec![critical, high, unacked, low]);
    // And what is published on C from now on, through B.
    let later = publish_to(c, &device, "later", "normal").await;
    assert_eq!(ids(&ws.receive(1).await), vec![later]);
    let everyone = c.publish(json!({"title": "to all"})).await;
    assert_eq!(
        ids(&ws.receive(1).await),
        vec![everyone["id"].as_str().unwrap()]
    );
}

#[actix_web::test]
async fn deleting_a_device_on_one_relay_closes_its_socket_and_removes_it_on_the_others() {
    let (apps, _keys) = relays(3, |_| {}).await;
    let [a, b, c] = &apps[..] else { unreachable!() };
    assert_ne!(a.state.cluster.node(), b.state.cluster.node());
    let device = a.pair_device("phone").await;
    let other = a.pair_device("tablet").await;
    let mut ws = a.connect_device(&device).await;
    let mut untouched = connect_held(a, &other).await;
    // C holds both devices in its queue (a publish to each).
    publish_to(c, &device, "before", "normal").await;
    assert_eq!(ws.receive(1).await.len(), 1);

    // B knows the device paired on A (one store) and closes its socket on A (the channel).
    let status = b
        .delete(
            &format!("/api/v1/devices/{}", device.id),
            Some(&b.admin_token),
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        ws.expect_close().await,
        Some(4003),
        "closed on A by B's delete"
    );
    // C may not have heard of the deletion yet: a publish to everyone still stores (the deleted
    // device's delivery is left out) and reaches the other device on A.
    let published = c.publish(json!({"title": "to all"})).await;
    assert_eq!(untouched.receive(1).await[0]["id"], published["id"]);
    // Once C has heard, the device is an unknown target there.
    eventually("C forgets the deleted device", || async {
        let (status, _) = c
            .post(
                "/api/v1/notifications",
                Some(&c.admin_token),
                &json!({"title": "x", "targets": [device.id]}),
            )
            .await;
        (status == 422).then_some(())
    })
    .await;
}

#[actix_web::test]
async fn a_device_change_on_one_relay_applies_on_the_others() {
    let (apps, _keys) = relays(2, |_| {}).await;
    let [a, b] = &apps[..] else { unreachable!() };
    let device = a.pair_device("phone").await;
    let mut ws = connect_held(a, &device).await;
    // B learns of the device (its first publish reads it from the store).
    publish_to(b, &device, "hello", "normal").await;
    assert_eq!(ws.receive(1).await.len(), 1);
    let (status, body) = a
        .patch(
            &format!("/api/v1/devices/{}", device.id),
            Some(&a.admin_token),
            &json!({"groups": ["ops"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // B applies the change: the group the device joined through A is a target there.
    let published = eventually("B knows the group set through A", || async {
        let (status, body) = b
            .post(
                "/api/v1/notifications",
                Some(&b.admin_token),
                &json!({"title": "ops", "targets": ["group:ops"]}),
            )
            .await;
        (status == 202).then_some(body)
    })
    .await;
    assert_eq!(ws.receive(1).await[0]["id"], published["id"]);
}

#[actix_web::test]
async fn a_revoked_token_is_refused_by_every_relay() {
    let (apps, _keys) = relays(3, |_| {}).await;
    let [a, b, c] = &apps[..] else { unreachable!() };
    let device = a.pair_device("phone").await;
    let me = format!("/api/v1/devices/{}", device.id);
    for app in [a, b, c] {
        assert_eq!(app.get(&me, Some(&device.access_token)).await.0, 200);
    }
    let mut held = connect_held(c, &device).await;
    let (status, body) = a
        .post(
            "/api/v1/auth/logout",
            Some(&device.access_token),
            &json!({}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(held.expect_close().await, Some(4001), "closed on C");
    for app in [a, b, c] {
        let (status, body) = app.get(&me, Some(&device.access_token)).await;
        assert_eq!(status, 401, "{body}");
        let mut ws = app.connect(Some(&device.access_token)).await;
        assert_eq!(ws.expect_close().await, Some(4001));
    }
}

#[actix_web::test]
async fn a_rate_limit_is_shared_by_every_relay() {
    let (apps, _keys) = relays(3, |s| {
        s.limits.enabled = true;
        s.limits.auth_per_minute = 4;
    })
    .await;
    async fn attempt(app: &TestApp) -> u16 {
        app.post(
            "/api/v1/devices/pair",
            None,
            &json!({"code": "ABCD-EFGH", "name": "x", "platform": "android"}),
        )
        .await
        .0
    }
    let mut statuses = Vec::new();
    for app in apps.iter().chain(apps.iter().take(1)) {
        statuses.push(attempt(app).await);
    }
    assert!(statuses.iter().all(|s| *s != 429), "{statuses:?}");
    for app in &apps {
        assert_eq!(attempt(app).await, 429, "the fifth attempt, on any relay");
    }
}

#[actix_web::test]
async fn health_shows_every_relay_and_its_devices() {
    let (apps, _keys) = relays(3, |_| {}).await;
    let [a, b, _] = &apps[..] else { unreachable!() };
    let device = a.pair_device("phone").await;
    let _ws = connect_held(b, &device).await;
    let nodes: Vec<String> = apps
        .iter()
        .map(|app| app.state.cluster.node().to_owned())
        .collect();
    let cluster = eventually("A's health lists three relays, one device on B", || async {
        let (_, body) = a.get("/health", Some(&a.admin_token)).await;
        let cluster = body["cluster"].clone();
        let listed = cluster["nodes"].as_array()?;
        let on_b = listed.iter().find(|n| n["id"] == nodes[1].as_str())?;
        (listed.len() == 3 && on_b["devices"] == 1).then_some(cluster)
    })
    .await;
    assert_eq!(cluster["node"], nodes[0].as_str());
    for node in cluster["nodes"].as_array().unwrap() {
        assert!(nodes.contains(&node["id"].as_str().unwrap().to_owned()));
        assert!(node["heartbeatAt"].as_i64().unwrap() > 0);
    }
    eventually("each relay counts three", || async {
        apps.iter()
            .all(|app| app.state.graph.metrics.cluster_nodes.get() == 3)
            .then_some(())
    })
    .await;
    let scrape = String::from_utf8(a.state.graph.metrics.encode()).unwrap();
    assert!(
        scrape.contains(&format!(
            "beepmyphone_cluster_node_info{{node=\"{}\"}} 1",
            nodes[0]
        )),
        "{scrape}"
    );
    // Anonymous callers see no cluster.
    let (_, body) = a.get("/health", None).await;
    assert!(body.get("cluster").is_none(), "{body}");
}
