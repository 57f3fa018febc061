//! Tests: `beepmyphone capture`, the real binary, on a private session bus.
//!
//! Each test starts its own `dbus-daemon` (Debian package `dbus`) and a stand-in notification
//! server on it, a small zbus connection in the test that owns `org.freedesktop.Notifications` and
//! answers `Notify` with an id (without one, `notify-send` has nobody to answer it). The capture
//! agent is a monitor beside it, as beside a real desktop's daemon. Notifications are sent with
//! `notify-send` (Debian package `libnotify-bin`). A missing tool fails the test; nothing is
//! skipped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{spawn_app, start_in, test_settings, TestApp};

/// How long a condition of another process (the agent's log, its spool) may take.
const DEADLINE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The private bus and its stand-in notification server

/// A `dbus-daemon` of this test; killed on drop.
struct Bus {
    child: std::process::Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a session bus on a socket in a temporary directory and reads its address.
fn private_bus() -> Bus {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("bus");
    let log = dir.path().join("dbus-daemon.log");
    let stderr = std::fs::File::create(&log).expect("dbus-daemon's log");
    let mut child = std::process::Command::new("dbus-daemon")
        .arg("--config-file=/usr/share/dbus-1/session.conf")
        .arg("--nofork")
        .arg("--print-address=1")
        .arg(format!("--address=unix:path={}", socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start dbus-daemon (install the Debian package `dbus`): {e}")
        });
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read dbus-daemon's address");
    let address = line.trim().to_owned();
    assert!(
        address.starts_with("unix:"),
        "dbus-daemon printed no address ({line:?}): {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    Bus {
        child,
        address,
        _dir: dir,
    }
}

/// Owns `org.freedesktop.Notifications` on `bus` and answers `Notify` with increasing ids (and
/// `GetServerInformation`, `GetCapabilities`, which libnotify may ask first). The connection
/// lives as long as the returned value.
async fn stand_in_notification_server(bus: &Bus) -> zbus::Connection {
    let conn = zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .expect("the stand-in server connects to the private bus");
    let mut calls = zbus::MessageStream::from(&conn);
    conn.request_name("org.freedesktop.Notifications")
        .await
        .expect("the stand-in server owns org.freedesktop.Notifications");
    let replier = conn.clone();
    actix_rt::spawn(async move {
        let mut next_id = 1u32;
        while let Some(Ok(call)) = calls.next().await {
            let header = call.header();
            if header.message_type() != zbus::message::Type::MethodCall {
                continue;
            }
            let answered = match header.member().map(|m| m.as_str()) {
                Some("Notify") => {
                    next_id += 1;
                    replier.reply(&header, &(next_id - 1,)).await
                }
                Some("GetServerInformation") => {
                    replier
                        .reply(&header, &("stand-in", "beepmyphone tests", "1.0", "1.2"))
                        .await
                }
                Some("GetCapabilities") => replier.reply(&header, &(vec!["body"],)).await,
                _ => {
                    replier
                        .reply_error(
                            &header,
                            "org.freedesktop.DBus.Error.UnknownMethod",
                            &("not in the stand-in server",),
                        )
                        .await
                }
            };
            answered.expect("the stand-in server answers");
        }
    });
    conn
}

/// Runs `notify-send` on `bus`; it returns once the stand-in server answered.
async fn notify_send(bus: &Bus, args: &[&str]) {
    let output = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new("notify-send")
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("notify-send finished in time (does the stand-in server answer?)")
    .unwrap_or_else(|e| {
        panic!("cannot run notify-send (install the Debian package `libnotify-bin`): {e}")
    });
    assert!(
        output.status.success(),
        "notify-send {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// The capture agent

/// A running `beepmyphone capture`; killed on drop.
struct Capture {
    child: tokio::process::Child,
    stderr: Arc<Mutex<String>>,
}

impl Capture {
    /// Starts the binary on `bus` with `config`, and waits until it monitors the bus.
    async fn start(bus: &Bus, config: &Path) -> Self {
        let home = config.parent().expect("the config's directory");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_beepmyphone"))
            .arg("capture")
            .arg("--config")
            .arg(config)
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .env_remove("BEEP_TOKEN")
            .env_remove("BEEP_SERVER")
            .env("HOME", home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_STATE_HOME", home.join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start beepmyphone capture");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let sink = stderr.clone();
        actix_rt::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if std::env::var_os("BEEP_TEST_LOG").is_some() {
                    eprintln!("capture: {line}");
                }
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let mut capture = Self { child, stderr };
        capture
            .wait_for("it monitors the bus", |log| {
                log.contains("monitoring the session bus")
            })
            .await;
        capture
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Polls until `done(stderr)` holds; panics with the agent's log after [`DEADLINE`], or at
    /// once if the agent exited.
    async fn wait_for(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if done(&self.log()) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("capture exited ({status}) before {what}:\n{}", self.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never happened: {what}; capture's log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills it (SIGKILL: no shutdown at all).
    async fn kill(mut self) {
        self.child.kill().await.expect("kill capture");
    }
}

/// A test's files: the config, the token file and the spool.
struct Setup {
    dir: tempfile::TempDir,
    token: String,
}

impl Setup {
    /// A publish token of `app`, and a config for `server` with `extra` lines.
    async fn new(app: &TestApp, server: &str, extra: &str) -> Self {
        let (status, created) = app
            .post(
                "/api/v1/tokens",
                Some(&app.admin_token),
                &json!({"name": "desktop", "scope": "publish"}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let token = created["token"].as_str().expect("token").to_owned();
        let dir = tempfile::tempdir().expect("temp dir");
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{token}\n")).expect("token file");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod 600");
        std::fs::write(
            dir.path().join("capture.toml"),
            format!(
                "server = \"{server}\"\ntoken_file = \"token\"\nspool_dir = \"spool\"\n\
                 max_backoff_seconds = 1\n{extra}\n"
            ),
        )
        .expect("config");
        Self { dir, token }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("capture.toml")
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// The items waiting in the spool.
    fn spooled(&self) -> usize {
        std::fs::read_dir(self.spool())
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// The lines of the rejected file.
    fn rejected(&self) -> Vec<Value> {
        std::fs::read_to_string(self.spool().join("rejected.jsonl"))
            .unwrap_or_default()
            .lines()
            // A line being appended right now may be read half-written; the next poll has it.
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Polls `check` on the test's side until it holds; panics with `what` and the agent's log.
async fn until(capture: &mut Capture, what: &str, check: impl Fn() -> bool) {
    capture.wait_for(what, |_| check()).await;
}

// ---------------------------------------------------------------------------------------------
// The tests

#[actix_web::test]
async fn capture_a_desktop_notification_reaches_a_paired_device_mapped() {
    let bus = private_bus();
    let _server = stand_in_notification_server(&bus).await;
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;
    let setup = Setup::new(&app, &app.address, "").await;
    let mut capture = Capture::start(&bus, &setup.config()).await;

    notify_send(
        &bus,
        &[
            "--app-name=  Thunderbird ",
            "--urgency=critical",
            "--icon=mail-unread",
            "New mail",
            "From <b>Ann</b>: lunch &amp; <a href=\"https://x.example\">coffee</a>?",
        ],
    )
    .await;
    let items = ws.receive(1).await;
    let item = &items[0];
    assert_eq!(item["title"], "New mail", "{item}");
    assert_eq!(item["body"], "From Ann: lunch & coffee?", "{item}");
    assert_eq!(item["app"], "Thunderbird", "{item}");
    assert_eq!(item["priority"], "critical", "{item}");
    assert_eq!(item["tags"], json!(["mail-unread"]), "{item}");

    // No hint, no icon: normal priority, no tags.
    notify_send(&bus, &["--app-name=Chat", "Ann", "hi"]).await;
    let items = ws.receive(1).await;
    assert_eq!(items[0]["priority"], "normal", "{}", items[0]);
    assert_eq!(items[0]["tags"], json!([]), "{}", items[0]);

    until(&mut capture, "the spool empties", || setup.spooled() == 0).await;
    assert!(
        !capture.log().contains(&setup.token),
        "the log shows the token"
    );
    assert!(
        !capture.log().contains("readable by other users"),
        "{}",
        capture.log()
    );

    // SIGTERM (what systemd sends) is a clean stop.
    let pid = capture.child.id().expect("pid") as libc::pid_t;
    // SAFETY: kill only sends a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(DEADLINE, capture.child.wait())
        .await
        .expect("capture stops on SIGTERM")
        .expect("wait");
    assert_eq!(status.code(), Some(0), "{}", capture.log());
}

#[actix_web::test]
async fn capture_a_notification_sent_while_the_relay_is_down_arrives_after_it_restarts() {
    let bus = private_bus();
    let _server = stand_in_notification_server(&bus).await;
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let setup = Setup::new(&app, &app.address, "").await;
    let mut capture = Capture::start(&bus, &setup.config()).await;

    let port = app.port;
    let dir = app.stop().await;
    notify_send(&bus, &["--app-name=Chat", "While down", "one"]).await;
    notify_send(&bus, &["--app-name=Chat", "While down", "two"]).await;
    until(&mut capture, "both are spooled", || setup.spooled() == 2).await;
    capture
        .wait_for("a failed send is retried", |log| {
            log.matches("the relay is unreachable").count() >= 2
        })
        .await;

    let mut settings = test_settings(dir.path());
    settings.server.listen = format!("127.0.0.1:{port}");
    let app = start_in(dir, settings).await;
    let mut ws = app.connect_device(&device).await;
    let items = ws.receive(2).await;
    let bodies: Vec<&str> = items.iter().map(|i| i["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, ["one", "two"], "in the order they were sent");
    assert_eq!(items[0]["title"], "While down");
    until(&mut capture, "the spool empties", || setup.spooled() == 0).await;
}

#[actix_web::test]
async fn capture_what_the_spool_holds_is_sent_after_the_agent_restarts() {
    let bus = private_bus();
    let _server = stand_in_notification_server(&bus).await;
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let setup = Setup::new(&app, &app.address, "").await;
    let mut capture = Capture::start(&bus, &setup.config()).await;

    let port = app.port;
    let dir = app.stop().await;
    notify_send(&bus, &["--app-name=Chat", "Spooled", "before the crash"]).await;
    until(&mut capture, "it is spooled", || setup.spooled() == 1).await;
    capture.kill().await;

    let mut settings = test_settings(dir.path());
    settings.server.listen = format!("127.0.0.1:{port}");
    let app = start_in(dir, settings).await;
    let mut ws = app.connect_device(&device).await;
    let mut capture = Capture::start(&bus, &setup.config()).await;
    let items = ws.receive(1).await;
    assert_eq!(items[0]["body"], "before the crash", "{}", items[0]);
    until(&mut capture, "the spool empties", || setup.spooled() == 0).await;
}

#[actix_web::test]
async fn capture_skipped_apps_and_low_urgency_stay_on_the_desktop() {
    let bus = private_bus();
    let _server = stand_in_notification_server(&bus).await;
    let app = spawn_app().await;
    let device = app.pair_device("phone").await;
    let mut ws = app.connect_device(&device).await;
    let setup = Setup::new(
        &app,
        &app.address,
        "skip_apps = [\"Spammy\"]\nmin_urgency = \"normal\"",
    )
    .await;
    let mut capture = Capture::start(&bus, &setup.config()).await;

    notify_send(&bus, &["--app-name=spammy", "Skip me"]).await;
    notify_send(&bus, &["--app-name=Chat", "--urgency=low", "Too low"]).await;
    notify_send(&bus, &["--app-name=Chat", "Hello"]).await;
    // The agent sends one at a time, in the order of the bus: had either of the first two been
    // forwarded, the relay would hold it by the time this one arrives (the list below).
    let items = ws.receive(1).await;
    assert_eq!(items[0]["title"], "Hello", "{}", items[0]);
    capture
        .wait_for("both skips are logged", |log| {
            log.matches("skipped a notification").count() == 2
        })
        .await;
    let (status, list) = app
        .get("/api/v1/notifications", Some(&app.admin_token))
        .await;
    assert_eq!(status, 200, "{list}");
    let titles: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|n| n["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Hello"]);
}

#[actix_web::test]
async fn capture_a_publish_the_relay_refuses_is_set_aside_and_does_not_block_the_queue() {
    let bus = private_bus();
    let _server = stand_in_notification_server(&bus).await;
    let app = spawn_app().await;
    // A device id of the right shape that the relay does not know: every publish is a 422.
    let setup = Setup::new(
        &app,
        &app.address,
        "targets = [\"dev_01J00000000000000000000000\"]",
    )
    .await;
    let mut capture = Capture::start(&bus, &setup.config()).await;
    notify_send(&bus, &["--app-name=Chat", "Refused", "one"]).await;
    notify_send(&bus, &["--app-name=Chat", "Refused", "two"]).await;
    // The line is written before the item leaves the spool, and logged after: poll for all.
    until(&mut capture, "both are rejected", || {
        setup.rejected().len() == 2 && setup.spooled() == 0
    })
    .await;
    capture
        .wait_for("both refusals are logged", |log| {
            log.matches("the relay refused a notification").count() == 2
        })
        .await;
    let rejected = setup.rejected();
    assert_eq!(rejected[0]["status"], 422, "{}", rejected[0]);
    assert_eq!(rejected[0]["item"]["body"], "one", "{}", rejected[0]);
    assert_eq!(rejected[1]["item"]["body"], "two", "{}", rejected[1]);
    assert!(
        rejected[0]["detail"].as_str().unwrap().contains("target")
            || rejected[0]["detail"].as_str().unwrap().contains("dev_"),
        "the relay's detail is kept: {}",
        rejected[0]
    );
}

#[actix_web::test]
async fn capture_a_token_the_relay_refuses_holds_the_queue_instead_of_emptying_it() {
    let bus = private_bus();
    let _server = stand_in_notification_server(&bus).await;
    let app = spawn_app().await;
    let setup = Setup::new(&app, &app.address, "").await;
    std::fs::write(setup.dir.path().join("token"), "not-a-token\n").expect("token file");
    let mut capture = Capture::start(&bus, &setup.config()).await;
    notify_send(&bus, &["--app-name=Chat", "Held", "kept"]).await;
    capture
        .wait_for("the refusal is retried", |log| {
            log.matches("the relay refuses this agent").count() >= 2
        })
        .await;
    assert_eq!(setup.spooled(), 1, "{}", capture.log());
    assert!(setup.rejected().is_empty());
    assert!(
        !capture.log().contains("not-a-token"),
        "the log shows the token"
    );
}

#[actix_web::test]
async fn capture_a_bad_config_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("capture.toml");
    std::fs::write(&config, "token_file = \"token\"\ncolour = \"blue\"\n").unwrap();
    std::fs::write(dir.path().join("token"), "x\n").unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_beepmyphone"))
        .arg("capture")
        .arg("--config")
        .arg(&config)
        .env_remove("BEEP_TOKEN")
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run capture");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("colour"), "{stderr}");

    // No token anywhere: exit 2 with what to do.
    std::fs::write(&config, "server = \"http://127.0.0.1:9\"\n").unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_beepmyphone"))
        .arg("capture")
        .arg("--config")
        .arg(&config)
        .env_remove("BEEP_TOKEN")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run capture");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("token_file"), "{stderr}");
}

#[actix_web::test]
async fn capture_with_e2e_seals_each_notification_for_its_device() {
    use beepmyphone::crypto::e2e;
    let bus = private_bus();
    let _server = stand_in_notification_server(&bus).await;
    let app = spawn_app().await;
    let (keyed, secret) = crate::e2e::pair_with_key(&app, "phone").await;
    let unkeyed = app.pair_device("old-phone").await;
    let mut ws = app.connect_device(&keyed).await;
    let setup = Setup::new(
        &app,
        &app.address,
        &format!("e2e = true\ntargets = [\"{}\"]", keyed.id),
    )
    .await;
    let mut capture = Capture::start(&bus, &setup.config()).await;

    notify_send(
        &bus,
        &[
            "--app-name=Signal",
            "--icon=chat",
            "Ann",
            "the door code is 4711",
        ],
    )
    .await;
    let items = ws.receive(1).await;
    let item = &items[0];
    assert_eq!(item["title"], "Encrypted notification", "{item}");
    assert_eq!(item["body"], "", "{item}");
    assert_eq!(
        item["app"], "api",
        "the relay's default: Signal stays inside: {item}"
    );
    assert_eq!(item["priority"], "normal", "{item}");
    let opened = e2e::open(
        &keyed.id,
        &secret,
        item["encrypted"].as_str().expect("envelope"),
    )
    .expect("opens with the device's key");
    assert_eq!(opened.title, "Ann");
    assert_eq!(opened.body, "the door code is 4711");
    assert_eq!(opened.app.as_deref(), Some("Signal"));
    assert_eq!(opened.tags, ["chat"]);
    until(&mut capture, "the spool empties", || setup.spooled() == 0).await;
    capture.kill().await;

    // A target without a key: the relay refuses the publish and the item is set aside, never
    // sent in clear.
    let setup = Setup::new(
        &app,
        &app.address,
        &format!("e2e = true\ntargets = [\"{}\"]", unkeyed.id),
    )
    .await;
    let mut capture = Capture::start(&bus, &setup.config()).await;
    notify_send(&bus, &["--app-name=Signal", "Ann", "second"]).await;
    until(&mut capture, "the item is rejected", || {
        setup.rejected().len() == 1 && setup.spooled() == 0
    })
    .await;
    let rejected = &setup.rejected()[0];
    assert_eq!(rejected["status"], 422, "{rejected}");
    assert!(
        rejected["detail"]
            .as_str()
            .unwrap()
            .contains("no end-to-end key"),
        "{rejected}"
    );
    let (_, listed) = app
        .get(
            &format!("/api/v1/notifications?deviceId={}", unkeyed.id),
            Some(&app.admin_token),
        )
        .await;
    assert_eq!(
        listed["items"],
        json!([]),
        "nothing reached the device: {listed}"
    );
}
