//! A small W3C WebDriver client for end-to-end tests, driving a real headless
//! Chromium through chromedriver's HTTP API with `awc`.
//!
//! [`Browser::start`] spawns its own chromedriver on a free port, opens a
//! headless session with a fresh profile directory, and tears both down again
//! in [`Browser::quit`] (or, if the test panics first, in `Drop`).
//! [`Element`]s are cheap handles that share the session with the browser.
//!
//! Everything here is test code: failures panic with a message naming the
//! command, the HTTP status and chromedriver's error message, and waiting
//! helpers panic naming what they waited for, the current URL and an excerpt
//! of the page text.
//!
//! Programs used (override with environment variables):
//! - `BEEP_CHROMEDRIVER` (default `/usr/bin/chromedriver`)
//! - `BEEP_CHROMIUM` (default `/usr/lib/chromium/chromium` if it exists,
//!   else `/usr/bin/chromium`)
//!
//! On Debian both come from `apt-get install chromium chromium-driver`.

// As a module of an integration-test crate, not every test binary uses every helper.
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use awc::http::Method;
use base64::Engine as _;
use serde_json::{json, Value};

/// The key under which WebDriver serialises element references.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long the waiting helpers wait before panicking.
const WAIT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the waiting helpers poll.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long to wait for a freshly spawned chromedriver to report ready.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body accepted (screenshots are several MB of base64).
const BODY_LIMIT: usize = 32 * 1024 * 1024;
/// How to install the programs this module needs.
const INSTALL_HINT: &str = "install them with `apt-get install chromium chromium-driver`";

/// A failed WebDriver command, as reported by chromedriver (or by the transport).
#[derive(Debug)]
struct WdError {
    /// HTTP status, or 0 when the request never got a response.
    status: u16,
    /// The WebDriver error code (`value.error`), e.g. `no such element`.
    error: String,
    /// The human-readable message (`value.message`).
    message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}: {}", self.status, self.error, self.message)
    }
}

/// State shared by a [`Browser`] and all its [`Element`]s.
struct Inner {
    /// HTTP client talking to chromedriver.
    client: awc::Client,
    /// chromedriver's base URL, e.g. `http://127.0.0.1:9515`.
    driver_url: String,
    /// The WebDriver session id.
    session_id: String,
    /// The chromedriver process; `None` once it has been killed.
    child: RefCell<Option<Child>>,
    /// Fresh directory holding the Chromium profile and chromedriver's log.
    temp_dir: PathBuf,
    /// Whether the session has already been deleted.
    session_closed: Cell<bool>,
}

impl Inner {
    /// Sends one WebDriver command (`path` relative to the session, e.g.
    /// `/url`) and returns `value`.
    async fn try_cmd(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WdError> {
        let url = format!("{}/session/{}{}", self.driver_url, self.session_id, path);
        raw_request(&self.client, method, &url, body).await
    }

    /// Like [`Inner::try_cmd`] but panics on any error.
    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let what = format!("{method} {path}");
        match self.try_cmd(method, path, body).await {
            Ok(v) => v,
            Err(e) => panic!("WebDriver command {what} failed: {e}"),
        }
    }

    /// Runs a synchronous script, returning its result or the error.
    async fn try_execute(&self, script: &str, args: Vec<Value>) -> Result<Value, WdError> {
        self.try_cmd(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The current URL and the first few hundred characters of the page text,
    /// for timeout messages. Never panics.
    async fn page_summary(&self) -> String {
        let url = match self.try_cmd(Method::GET, "/url", None).await {
            Ok(v) => v.as_str().unwrap_or_default().to_string(),
            Err(e) => format!("<unknown: {e}>"),
        };
        let text = match self
            .try_execute(
                "return document.body ? document.body.innerText.slice(0, 600) : '<no body>';",
                vec![],
            )
            .await
        {
            Ok(v) => v.as_str().unwrap_or_default().to_string(),
            Err(e) => format!("<unknown: {e}>"),
        };
        format!("current URL: {url}\npage text excerpt:\n{text}")
    }

    /// Deletes the session (blocking, for `Drop`) if still open, kills
    /// chromedriver and removes the temp dir. Never panics.
    fn shutdown_blocking(&self) {
        if !self.session_closed.replace(true) {
            blocking_delete(&self.driver_url, &format!("/session/{}", self.session_id));
        }
        if let Some(mut child) = self.child.borrow_mut().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.temp_dir);
    }
}

/// A headless Chromium session driven through its own chromedriver process.
///
/// Create it with [`Browser::start`] and end it with [`Browser::quit`]; if a
/// test panics first, `Drop` deletes the session and kills chromedriver.
pub struct Browser {
    /// Shared session state, also held by every [`Element`].
    inner: Rc<Inner>,
}

/// A reference to one DOM element of the current page.
///
/// Cheap to clone; it does not borrow the [`Browser`]. Using it after the page
/// navigated away panics with chromedriver's `stale element reference` error.
#[derive(Clone)]
pub struct Element {
    /// Shared session state.
    inner: Rc<Inner>,
    /// The WebDriver element id.
    id: String,
}

impl std::fmt::Debug for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Element").field("id", &self.id).finish()
    }
}

/// Sends one HTTP request to chromedriver and unwraps the `value` field.
async fn raw_request(
    client: &awc::Client,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, WdError> {
    let req = client.request(method, url);
    let sent = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    };
    let mut resp = sent.map_err(|e| WdError {
        status: 0,
        error: "request failed".into(),
        message: e.to_string(),
    })?;
    let status = resp.status();
    let bytes = resp.body().limit(BODY_LIMIT).await.map_err(|e| WdError {
        status: status.as_u16(),
        error: "reading response body failed".into(),
        message: e.to_string(),
    })?;
    let parsed: Value = serde_json::from_slice(&bytes).map_err(|e| WdError {
        status: status.as_u16(),
        error: "response is not JSON".into(),
        message: format!(
            "{e}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        ),
    })?;
    let value = parsed.get("value").cloned().unwrap_or(Value::Null);
    if status.is_success() {
        Ok(value)
    } else {
        Err(WdError {
            status: status.as_u16(),
            error: value
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown error")
                .to_string(),
            message: value
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("<no message>")
                .to_string(),
        })
    }
}

/// Finds all elements matching `css`, without waiting.
async fn try_find_all(inner: &Rc<Inner>, css: &str) -> Result<Vec<Element>, WdError> {
    let v = inner
        .try_cmd(
            Method::POST,
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        )
        .await?;
    let list = v.as_array().cloned().unwrap_or_default();
    Ok(list
        .iter()
        .map(|e| Element {
            inner: inner.clone(),
            id: element_id(e)
                .unwrap_or_else(|| panic!("chromedriver returned a non-element for {css:?}: {e}")),
        })
        .collect())
}

/// Extracts the element id from a serialised element reference.
fn element_id(v: &Value) -> Option<String> {
    v.get(ELEMENT_KEY)
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Sends a blocking `DELETE path` over plain HTTP/1.1 (used from `Drop`,
/// where nothing async can run). Errors are ignored.
fn blocking_delete(driver_url: &str, path: &str) {
    let Some(addr) = driver_url.strip_prefix("http://") else {
        return;
    };
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let req = format!(
        "DELETE {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(req.as_bytes()).is_err() {
        return;
    }
    // Read just the response (chromedriver may keep the connection open, so
    // reading to EOF would hang until the read timeout).
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Resolves a program name or path, panicking with an install hint if absent.
fn require_program(path: &str, what: &str, env_var: &str) -> PathBuf {
    let p = Path::new(path);
    if p.components().count() > 1 {
        if p.is_file() {
            return p.to_path_buf();
        }
    } else if let Some(found) = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(path))
        .find(|c| c.is_file())
    {
        return found;
    }
    panic!("{what} not found at {path:?} (set {env_var} to override); {INSTALL_HINT}");
}

/// The last lines of a log file, for panic messages.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Polls `probe` every [`POLL_INTERVAL`] until it yields `Some`, or panics
/// after [`WAIT_TIMEOUT`] with `what` and a summary of the page.
async fn poll_until<T, F, Fut>(inner: &Inner, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, WdError>>,
{
    let deadline = Instant::now() + WAIT_TIMEOUT;
    let mut last_error = None;
    loop {
        match probe().await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            let summary = inner.page_summary().await;
            let err = last_error
                .map(|e| format!("\nlast error: {e}"))
                .unwrap_or_default();
            panic!("timed out after {WAIT_TIMEOUT:?} waiting for {what}{err}\n{summary}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

impl Browser {
    /// Spawns chromedriver (env `BEEP_CHROMEDRIVER`, default
    /// `/usr/bin/chromedriver`) on a free port and opens a headless session
    /// with a `width`×`height` window and a fresh profile directory.
    ///
    /// The Chromium binary comes from env `BEEP_CHROMIUM`, defaulting to
    /// `/usr/lib/chromium/chromium` if it exists, else `/usr/bin/chromium`.
    /// Panics, naming the missing program and how to install it
    /// (`apt-get install chromium chromium-driver`), if either is absent.
    pub async fn start(width: u32, height: u32) -> Browser {
        let driver_path =
            std::env::var("BEEP_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let driver = require_program(&driver_path, "chromedriver", "BEEP_CHROMEDRIVER");
        let chromium_path = std::env::var("BEEP_CHROMIUM").unwrap_or_else(|_| {
            if Path::new("/usr/lib/chromium/chromium").is_file() {
                "/usr/lib/chromium/chromium".into()
            } else {
                "/usr/bin/chromium".into()
            }
        });
        let chromium = require_program(&chromium_path, "Chromium", "BEEP_CHROMIUM");

        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let temp_dir = std::env::temp_dir().join(format!(
            "beep-browser-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let profile_dir = temp_dir.join("profile");
        std::fs::create_dir_all(&profile_dir).unwrap_or_else(|e| {
            panic!(
                "cannot create browser temp dir {}: {e}",
                profile_dir.display()
            )
        });
        let log_path = temp_dir.join("chromedriver.log");

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("cannot bind a free local port for chromedriver");
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run chromedriver {}: {e}; {INSTALL_HINT}",
                    driver.display()
                )
            });

        let client = awc::Client::builder()
            .timeout(Duration::from_secs(60))
            .finish();
        let driver_url = format!("http://127.0.0.1:{port}");
        // Until the session exists, `Inner` cleans up through this guard.
        let mut inner = Inner {
            client,
            driver_url,
            session_id: String::new(),
            child: RefCell::new(Some(child)),
            temp_dir,
            session_closed: Cell::new(true),
        };
        let guard = StartGuard(Some(&inner));

        let deadline = Instant::now() + DRIVER_START_TIMEOUT;
        loop {
            let status = raw_request(
                &inner.client,
                Method::GET,
                &format!("{}/status", inner.driver_url),
                None,
            )
            .await;
            if let Ok(v) = &status {
                if v.get("ready").and_then(Value::as_bool) == Some(true) {
                    break;
                }
            }
            let exited = inner
                .child
                .borrow_mut()
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(code) = exited {
                panic!(
                    "chromedriver {} exited with {code} before becoming ready; log:\n{}",
                    driver.display(),
                    log_tail(&log_path)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "chromedriver {} not ready on port {port} after {DRIVER_START_TIMEOUT:?} (last /status: {status:?}); log:\n{}",
                    driver.display(),
                    log_tail(&log_path)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }

        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "acceptInsecureCerts": true,
                    "goog:loggingPrefs": { "browser": "ALL" },
                    "goog:chromeOptions": {
                        "binary": chromium.to_string_lossy(),
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            format!("--window-size={width},{height}"),
                            format!("--user-data-dir={}", profile_dir.display()),
                        ]
                    }
                }
            }
        });
        let created = raw_request(
            &inner.client,
            Method::POST,
            &format!("{}/session", inner.driver_url),
            Some(caps),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot create a Chromium session ({}) via chromedriver: {e}; chromedriver log:\n{}",
                chromium.display(),
                log_tail(&log_path)
            )
        });
        let session_id = created
            .get("sessionId")
            .and_then(Value::as_str)
            .unwrap_or_else(|| {
                panic!("chromedriver's new-session reply has no sessionId: {created}")
            })
            .to_string();
        drop(guard);
        inner.session_id = session_id;
        inner.session_closed.set(false);
        Browser {
            inner: Rc::new(inner),
        }
    }

    /// Navigates to `url` and waits for the page load to complete.
    pub async fn goto(&self, url: &str) {
        self.inner
            .cmd(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The URL of the current page.
    pub async fn current_url(&self) -> String {
        let v = self.inner.cmd(Method::GET, "/url", None).await;
        v.as_str()
            .unwrap_or_else(|| panic!("GET /url returned a non-string: {v}"))
            .to_string()
    }

    /// The current page's `<title>`.
    pub async fn title(&self) -> String {
        let v = self.inner.cmd(Method::GET, "/title", None).await;
        v.as_str()
            .unwrap_or_else(|| panic!("GET /title returned a non-string: {v}"))
            .to_string()
    }

    /// Resizes the window to `width`×`height` CSS pixels (in headless mode the
    /// viewport, `window.innerWidth`, follows), e.g. 390×844 for a phone.
    pub async fn set_window_size(&self, width: u32, height: u32) {
        self.inner
            .cmd(
                Method::POST,
                "/window/rect",
                Some(json!({ "width": width, "height": height })),
            )
            .await;
    }

    /// Opens a new tab and returns its window handle (the current tab stays current).
    pub async fn new_tab(&self) -> String {
        let v = self
            .inner
            .cmd(Method::POST, "/window/new", Some(json!({ "type": "tab" })))
            .await;
        v.get("handle")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("POST /window/new returned no handle: {v}"))
            .to_string()
    }

    /// The current tab's window handle.
    pub async fn window_handle(&self) -> String {
        let v = self.inner.cmd(Method::GET, "/window", None).await;
        v.as_str()
            .unwrap_or_else(|| panic!("GET /window returned a non-string: {v}"))
            .to_string()
    }

    /// Makes the tab with `handle` the current one.
    pub async fn switch_to(&self, handle: &str) {
        self.inner
            .cmd(Method::POST, "/window", Some(json!({ "handle": handle })))
            .await;
    }

    /// Waits (polling every 50 ms, up to 15 s) for an element matching the CSS
    /// selector and returns the first one; on timeout panics naming the
    /// selector, the current URL and an excerpt of the page text.
    pub async fn find(&self, css: &str) -> Element {
        let inner = &self.inner;
        poll_until(inner, &format!("an element matching {css:?}"), || async {
            let r = inner
                .try_cmd(
                    Method::POST,
                    "/element",
                    Some(json!({ "using": "css selector", "value": css })),
                )
                .await;
            match r {
                Ok(v) => Ok(Some(Element {
                    inner: self.inner.clone(),
                    id: element_id(&v).unwrap_or_else(|| {
                        panic!("chromedriver returned a non-element for {css:?}: {v}")
                    }),
                })),
                Err(e) if e.error == "no such element" => Ok(None),
                Err(e) if e.error == "invalid selector" => {
                    panic!("invalid CSS selector {css:?}: {}", e.message)
                }
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// All elements currently matching the CSS selector (no waiting; may be empty).
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        match try_find_all(&self.inner, css).await {
            Ok(v) => v,
            Err(e) => panic!("WebDriver command POST /elements for {css:?} failed: {e}"),
        }
    }

    /// Whether an element matching the CSS selector exists right now (no waiting).
    pub async fn exists(&self, css: &str) -> bool {
        !self.find_all(css).await.is_empty()
    }

    /// Waits (up to 15 s) until an element matching `css` has rendered text
    /// (`innerText`, or `textContent` if not rendered) containing `needle`,
    /// and returns that element.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> Element {
        let inner = &self.inner;
        let script = "for (const e of document.querySelectorAll(arguments[0])) { \
                        const t = e.innerText || e.textContent || ''; \
                        if (t.includes(arguments[1])) return e; } \
                      return null;";
        poll_until(
            inner,
            &format!("an element matching {css:?} with text containing {needle:?}"),
            || async {
                let v = inner
                    .try_execute(script, vec![json!(css), json!(needle)])
                    .await?;
                Ok(element_id(&v).map(|id| Element {
                    inner: self.inner.clone(),
                    id,
                }))
            },
        )
        .await
    }

    /// Waits (up to 15 s) until no element matches the CSS selector.
    pub async fn wait_gone(&self, css: &str) {
        let inner = &self.inner;
        poll_until(inner, &format!("no element to match {css:?}"), || async {
            Ok(try_find_all(inner, css).await?.is_empty().then_some(()))
        })
        .await
    }

    /// Waits (up to 15 s) until the current URL's path and query (e.g.
    /// `/items?page=2`; the fragment is dropped) satisfy `f`, e.g. after a form
    /// post redirect. `what` describes the expectation for the panic message.
    pub async fn wait_for_path(&self, what: &str, f: impl Fn(&str) -> bool) {
        let inner = &self.inner;
        let f = &f;
        poll_until(inner, &format!("the URL path to be {what}"), || async {
            let v = inner.try_cmd(Method::GET, "/url", None).await?;
            let path = path_and_query(v.as_str().unwrap_or_default());
            Ok(f(&path).then_some(()))
        })
        .await
    }

    /// Runs `script` as a function body in the page (`arguments[i]` are the
    /// `args`; elements are passed/returned as WebDriver element references)
    /// and returns its result.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        match self.inner.try_execute(script, args).await {
            Ok(v) => v,
            Err(e) => panic!("executing script failed: {e}\nscript: {script}"),
        }
    }

    /// Writes a PNG screenshot of the viewport to `path`, creating parent dirs.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.inner.cmd(Method::GET, "/screenshot", None).await;
        write_png(path, &v);
    }

    /// Writes a PNG screenshot of the whole page (beyond the viewport) to
    /// `path`, creating parent dirs. Uses the CDP `Page.captureScreenshot`.
    pub async fn screenshot_full_page(&self, path: &Path) {
        let metrics = self.cdp("Page.getLayoutMetrics", json!({})).await;
        let size = &metrics["cssContentSize"];
        let (w, h) = (size["width"].as_f64(), size["height"].as_f64());
        let (Some(w), Some(h)) = (w, h) else {
            panic!("Page.getLayoutMetrics returned no cssContentSize: {metrics}");
        };
        let shot = self
            .cdp(
                "Page.captureScreenshot",
                json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": { "x": 0, "y": 0, "width": w.ceil(), "height": h.ceil(), "scale": 1 }
                }),
            )
            .await;
        write_png(path, &shot["data"]);
    }

    /// Sends a Chrome DevTools Protocol command through chromedriver's
    /// `goog/cdp/execute` passthrough and returns its result.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.inner
            .cmd(
                Method::POST,
                "/goog/cdp/execute",
                Some(json!({ "cmd": cmd, "params": params })),
            )
            .await
    }

    /// Registers, for every later page load in this tab, a script that records
    /// Content-Security-Policy violations (`securitypolicyviolation` events) as
    /// `"<violatedDirective> <blockedURI>"` strings in `window.__cspViolations`.
    /// Read them with [`Browser::csp_violations`].
    pub async fn record_csp_violations(&self) {
        let source = "(() => { \
            if (window.__cspViolations) return; \
            window.__cspViolations = []; \
            document.addEventListener('securitypolicyviolation', (e) => { \
              window.__cspViolations.push(e.violatedDirective + ' ' + (e.blockedURI || '<none>')); \
            }, true); })();";
        self.cdp(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": source }),
        )
        .await;
    }

    /// The CSP violations recorded on the current page (see
    /// [`Browser::record_csp_violations`]), after letting already-queued
    /// violation events fire (~100 ms). Empty if recording was not enabled
    /// before the page loaded.
    pub async fn csp_violations(&self) -> Vec<String> {
        let v = self
            .inner
            .cmd(
                Method::POST,
                "/execute/async",
                Some(json!({
                    "script": "const done = arguments[arguments.length - 1]; \
                               setTimeout(() => done(window.__cspViolations || []), 100);",
                    "args": []
                })),
            )
            .await;
        string_list(&v, "CSP violations")
    }

    /// URLs of every resource the current page loaded: the document URL
    /// followed by `performance.getEntriesByType('resource')` names.
    pub async fn loaded_resources(&self) -> Vec<String> {
        let v = self
            .execute(
                "return [location.href].concat(performance.getEntriesByType('resource').map((e) => e.name));",
                vec![],
            )
            .await;
        string_list(&v, "loaded resources")
    }

    /// Browser console messages at level `SEVERE` (console.error, uncaught
    /// exceptions, failed resource loads, CSP reports) since the last call,
    /// read through chromedriver's `POST /session/{id}/se/log` (`goog:loggingPrefs`
    /// is set at session start). Returns an empty `Vec` if this chromedriver
    /// does not support the log endpoint.
    pub async fn console_errors(&self) -> Vec<String> {
        let body = json!({ "type": "browser" });
        let mut result = self
            .inner
            .try_cmd(Method::POST, "/se/log", Some(body.clone()))
            .await;
        if matches!(&result, Err(e) if e.error == "unknown command" || e.status == 404 || e.status == 405)
        {
            result = self.inner.try_cmd(Method::POST, "/log", Some(body)).await;
        }
        let entries = match result {
            Ok(v) => v,
            Err(e) if e.error == "unknown command" || e.status == 404 || e.status == 405 => {
                return Vec::new()
            }
            Err(e) => panic!("reading the browser console log failed: {e}"),
        };
        entries
            .as_array()
            .map(|list| {
                list.iter()
                    .filter(|e| e["level"].as_str() == Some("SEVERE"))
                    .map(|e| e["message"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ends the session (closing Chromium), kills chromedriver and removes the
    /// temporary profile directory.
    pub async fn quit(self) {
        if !self.inner.session_closed.replace(true) {
            if let Err(e) = self.inner.try_cmd(Method::DELETE, "", None).await {
                eprintln!("warning: deleting the WebDriver session failed: {e}");
            }
        }
        // `Drop` kills chromedriver and removes the temp dir.
    }
}

impl Drop for Browser {
    /// Deletes the session if [`Browser::quit`] was not called (e.g. the test
    /// panicked), kills chromedriver and removes the temp dir.
    fn drop(&mut self) {
        self.inner.shutdown_blocking();
    }
}

/// Cleans up chromedriver if [`Browser::start`] panics half-way.
struct StartGuard<'a>(Option<&'a Inner>);

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(inner) = self.0.take() {
                inner.shutdown_blocking();
            }
        }
    }
}

/// Decodes a base64 PNG and writes it to `path`, creating parent dirs.
fn write_png(path: &Path, b64: &Value) {
    let b64 = b64
        .as_str()
        .unwrap_or_else(|| panic!("screenshot reply is not a base64 string: {b64}"));
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("screenshot reply is not valid base64: {e}"));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("cannot create screenshot dir {}: {e}", parent.display()));
    }
    std::fs::write(path, png)
        .unwrap_or_else(|e| panic!("cannot write screenshot {}: {e}", path.display()));
}

/// Converts a JSON array of strings into a `Vec<String>`, panicking otherwise.
fn string_list(v: &Value, what: &str) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected a JSON array, got {v}"))
        .iter()
        .map(|s| match s {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// The path and query of an absolute URL (`http://h:1/a?b#c` → `/a?b`).
fn path_and_query(url: &str) -> String {
    let without_fragment = url.split('#').next().unwrap_or_default();
    match without_fragment.find("://") {
        Some(i) => {
            let rest = &without_fragment[i + 3..];
            match rest.find('/') {
                Some(j) => rest[j..].to_string(),
                None => "/".to_string(),
            }
        }
        None => without_fragment.to_string(),
    }
}

impl Element {
    /// The WebDriver element id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sends a command about this element (`path` relative to the element).
    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        self.inner
            .cmd(method, &format!("/element/{}{}", self.id, path), body)
            .await
    }

    /// Clicks the element (scrolling it into view first); panics if it is
    /// hidden or covered by another element.
    pub async fn click(&self) {
        self.cmd(Method::POST, "/click", Some(json!({}))).await;
    }

    /// The element's rendered text.
    pub async fn text(&self) -> String {
        let v = self.cmd(Method::GET, "/text", None).await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// Types `text` into the element (appending to its current value).
    pub async fn type_text(&self, text: &str) {
        self.cmd(Method::POST, "/value", Some(json!({ "text": text })))
            .await;
    }

    /// Clears an input or textarea.
    pub async fn clear(&self) {
        self.cmd(Method::POST, "/clear", Some(json!({}))).await;
    }

    /// The value of the HTML attribute `name`, or `None` if absent.
    pub async fn attribute(&self, name: &str) -> Option<String> {
        match self
            .cmd(Method::GET, &format!("/attribute/{name}"), None)
            .await
        {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => Some(other.to_string()),
        }
    }

    /// The value of the DOM property `name` (e.g. `value`, `checked`), or `null`.
    pub async fn property(&self, name: &str) -> Value {
        self.cmd(Method::GET, &format!("/property/{name}"), None)
            .await
    }

    /// For a `<select>`: chooses the option whose `value` is `value` by
    /// clicking it (which fires `input`/`change`); panics, listing the
    /// available values, if there is none.
    pub async fn select(&self, value: &str) {
        let found = self
            .inner
            .try_execute(
                "const s = arguments[0]; \
                 if (!s.options) return { error: 'element is a <' + s.tagName.toLowerCase() + '>, not a <select>' }; \
                 const o = Array.from(s.options).find((o) => o.value === arguments[1]); \
                 return o ? { option: o } : { error: 'no option with that value; available: ' + \
                   JSON.stringify(Array.from(s.options).map((o) => o.value)) };",
                vec![json!({ ELEMENT_KEY: self.id }), json!(value)],
            )
            .await
            .unwrap_or_else(|e| panic!("select({value:?}): looking up the option failed: {e}"));
        let option = found.get("option").and_then(element_id).unwrap_or_else(|| {
            panic!(
                "select({value:?}): {}",
                found["error"].as_str().unwrap_or("failed")
            )
        });
        self.inner
            .cmd(
                Method::POST,
                &format!("/element/{option}/click"),
                Some(json!({})),
            )
            .await;
    }

    /// Whether the element is displayed (visible).
    pub async fn is_displayed(&self) -> bool {
        let v = self.cmd(Method::GET, "/displayed", None).await;
        v.as_bool().unwrap_or(false)
    }
}
