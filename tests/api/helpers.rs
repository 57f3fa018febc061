//! Test harness: `spawn_app()` starts the relay in-process on port 0 with a temporary data
//! directory and a manual clock; `spawn_process()` starts the real binary (for crash tests);
//! `device_loop()` is a device that reconnects across relay failures (failover and chaos tests).
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use awc::ws;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use beepmyphone::config::Settings;
use beepmyphone::startup::{Application, Options};
use beepmyphone::state::AppState;
use beepmyphone::tls::client::Trust;
use beepmyphone_actors::clock::ManualClock;

/// A relay running in this process.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    /// The bound port.
    pub port: u16,
    /// The initial admin token.
    pub admin_token: String,
    /// The data directory (deleted on drop).
    pub data_dir: tempfile::TempDir,
    /// The relay's clock.
    pub clock: ManualClock,
    /// The relay's shared state, for reaching the actor graph.
    pub state: web::Data<AppState>,
    /// An HTTP client.
    pub client: awc::Client,
    /// The token-free metrics listener's port, when `metrics.listen` is set.
    pub metrics_port: Option<u16>,
    /// The plain-HTTP redirect listener's port, when `tls.redirect_http_listen` is set.
    pub redirect_port: Option<u16>,
    handle: actix_web::dev::ServerHandle,
}

/// A paired device's credentials.
#[derive(Debug, Clone)]
pub struct Device {
    pub id: String,
    pub access_token: String,
    pub refresh_token: String,
}

/// Settings for tests: a fresh data directory, port 0, quiet logs.
pub fn test_settings(data_dir: &Path) -> Settings {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.server.workers = 2;
    settings.storage.data_dir = data_dir.to_path_buf();
    if let Some(url) = test_postgres_database(data_dir) {
        settings.storage.url = url.into();
    }
    settings.storage.pool_min_idle = 1;
    // Heartbeat tests count intervals from the connect; tests/api/socket.rs checks the spread.
    settings.websocket.heartbeat_spread = false;
    // The machine's free space is not the test's business: tests that need the disk component
    // set their own thresholds.
    settings.health.disk_degraded_percent = 0;
    settings.health.disk_degraded_mib = 0;
    settings.health.disk_unhealthy_percent = 0;
    settings.health.disk_unhealthy_mib = 0;
    settings
}

/// The PostgreSQL server of the suite's PostgreSQL run (`BEEP_TEST_POSTGRES`, a server URL such
/// as `postgres://postgres@127.0.0.1:5432`), if this is that run.
pub fn test_postgres_server() -> Option<String> {
    std::env::var("BEEP_TEST_POSTGRES")
        .ok()
        .filter(|url| !url.is_empty())
}

/// In the PostgreSQL run, the URL of a database of `data_dir`'s own (created if missing, so a
/// restart on the same directory finds its data again), named after the directory.
pub fn test_postgres_database(data_dir: &Path) -> Option<String> {
    let server = test_postgres_server()?;
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(
        data_dir.as_os_str().as_encoded_bytes(),
    ));
    Some(fresh_postgres_database(
        &server,
        &format!("beep_t_{}", &hash[..24]),
    ))
}

/// Creates the database `name` on `server` unless it exists; its URL.
pub fn fresh_postgres_database(server: &str, name: &str) -> String {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let server = server.trim_end_matches('/');
    let mut admin = diesel::PgConnection::establish(&format!("{server}/postgres"))
        .unwrap_or_else(|e| panic!("PostgreSQL at {server} does not answer: {e}"));
    if let Err(e) = admin.batch_execute(&format!("CREATE DATABASE {name}")) {
        assert!(
            e.to_string().contains("already exists"),
            "CREATE DATABASE {name}: {e}"
        );
    }
    format!("{server}/{name}")
}

/// Starts a relay with default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a relay after `tweak` adjusted its settings.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(data_dir.path());
    tweak(&mut settings);
    start_in(data_dir, settings).await
}

/// Starts a relay on an existing data directory (a restart).
pub async fn start_in(data_dir: tempfile::TempDir, settings: Settings) -> TestApp {
    let log = if std::env::var_os("BEEP_TEST_LOG").is_some() {
        beepmyphone::logging::build(&settings.log).expect("the log opens")
    } else {
        beepmyphone::logging::discard()
    };
    start_logging_to(data_dir, settings, log).await
}

/// [`start_in`] on a given manual clock: relays of one cluster share one, as machines share the
/// time (a relay whose clock lags another's by the presence TTL would be pruned as dead).
pub async fn start_in_on(
    data_dir: tempfile::TempDir,
    settings: Settings,
    clock: ManualClock,
) -> TestApp {
    start_with_clock(data_dir, settings, beepmyphone::logging::discard(), clock).await
}

/// Starts a relay with default test settings whose JSON log, down to debug, is captured.
pub async fn spawn_app_with_log() -> (TestApp, CapturedLog) {
    spawn_app_with_log_at(slog::Level::Debug).await
}

/// Starts a relay with default test settings whose JSON log, down to `level`, is captured.
pub async fn spawn_app_with_log_at(level: slog::Level) -> (TestApp, CapturedLog) {
    spawn_app_with_log_at_with(level, |_| {}).await
}

/// Starts a relay after `tweak` adjusted its settings; its JSON log, down to `level`, is captured.
pub async fn spawn_app_with_log_at_with(
    level: slog::Level,
    tweak: impl FnOnce(&mut Settings),
) -> (TestApp, CapturedLog) {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(data_dir.path());
    tweak(&mut settings);
    let captured = CapturedLog::default();
    let log = beepmyphone::logging::json_to(captured.clone(), level);
    (start_logging_to(data_dir, settings, log).await, captured)
}

/// [`spawn_app_with_log`] after `tweak` adjusted the settings.
pub async fn spawn_app_with_log_and(tweak: impl FnOnce(&mut Settings)) -> (TestApp, CapturedLog) {
    spawn_app_with_log_at_with(slog::Level::Debug, tweak).await
}

/// Restarts a relay on an existing data directory with its JSON log, down to debug, captured.
pub async fn start_in_with_log(
    data_dir: tempfile::TempDir,
    settings: Settings,
) -> (TestApp, CapturedLog) {
    let captured = CapturedLog::default();
    let log = beepmyphone::logging::json_to(captured.clone(), slog::Level::Debug);
    (start_logging_to(data_dir, settings, log).await, captured)
}

/// The relay's log in its JSON format, one object a line. Lines are written synchronously, so a
/// line is here as soon as the code that logs it has run (no waiting for a drain).
#[derive(Clone, Default)]
pub struct CapturedLog(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    /// Every line so far, parsed (a line that is not JSON fails the test).
    pub fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .expect("UTF-8 log")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// Everything logged so far, as written.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).expect("UTF-8 log")
    }

    /// The lines with this `msg`.
    pub fn with_msg(&self, msg: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["msg"] == msg)
            .collect()
    }
}

/// Starts a relay whose manual clock starts at `start_ms` (epoch ms) rather than now.
pub async fn spawn_app_at(start_ms: i64, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(data_dir.path());
    tweak(&mut settings);
    start_with_clock(
        data_dir,
        settings,
        beepmyphone::logging::discard(),
        ManualClock::new(start_ms),
    )
    .await
}

async fn start_logging_to(
    data_dir: tempfile::TempDir,
    settings: Settings,
    log: slog::Logger,
) -> TestApp {
    start_with_clock(data_dir, settings, log, ManualClock::starting_now()).await
}

async fn start_with_clock(
    data_dir: tempfile::TempDir,
    settings: Settings,
    log: slog::Logger,
    clock: ManualClock,
) -> TestApp {
    let app = Application::build(
        settings,
        Options {
            clock: Arc::new(clock.clone()),
            log,
            // Fast bcrypt for test admins; real configurations cannot go below cost 10.
            insecure_bcrypt_cost: Some(4),
        },
    )
    .await
    .expect("relay starts");
    let port = app.port();
    let metrics_port = app.metrics_port();
    let redirect_port = app.redirect_port();
    let state = app.state();
    let handle = app.handle();
    actix_rt::spawn(app.run_until_stopped());
    let admin_token = std::fs::read_to_string(data_dir.path().join("initial-admin-token"))
        .expect("initial admin token")
        .trim()
        .to_owned();
    // Over TLS, the client pins what the relay says devices should pin (or, for an operator's
    // certificate, checks nothing: the tests of verification build their own clients).
    let scheme = if state.tls.is_some() { "https" } else { "http" };
    let trust = match state
        .tls
        .as_ref()
        .map(|tls| tls.status.snapshot().certificate.pin)
    {
        Some(Some(pin)) => Trust::Pinned(pin),
        Some(None) => Trust::Insecure,
        None => Trust::System,
    };
    let client = tls_client(&trust);
    TestApp {
        address: format!("{scheme}://127.0.0.1:{port}"),
        port,
        admin_token,
        data_dir,
        clock,
        state,
        client,
        metrics_port,
        redirect_port,
        handle,
    }
}

/// An HTTP client that checks the relay's certificate as `trust` says.
pub fn tls_client(trust: &Trust) -> awc::Client {
    awc::Client::builder()
        .connector(
            awc::Connector::new()
                .max_http_version(awc::http::Version::HTTP_11)
                .openssl(beepmyphone::tls::client::connector(trust).expect("TLS client")),
        )
        .timeout(Duration::from_secs(20))
        .finish()
}

impl TestApp {
    /// The certificate the relay serves (TLS on).
    pub fn certificate(&self) -> beepmyphone_actors::ports::CertificateInfo {
        let tls = self.state.tls.as_ref().expect("TLS is on");
        tls.status.snapshot().certificate
    }

    /// Stops the server (sockets close) and returns the data directory for a restart.
    pub async fn stop(self) -> tempfile::TempDir {
        self.handle.stop(true).await;
        self.data_dir
    }

    /// A request with an optional bearer token.
    pub fn request(
        &self,
        method: awc::http::Method,
        path: &str,
        token: Option<&str>,
    ) -> awc::ClientRequest {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.address, path));
        if let Some(token) = token {
            req = req.insert_header(("Authorization", format!("Bearer {token}")));
        }
        req
    }

    /// Sends a JSON body; returns the status, headers and JSON body (Null if none).
    pub async fn send_json(
        &self,
        method: awc::http::Method,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let mut res = self
            .request(method, path, token)
            .send_json(body)
            .await
            .expect("request");
        let status = res.status().as_u16();
        let bytes = res.body().limit(16 * 1024 * 1024).await.expect("body");
        (status, parse_body(&bytes))
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.send_json(awc::http::Method::POST, path, token, body)
            .await
    }

    /// PATCH with a JSON body.
    pub async fn patch(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        self.send_json(awc::http::Method::PATCH, path, token, body)
            .await
    }

    /// GET.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut res = self
            .request(awc::http::Method::GET, path, token)
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        let bytes = res.body().limit(16 * 1024 * 1024).await.expect("body");
        (status, parse_body(&bytes))
    }

    /// DELETE.
    pub async fn delete(&self, path: &str, token: Option<&str>) -> u16 {
        let res = self
            .request(awc::http::Method::DELETE, path, token)
            .send()
            .await
            .expect("request");
        res.status().as_u16()
    }

    /// Mints a pairing code with the admin token.
    pub async fn pairing_code(&self) -> String {
        let (status, body) = self
            .post("/api/v1/pairing-codes", Some(&self.admin_token), &json!({}))
            .await;
        assert_eq!(status, 201, "{body}");
        body["code"].as_str().unwrap().to_owned()
    }

    /// Pairs a new device.
    pub async fn pair_device(&self, name: &str) -> Device {
        let code = self.pairing_code().await;
        let (status, body) = self
            .post(
                "/api/v1/devices/pair",
                None,
                &json!({"code": code, "name": name, "platform": "android"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        Device {
            id: body["deviceId"].as_str().unwrap().to_owned(),
            access_token: body["accessToken"].as_str().unwrap().to_owned(),
            refresh_token: body["refreshToken"].as_str().unwrap().to_owned(),
        }
    }

    /// Publishes with the admin token; asserts 202 and returns the body.
    pub async fn publish(&self, body: Value) -> Value {
        let (status, response) = self
            .post("/api/v1/notifications", Some(&self.admin_token), &body)
            .await;
        assert_eq!(status, 202, "{response}");
        response
    }

    /// Opens the device socket, optionally with a header token.
    pub async fn connect(&self, token: Option<&str>) -> WsClient {
        let mut req = self
            .client
            .ws(format!(
                "{}/api/v1/ws",
                self.address.replacen("http", "ws", 1)
            ))
            .max_frame_size(16 * 1024 * 1024);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let (_res, framed) = req.connect().await.expect("websocket connects");
        WsClient { framed }
    }

    /// Opens the device socket with the device's token and reads `hello`.
    pub async fn connect_device(&self, device: &Device) -> WsClient {
        let mut ws = self.connect(Some(&device.access_token)).await;
        let hello = ws.next_json().await;
        assert_eq!(hello["type"], "hello", "{hello}");
        assert_eq!(hello["deviceId"], device.id.as_str());
        ws
    }
}

fn parse_body(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
    }
}

/// What a socket read produced.
#[derive(Debug)]
pub enum Event {
    /// A JSON text frame.
    Json(Value),
    /// A close frame with its code.
    Closed(Option<u16>),
}

/// A device socket.
pub struct WsClient {
    framed: actix_codec::Framed<awc::BoxedSocket, ws::Codec>,
}

impl WsClient {
    /// The next JSON frame or close, answering pings; panics after 10 s of silence.
    pub async fn next_event(&mut self) -> Event {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.framed.next())
                .await
                .expect("a frame within 10 s");
            match frame {
                None => return Event::Closed(None),
                Some(Err(e)) => panic!("socket error: {e}"),
                Some(Ok(ws::Frame::Text(bytes))) => {
                    return Event::Json(serde_json::from_slice(&bytes).expect("JSON frame"))
                }
                Some(Ok(ws::Frame::Ping(bytes))) => {
                    self.framed
                        .send(ws::Message::Pong(bytes))
                        .await
                        .expect("pong");
                }
                Some(Ok(ws::Frame::Close(reason))) => {
                    return Event::Closed(reason.map(|r| u16::from(r.code)))
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next JSON frame; panics on close.
    pub async fn next_json(&mut self) -> Value {
        match self.next_event().await {
            Event::Json(v) => v,
            Event::Closed(code) => panic!("socket closed ({code:?}) while a frame was expected"),
        }
    }

    /// Reads until the socket closes; returns the close code. Panics on a data frame if `strict`.
    pub async fn expect_close(&mut self) -> Option<u16> {
        loop {
            match self.next_event().await {
                Event::Closed(code) => return code,
                Event::Json(_) => continue,
            }
        }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.framed
            .send(ws::Message::Text(text.to_owned().into()))
            .await
            .expect("send");
    }

    /// Sends a JSON frame.
    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Reads `notifications` frames until `n` notifications arrived; returns them in order.
    pub async fn receive(&mut self, n: usize) -> Vec<Value> {
        let mut items = Vec::new();
        while items.len() < n {
            let frame = self.next_json().await;
            assert_eq!(frame["type"], "notifications", "{frame}");
            items.extend(frame["items"].as_array().expect("items").iter().cloned());
        }
        items
    }

    /// Acknowledges notifications.
    pub async fn ack(&mut self, ids: &[&str]) {
        self.send_json(&json!({"type": "ack", "ids": ids})).await;
    }

    /// Acknowledges every notification in `items`.
    pub async fn ack_all(&mut self, items: &[Value]) {
        let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
        for chunk in ids.chunks(500) {
            self.ack(chunk).await;
        }
    }

    /// Closes politely.
    pub async fn close(mut self) {
        let _ = self.framed.send(ws::Message::Close(None)).await;
    }
}

/// How long [`eventually`] keeps trying.
pub const EVENTUALLY: Duration = Duration::from_secs(10);

/// Retries `check` until it returns `Some`, for at most [`EVENTUALLY`], and panics with `what`
/// after that. For state that another thread changes with no signal a test can await: a group
/// commit on SQLite's blocking pool, a socket actor stopping on its arbiter, a file another
/// process writes. It is a bounded retry, not a fixed wait: it returns as soon as the state is
/// there (relay time stays on the manual clock; only the pause between tries is real time).
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + EVENTUALLY;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        // The one real-time pause of the retry helpers: the other thread gets to run.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls `GET /notifications/{id}` until every delivery is in `status` (the store is updated by
/// group commit, shortly after the ack: no signal reaches the test).
pub async fn wait_for_delivery_status(app: &TestApp, id: &str, status: &str) -> Value {
    eventually(&format!("deliveries of {id} reach {status}"), || async {
        let (code, body) = app
            .get(
                &format!("/api/v1/notifications/{id}"),
                Some(&app.admin_token),
            )
            .await;
        assert_eq!(code, 200, "{body}");
        let deliveries = body["deliveries"].as_array().unwrap();
        (!deliveries.is_empty() && deliveries.iter().all(|d| d["status"] == status)).then_some(body)
    })
    .await
}

/// The relay binary running as a child process.
pub struct ChildRelay {
    pub child: Child,
    pub port: u16,
    pub address: String,
    /// Everything the relay printed on stdout (its log), collected as it runs.
    pub output: Arc<std::sync::Mutex<String>>,
}

impl ChildRelay {
    /// Kills it with SIGKILL (no shutdown, no flush).
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }
}

impl Drop for ChildRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the relay binary with `args` in `dir`; its exit code, stdout and stderr.
pub async fn beep(dir: &Path, args: &[&str]) -> (i32, String, String) {
    beep_with(dir, args, &[]).await
}

/// [`beep`] with environment variables set.
pub async fn beep_with(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    // In the PostgreSQL run, a command on a data directory uses that directory's database.
    let storage = args
        .iter()
        .position(|a| *a == "--data-dir")
        .and_then(|i| args.get(i + 1))
        .and_then(|data_dir| test_postgres_database(Path::new(data_dir)))
        .map(|url| ("BEEP__STORAGE__URL", url));
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_beepmyphone"))
            .args(args)
            .envs(storage)
            .envs(env.iter().copied())
            .current_dir(dir)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the command finished in time")
    .expect("the command ran");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts `beepmyphone serve` on port 0 over `data_dir` and waits for its "listening" line.
pub fn spawn_process(data_dir: &Path) -> ChildRelay {
    spawn_process_with(data_dir, &[])
}

/// [`spawn_process`] with environment variables set (settings as `BEEP__SECTION__KEY`).
pub fn spawn_process_with(data_dir: &Path, env: &[(&str, &str)]) -> ChildRelay {
    let storage = test_postgres_database(data_dir).map(|url| ("BEEP__STORAGE__URL", url));
    let mut child = Command::new(env!("CARGO_BIN_EXE_beepmyphone"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .envs(storage)
        // JSON at debug unless the caller says otherwise (the listening line is at info).
        .env("BEEP__LOG__FORMAT", "json")
        .env("BEEP__LOG__LEVEL", "debug")
        .envs(env.iter().copied())
        .current_dir(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the relay binary");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let output = Arc::new(std::sync::Mutex::new(String::new()));
    let port = loop {
        let line = lines
            .next()
            .expect("the relay printed its listening line")
            .expect("read stdout");
        output.lock().unwrap().push_str(&line);
        output.lock().unwrap().push('\n');
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if value["msg"] == "listening" {
            let addr = value["addr"].as_str().expect("addr");
            break addr
                .rsplit(':')
                .next()
                .unwrap()
                .parse::<u16>()
                .expect("port");
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    let sink = output.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let mut out = sink.lock().unwrap();
            out.push_str(&line);
            out.push('\n');
        }
    });
    ChildRelay {
        child,
        port,
        address: format!("http://127.0.0.1:{port}"),
        output,
    }
}

/// The password [`create_admin`] gives admins.
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

/// Creates an admin directly through the library (bcrypt cost 4), on a running relay's store.
pub async fn create_admin(app: &TestApp, name: &str) {
    let (store, name) = (app.state.store.clone(), name.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut conn = store.conn().unwrap();
        let bcrypt = beepmyphone::security::passwords::Bcrypt::new(4, true).unwrap();
        beepmyphone::security::admins::add(
            &mut conn,
            &bcrypt,
            &name,
            &beepmyphone::crypto::secrets::secret_string(ADMIN_PASSWORD.into()),
            chrono::Utc::now().timestamp_millis(),
        )
        .unwrap();
    })
    .await
    .unwrap();
}

/// Requests as the timing middleware records them, straight into the relay's metrics (the test
/// cannot make the relay slow on purpose).
pub fn record_requests(app: &TestApp, n: usize, seconds: f64) {
    let metrics = &app.state.graph.metrics;
    for _ in 0..n {
        metrics
            .http_duration
            .with_label_values(&["/api/v1/notifications", "POST"])
            .observe(seconds);
        metrics
            .http_requests
            .with_label_values(&["/api/v1/notifications", "POST", "202"])
            .inc();
    }
}

/// The SQLite database, its WAL and its shared-memory index in `dir`, as they are on disk now.
pub fn database_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    ["beepmyphone.db", "beepmyphone.db-wal", "beepmyphone.db-shm"]
        .iter()
        .filter_map(|name| {
            std::fs::read(dir.join(name))
                .ok()
                .map(|bytes| ((*name).to_owned(), bytes))
        })
        .collect()
}

/// How long a roaming device waits before trying again once every relay of its list failed,
/// unless the list changes first (a device backs off; the test's relay restart wakes it at once).
pub const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// Where roaming devices connect, shared by the devices of one test.
#[derive(Clone)]
pub struct Roaming {
    /// The ports of the relays to try, in turn; the test sends a new list when a relay restarts
    /// (on a new port) and every waiting device tries again at once.
    pub relays: tokio::sync::watch::Receiver<Vec<u16>>,
    /// Set when the test is over: the devices stop at their next frame or attempt.
    pub done: Rc<Cell<bool>>,
    /// Notified after each frame a device handled and each socket it lost, so that a test waits
    /// for deliveries on an event instead of polling.
    pub progress: Rc<tokio::sync::Notify>,
}

/// What one roaming device saw.
#[derive(Default)]
pub struct DeviceLog {
    /// Every notification received: id → title.
    pub items: RefCell<std::collections::HashMap<String, String>>,
    /// Receptions of an id already received (at-least-once delivery allows them).
    pub duplicates: Cell<u64>,
    /// `hello`s received: sockets opened and authenticated.
    pub hellos: Cell<u64>,
    /// Close codes the relays sent (0 for a close frame without a code).
    pub closes: RefCell<std::collections::BTreeMap<u16, u64>>,
    /// Sockets that ended without a close frame, and upgrades that failed.
    pub drops: Cell<u64>,
}

/// A device that keeps a socket to one of `roaming.relays`, moving on to the next when it drops
/// (after [`RECONNECT_BACKOFF`] or a new list once every relay failed); it records and
/// acknowledges every notification it gets, one ack per frame.
pub async fn device_loop(token: String, roaming: Roaming, log: Rc<DeviceLog>) {
    device_loop_with(Rc::new(RefCell::new(token)), Acks::Every, roaming, log).await
}

/// Which notifications a roaming device acknowledges.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// Every one, in the frame's order.
    Every,
    /// Only those it receives a second time: each comes again after the ack timeout.
    Redeliveries,
}

/// [`device_loop`] with a token the test may replace (a refresh: each connect uses the token of
/// the moment) and a choice of what it acknowledges.
pub async fn device_loop_with(
    token: Rc<RefCell<String>>,
    acks: Acks,
    roaming: Roaming,
    log: Rc<DeviceLog>,
) {
    let Roaming {
        mut relays,
        done,
        progress,
    } = roaming;
    let mut next = 0;
    let mut failures = 0;
    while !done.get() {
        let ports = relays.borrow_and_update().clone();
        if ports.is_empty() || failures >= ports.len() {
            // A timeout is the device's backoff; a dropped sender only leaves the backoff.
            let _ = tokio::time::timeout(RECONNECT_BACKOFF, relays.changed()).await;
            failures = 0;
            continue;
        }
        let port = ports[next % ports.len()];
        next += 1;
        failures += 1;
        let bearer = token.borrow().clone();
        let Ok((_res, mut framed)) = awc::Client::new()
            .ws(format!("ws://127.0.0.1:{port}/api/v1/ws"))
            .bearer_auth(bearer)
            .max_frame_size(16 * 1024 * 1024)
            .connect()
            .await
        else {
            log.drops.set(log.drops.get() + 1);
            continue;
        };
        loop {
            let frame = match framed.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(_)) | None => {
                    log.drops.set(log.drops.get() + 1);
                    break;
                }
            };
            let bytes = match frame {
                ws::Frame::Text(bytes) => bytes,
                ws::Frame::Ping(bytes) => {
                    if framed.send(ws::Message::Pong(bytes)).await.is_err() {
                        break;
                    }
                    continue;
                }
                ws::Frame::Close(reason) => {
                    let code = reason.map_or(0, |r| u16::from(r.code));
                    *log.closes.borrow_mut().entry(code).or_default() += 1;
                    break;
                }
                _ => continue,
            };
            let value: Value = serde_json::from_slice(&bytes).expect("JSON frame");
            if value["type"] == "hello" {
                failures = 0;
                log.hellos.set(log.hellos.get() + 1);
                progress.notify_one();
                continue;
            }
            if value["type"] != "notifications" {
                continue;
            }
            let mut ids = Vec::new();
            {
                let mut items = log.items.borrow_mut();
                for item in value["items"].as_array().expect("items") {
                    let id = item["id"].as_str().expect("id").to_owned();
                    let title = item["title"].as_str().unwrap_or_default().to_owned();
                    let again = items.insert(id.clone(), title).is_some();
                    if again {
                        log.duplicates.set(log.duplicates.get() + 1);
                    }
                    if again || acks == Acks::Every {
                        ids.push(id);
                    }
                }
            }
            progress.notify_one();
            if ids.is_empty() {
                continue;
            }
            let ack = json!({"type": "ack", "ids": ids}).to_string();
            if framed.send(ws::Message::Text(ack.into())).await.is_err() {
                log.drops.set(log.drops.get() + 1);
                break;
            }
            if done.get() {
                return;
            }
        }
        progress.notify_one();
    }
}

/// Waits until `condition` holds, woken by `progress` (see [`Roaming::progress`]); `false` if
/// `deadline` passed first.
pub async fn until(
    progress: &tokio::sync::Notify,
    deadline: std::time::Instant,
    mut condition: impl FnMut() -> bool,
) -> bool {
    loop {
        if condition() {
            return true;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        let _ = tokio::time::timeout(left, progress.notified()).await;
    }
}
