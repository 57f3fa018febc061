//! Start-up in one place: [`Application::build`] opens the store, loads the keys, starts the actor
//! graph and binds the listener (port 0 in tests); [`Application::run_until_stopped`] serves until
//! SIGINT or SIGTERM, then closes device sockets with 1001 and drains requests.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App, HttpServer};
use futures_util::StreamExt;

use beepmyphone_actors::batcher::BatcherConfig;
use beepmyphone_actors::clock::{SharedClock, SystemClock};
use beepmyphone_actors::health::Probe;
use beepmyphone_actors::keys::{KeyManager, KeyRing, Rescan};
use beepmyphone_actors::metrics::Metrics;
use beepmyphone_actors::queue::{Drain, QueueConfig};
use beepmyphone_actors::reencrypt::{Progress, Reencryptor};
use beepmyphone_actors::registry::CloseAll;
use beepmyphone_actors::supervisor::{start_graph, GraphSettings};

use crate::api;
use crate::api::auth::authenticate_request;
use crate::api::headers::security_headers;
use crate::api::middleware::{head_as_get, request_context};
use crate::api::ratelimit::{limit_ip, limit_principal};
use crate::api::routes::tokens::mint_api_token;
use crate::api::timing::record_request;
use crate::config::Settings;
use crate::crypto::disk::{algorithm_of, OpenOptions};
use crate::crypto::secrets::ExposeSecret;
use crate::crypto::{Cipher, DataKeyError, DiskDataKeys, KekSource};
use crate::domain::Scope;
use crate::monitoring::health::{
    AuditProbe, DiskProbe, EncryptionProbe, KeysProbe, RedisProbe, StoreProbe, TlsProbe,
};
use crate::redis::Redis;
use crate::security::cleanup;
use crate::security::datakeys::{DataKeyService, ReencryptService};
use crate::security::device_auth::DeviceTokens;
use crate::security::jwt::{JwtKeys, KeyError};
use crate::security::keys::DiskKeyRing;
use crate::security::limits::Limits;
use crate::security::passwords::{Bcrypt, PasswordManager};
use crate::security::ratelimit::BLOCK_SYNC_INTERVAL;
use crate::security::revocation::Revocations;
use crate::security::sessions::SessionManager;
use crate::state::{ApiTokenCache, AppState};
use crate::store::{tokens, Store};
use crate::ws::protocol::close;
use crate::ws::SocketHandles;

/// The file the first admin token is written to.
pub const INITIAL_TOKEN_FILE: &str = "initial-admin-token";

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is wrong.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The store could not be opened.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The keys could not be loaded or created.
    #[error(transparent)]
    Keys(#[from] crate::security::jwt::KeyError),
    /// The data keys do not open (wrong passphrase, missing or corrupt key file, rows under a key
    /// the ring does not hold): exit code 2, nothing changed.
    #[error(transparent)]
    DataKeys(#[from] DataKeyError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The audit log could not be opened (its signing key, its checkpoint file, a gap in its
    /// records).
    #[error("audit log: {0}")]
    Audit(String),
    /// The TLS certificate cannot be served (expired, not matching its key, lacking a host
    /// name, unreadable).
    #[error("tls: {0}")]
    Tls(String),
    /// Something else on disk.
    #[error("{0}")]
    Io(String),
}

/// What tests may swap.
pub struct Options {
    /// The clock (a `ManualClock` in tests).
    pub clock: SharedClock,
    /// The root logger.
    pub log: slog::Logger,
    /// Tests only: hash admin passwords at this bcrypt cost (may be below 10, which settings
    /// refuse). `None` (always, outside tests) uses `auth.bcrypt_cost`.
    #[doc(hidden)]
    pub insecure_bcrypt_cost: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            log: crate::logging::discard(),
            insecure_bcrypt_cost: None,
        }
    }
}

/// A built, bound relay.
pub struct Application {
    port: u16,
    server: Server,
    /// The token-free metrics listener (`metrics.listen`), with its port.
    metrics_server: Option<(u16, Server)>,
    /// The plain-HTTP listener that redirects to HTTPS (`tls.redirect_http_listen`), with its
    /// port.
    redirect_server: Option<(u16, Server)>,
    state: web::Data<AppState>,
    shutdown_timeout: Duration,
}

/// Writes the first admin token if there are no API tokens yet.
fn ensure_initial_token(
    store: &Store,
    data_dir: &Path,
    now: i64,
    audit: &crate::audit::Audit,
    log: &slog::Logger,
) -> Result<(), StartError> {
    let mut conn = store.writer()?;
    if !tokens::list_api(&mut conn, None, 1)
        .map_err(crate::store::StoreError::from)?
        .is_empty()
    {
        return Ok(());
    }
    let path = data_dir.join(INITIAL_TOKEN_FILE);
    let (row, secret) = mint_api_token(&mut conn, "initial admin", Scope::Admin, now)?;
    audit.record(
        beepmyphone_actors::ports::AuditEvent::system(
            beepmyphone_actors::ports::Action::TokenCreated,
            beepmyphone_actors::ports::Outcome::Ok,
        )
        .on(row.id)
        .with_details(serde_json::json!({ "name": "initial admin", "scope": "admin" })),
    );
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| StartError::Io(format!("cannot write {}: {e}", path.display())))?;
    writeln!(file, "{}", secret.expose_secret()).map_err(|e| StartError::Io(e.to_string()))?;
    slog::warn!(log, "first start: wrote an admin API token (mode 0600); keep it safe"; "path" => %path.display());
    Ok(())
}

/// What [`start_key_manager`] started: the snapshot handlers read, the ring (for the health
/// probe) and the manager's address.
type KeyParts = (
    Arc<arc_swap::ArcSwap<JwtKeys>>,
    Arc<dyn KeyRing>,
    actix::Addr<KeyManager>,
);

/// Opens the signing-key ring (creating the first key on first start) and starts the key manager
/// under supervision, counting its restarts into `metrics`. The manager's first step (retiring
/// what is due) is done before this returns.
async fn start_key_manager(
    settings: &Settings,
    clock: &SharedClock,
    metrics: &Metrics,
    log: &slog::Logger,
    (data_keys, reencrypt): (
        Arc<DataKeyService>,
        actix::Recipient<beepmyphone_actors::reencrypt::Wake>,
    ),
    audit: actix::Recipient<beepmyphone_actors::audit::Record>,
) -> Result<KeyParts, StartError> {
    let policy = crate::security::keys::policy(&settings.auth);
    let ring = {
        let (dir, auth, policy) = (settings.keys_dir(), settings.auth.clone(), policy.clone());
        let (now, ring_log) = (clock.now_ms(), log.new(slog::o!("component" => "keys")));
        tokio::task::spawn_blocking(move || {
            DiskKeyRing::open(&dir, &auth.issuer, &auth.audience, &policy, now, ring_log)
        })
        .await
        .map_err(|e| StartError::Io(e.to_string()))?
        .map_err(|e| KeyError(e.to_string()))?
    };
    let keys = ring.snapshot();
    let ring: Arc<dyn KeyRing> = Arc::new(ring);
    let manager = KeyManager::new(
        ring.clone(),
        policy,
        clock.clone(),
        log.new(slog::o!("actor" => "keys")),
    )
    .with_restarts(metrics.actor_restarts.with_label_values(&["keys"]))
    .with_data_keys(data_keys, reencrypt)
    .with_audit(audit)
    .start_supervised();
    manager
        .send(Rescan)
        .await
        .map_err(|e| StartError::Io(e.to_string()))?
        .map_err(|e| KeyError(e.to_string()))?;
    Ok((keys, ring, manager))
}

/// Opens (on first start, creates) the data-key ring, on the blocking pool (PBKDF2 is slow on
/// purpose). Any failure changes nothing on disk.
async fn open_data_keys(
    settings: &Settings,
    now_ms: i64,
) -> Result<(DiskDataKeys, crate::crypto::DataRing), StartError> {
    let source = KekSource::from_settings(&settings.encryption)?;
    let algorithm = algorithm_of(&settings.encryption)?;
    let (dir, iterations) = (settings.keys_dir(), settings.encryption.pbkdf2_iterations);
    tokio::task::spawn_blocking(move || {
        DiskDataKeys::open(
            &dir,
            &OpenOptions {
                source: &source,
                algorithm,
                iterations,
                now_ms,
            },
        )
    })
    .await
    .map_err(|e| StartError::Io(e.to_string()))?
    .map_err(StartError::from)
}

/// Stops start-up if rows are sealed under a key the ring does not hold, or do not open with
/// its keys at all; a ring this start created is removed again, so nothing is left changed.
async fn check_row_keys(
    store: &Store,
    data_keys: DiskDataKeys,
    keys_dir: std::path::PathBuf,
) -> Result<DiskDataKeys, StartError> {
    let cipher = store.cipher()?.clone();
    let (unknown, unopened) = store
        .run(move |conn| {
            Ok((
                crate::store::reencrypt::unknown_keys(conn, &cipher)?,
                crate::store::reencrypt::first_table_that_does_not_open(conn, &cipher)?,
            ))
        })
        .await?;
    let error = match (unknown.first(), unopened) {
        (Some(&(table, key_id)), _) => DataKeyError::RowsUnderUnknownKey {
            table: table.to_owned(),
            key_id,
        },
        (None, Some(table)) => DataKeyError::RowsDoNotOpen {
            table: table.to_owned(),
            dir: keys_dir,
        },
        (None, None) => return Ok(data_keys),
    };
    if data_keys.created_now() {
        data_keys.undo_creation();
    }
    Err(error.into())
}

/// What identity needs: Redis (when configured), the data keys, the password manager, the
/// deny-list and the session manager.
async fn start_identity(
    settings: &Settings,
    store: &Store,
    clock: &SharedClock,
    log: &slog::Logger,
    insecure_bcrypt_cost: Option<u32>,
    redis: Option<Redis>,
) -> Result<(Revocations, SessionManager, PasswordManager), StartError> {
    let auth = settings.auth.clone();
    let cipher = store.cipher()?.clone();
    let passwords = tokio::task::spawn_blocking(move || {
        let bcrypt = match insecure_bcrypt_cost {
            Some(cost) => Bcrypt::new(cost, true),
            None => Bcrypt::new(auth.bcrypt_cost, false),
        }?;
        // Computes the dummy hash for unknown users once (a full bcrypt at the configured cost).
        let passwords = PasswordManager::new(Arc::new(bcrypt), auth.password_concurrency)
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(passwords)
    })
    .await
    .map_err(|e| StartError::Io(e.to_string()))?
    .map_err(StartError::Io)?;
    let revocations = Revocations::new(store.clone(), redis.clone(), clock.clone());
    let sessions = SessionManager::for_backend(
        store.clone(),
        redis,
        cipher,
        clock.clone(),
        &settings.sessions,
        log.new(slog::o!("component" => "sessions")),
    );
    slog::info!(log, "identity ready"; "backend" => revocations.backend_name());
    Ok((revocations, sessions, passwords))
}

impl Application {
    /// Opens everything and binds the listener; does not serve yet.
    pub async fn build(settings: Settings, options: Options) -> Result<Self, StartError> {
        let Options {
            clock,
            log,
            insecure_bcrypt_cost,
        } = options;
        let settings = Arc::new(settings);
        let data_dir = settings.storage.data_dir.clone();
        // The data directory holds notification contents, keys and tokens: owner only, also when
        // an older relay or an operator left it 0755 with 0644 files (SQLite gives -wal/-shm the
        // database's mode, so tighten before opening it), and again once start-up created files.
        let restrict = |when: &str| -> Result<(), StartError> {
            for dir in [data_dir.clone(), settings.keys_dir()] {
                crate::crypto::files::restrict_tree(&dir).map_err(|e| {
                    StartError::Io(format!("cannot restrict {} ({when}): {e}", dir.display()))
                })?;
            }
            Ok(())
        };
        // The port first, before any actor runs: a relay that cannot listen stops with its error
        // alone (actors started and then dropped with the runtime panicked on the way out).
        let addr = settings.listen_addr()?;
        let listener = TcpListener::bind(addr).map_err(|source| StartError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|e| StartError::Io(e.to_string()))?
            .port();
        // The data keys first: a wrong passphrase or a missing key file stops here, before
        // anything on disk is touched.
        let (data_keys, ring) = open_data_keys(&settings, clock.now_ms()).await?;
        restrict("before opening")?;
        let store = Store::open(&data_dir, &settings.storage)?.with_cipher(Cipher::new(ring));
        let data_keys = check_row_keys(&store, data_keys, settings.keys_dir()).await?;
        let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"), crate::GIT_COMMIT));
        store.observe_waits_in(metrics.db_pool_wait_seconds.clone());
        store
            .cipher()?
            .count_failures_in(metrics.crypto_open_failures.clone());
        let reencrypt = Arc::new(Progress::default());
        let data_keys = DataKeyService::new(
            data_keys,
            settings.keys_dir(),
            store.clone(),
            algorithm_of(&settings.encryption)?,
            i64::try_from(settings.sessions.absolute_timeout_seconds)
                .unwrap_or(i64::MAX / 1_000)
                .saturating_mul(1_000),
        )?;
        let reencryptor = Reencryptor::new(
            Arc::new(ReencryptService::new(store.clone())),
            settings.encryption.reencrypt(),
            reencrypt.clone(),
            clock.clone(),
            log.new(slog::o!("actor" => "reencrypt")),
        )
        .with_restarts(metrics.actor_restarts.with_label_values(&["reencrypt"]))
        .start_supervised();
        let audit = crate::audit::start(&settings, &store, &clock, &metrics, &log)
            .await
            .map_err(StartError::Audit)?;
        audit.record(crate::audit::config_loaded(&settings));
        // The certificate before anything listens: an unusable one stops start-up here.
        let tls = crate::tls::prepare(&settings, clock.now_ms())
            .await
            .map_err(|e| StartError::Tls(e.to_string()))?;
        let (keys, ring, key_manager) = start_key_manager(
            &settings,
            &clock,
            &metrics,
            &log,
            (data_keys, reencryptor.recipient()),
            audit.writer().clone().recipient(),
        )
        .await?;
        ensure_initial_token(&store, &data_dir, clock.now_ms(), &audit, &log)?;
        restrict("after start-up")?;
        // One Redis pool (when configured) for revocations, sessions and rate limits.
        let redis = if settings.redis.url.is_empty() {
            None
        } else {
            Some(
                Redis::connect(&settings.redis)
                    .await
                    .map_err(|e| StartError::Io(e.to_string()))?,
            )
        };
        let mut probes: Vec<Arc<dyn Probe>> = vec![
            Arc::new(StoreProbe(store.clone())),
            Arc::new(DiskProbe {
                dir: data_dir.clone(),
                settings: settings.health.clone(),
            }),
            Arc::new(KeysProbe {
                ring,
                manager: key_manager.clone(),
                rotate_every: crate::security::keys::policy(&settings.auth).rotate_every,
                grace: Duration::from_secs(
                    settings.health.key_age_grace_hours.saturating_mul(3_600),
                ),
                clock: clock.clone(),
            }),
        ];
        if let Some(redis) = &redis {
            probes.push(Arc::new(RedisProbe(redis.clone())));
        }
        probes.push(Arc::new(AuditProbe(audit.status().clone())));
        let acceptor = match &tls {
            Some(prepared) => Some(
                prepared
                    .acceptor()
                    .map_err(|e| StartError::Tls(e.to_string()))?,
            ),
            None => None,
        };
        let tls = tls.map(|prepared| {
            prepared.start(
                &settings,
                &clock,
                metrics.clone(),
                audit.writer().clone().recipient(),
                &log,
            )
        });
        if let Some(tls) = &tls {
            probes.push(Arc::new(TlsProbe {
                status: tls.status.clone(),
                clock: clock.clone(),
            }));
        }
        probes.push(Arc::new(EncryptionProbe {
            cipher: store.cipher()?.clone(),
            reencrypt: reencrypt.clone(),
        }));
        let (revocations, sessions, passwords) = start_identity(
            &settings,
            &store,
            &clock,
            &log,
            insecure_bcrypt_cost,
            redis.clone(),
        )
        .await?;
        let cluster_redis = redis.clone();
        // Clustered: the store is PostgreSQL, shared with the other relays on it, and Redis
        // carries presence and wake-ups (src/cluster).
        let node = crate::cluster::new_node_id();
        let clustered = settings.storage.postgres_url().is_some() && redis.is_some();
        let presence = redis.clone().filter(|_| clustered).map(|redis| {
            let ttl =
                u64::try_from(settings.cluster.presence_ttl().as_millis()).unwrap_or(u64::MAX);
            let port: Arc<dyn beepmyphone_actors::ports::ClusterPort> =
                Arc::new(crate::cluster::port::Presence::new(
                    node.clone(),
                    redis,
                    ttl,
                    metrics.clone(),
                    log.new(slog::o!("component" => "cluster")),
                ));
            port
        });
        let limits = Arc::new(Limits::new(
            &settings,
            redis,
            log.new(slog::o!("component" => "ratelimit")),
        ));
        probes.push(Arc::new(limits.limiter.probe()));
        let graph = start_graph(
            GraphSettings {
                queue: QueueConfig {
                    ack_timeout: settings.ack_timeout(),
                    max_in_flight: settings.delivery.max_in_flight_per_device,
                    commit_window: Duration::from_millis(settings.storage.group_commit_window_ms),
                    commit_max_rows: settings.storage.group_commit_max_rows,
                    ..QueueConfig::default()
                },
                batcher: BatcherConfig {
                    window: Duration::from_millis(settings.delivery.batch_window_ms),
                    max_items: settings.delivery.batch_max_items,
                    ..BatcherConfig::default()
                },
                health: settings.health.config(),
                cluster: presence,
            },
            Arc::new(store.clone()),
            probes,
            clock.clone(),
            metrics,
            &log,
        );
        let alerts = crate::monitoring::alerts::start(
            &settings.alerts,
            &graph,
            &clock,
            audit.alert_channel(),
            &log,
        );
        let memory_alerts = alerts.map(actix::Addr::recipient);
        crate::monitoring::memory::start(
            &settings.memory,
            &graph.metrics,
            &clock,
            memory_alerts,
            &log,
        );
        let history = beepmyphone_actors::history::MetricsHistory::new(
            beepmyphone_actors::history::HistoryConfig::default(),
            clock.clone(),
            graph.metrics.clone(),
        )
        .start();
        let socket_handles = web::Data::new(SocketHandles {
            websocket: settings.websocket.clone(),
            clock: clock.clone(),
            log: log.clone(),
            registry: graph.registry.clone(),
            queue: graph.queue.clone(),
            devices: DeviceTokens {
                keys: keys.clone(),
                revocations: revocations.clone(),
                metrics: graph.metrics.clone(),
                clock: clock.clone(),
            },
            limits: limits.clone(),
            metrics: graph.metrics.clone(),
        });
        let cluster = crate::cluster::Cluster::new(
            node,
            cluster_redis,
            clustered,
            settings.cluster.clone(),
            graph.registry.clone(),
            log.new(slog::o!("component" => "cluster")),
        );
        cluster.join(
            graph.queue.clone(),
            store.clone(),
            clock.clone(),
            graph.metrics.clone(),
        );
        if clustered {
            slog::info!(log, "clustered: sharing PostgreSQL and Redis with the other relays"; "node" => cluster.node());
        }
        let state = web::Data::new(AppState {
            cluster,
            settings: settings.clone(),
            store,
            otlp: crate::monitoring::otlp::start(&settings.otlp, &graph.metrics, &log)
                .map_err(|e| StartError::Io(e.to_string()))?,
            graph,
            keys,
            key_manager,
            clock,
            log: log.clone(),
            api_tokens: ApiTokenCache::default(),
            revocations,
            sessions,
            passwords,
            limits,
            reencrypt,
            audit,
            tls,
            history,
            verification: Default::default(),
            streams: Default::default(),
        });
        let workers = match settings.server.workers {
            0 => std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(2),
            n => n,
        };
        // The token-free listener only while metrics are on at all.
        let metrics_server = match settings.metrics.listen.as_str() {
            _ if !settings.metrics.enabled => None,
            "" => None,
            listen => Some(side_listener(listen, |listener, bound| {
                slog::info!(log, "serving metrics without a token"; "addr" => %bound);
                crate::monitoring::metrics::listen(listener, state.scrape())
            })?),
        };
        let record_requests = settings.metrics.enabled;
        let mount_at_root = settings.compat.mount_at_root;
        let app_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(socket_handles.clone())
                .app_data(web::QueryConfig::default().error_handler(api::query_error))
                .app_data(web::PathConfig::default().error_handler(api::path_error))
                // Outermost last: security headers wrap everything; the request context (request
                // id, logger) wraps the limits, which wrap authentication.
                .wrap(from_fn(head_as_get))
                .wrap(from_fn(limit_principal))
                .wrap(from_fn(authenticate_request))
                .wrap(from_fn(limit_ip))
                .wrap(from_fn(request_context))
                // Refusals on dashboard pages become pages (every layer below can refuse).
                .wrap(from_fn(crate::dashboard::errors::html_errors))
                .wrap(from_fn(security_headers))
                .wrap(Condition::new(record_requests, from_fn(record_request)))
                .configure(crate::dashboard::configure)
                .configure(api::configure)
                .configure(|cfg| api::configure_compat_and_fallback(cfg, mount_at_root))
        })
        .workers(workers)
        .max_connections(settings.server.max_connections)
        .client_request_timeout(Duration::from_millis(
            settings.server.client_request_timeout_ms,
        ))
        .client_disconnect_timeout(Duration::from_millis(
            settings.server.client_disconnect_timeout_ms,
        ))
        .keep_alive(Duration::from_secs(settings.server.keep_alive_seconds))
        .backlog(4_096)
        // Frames are small and latency is the point: without it, a frame written while the
        // previous one is unacknowledged (a socket's `hello` right after its 101) may wait for
        // the peer's delayed ACK (up to 40 ms).
        .tcp_nodelay(true)
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout_seconds);
        let server = match acceptor {
            Some(acceptor) => server.listen_openssl(listener, acceptor),
            None => server.listen(listener),
        }
        .map_err(|source| StartError::Bind {
            addr: addr.to_string(),
            source,
        })?
        .run();
        let redirect_server = match settings.tls.redirect_http_listen.as_str() {
            "" => None,
            listen => Some(side_listener(listen, |listener, bound| {
                let public_url = Some(settings.server.public_url.trim_end_matches('/'))
                    .filter(|url| url.starts_with("https://"))
                    .map(str::to_owned);
                slog::info!(log, "redirecting plain HTTP to HTTPS"; "addr" => %bound);
                crate::tls::redirect_listener(listener, public_url, port)
            })?),
        };
        slog::info!(log, "listening"; "addr" => format!("{}:{port}", addr.ip()), "data_dir" => %data_dir.display(), "workers" => workers,
            "tls" => settings.tls.mode.as_str());
        Ok(Self {
            port,
            server,
            metrics_server,
            redirect_server,
            state,
            shutdown_timeout: Duration::from_secs(settings.server.shutdown_timeout_seconds),
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the token-free metrics listener, when `metrics.listen` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_server.as_ref().map(|(port, _)| *port)
    }

    /// The port of the plain-HTTP redirect listener, when `tls.redirect_http_listen` is set.
    pub fn redirect_port(&self) -> Option<u16> {
        self.redirect_server.as_ref().map(|(port, _)| *port)
    }

    /// The shared state (tests reach the actor graph through it).
    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// A handle that stops the server.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped through its handle, or SIGINT/SIGTERM arrives.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let state = self.state.clone();
        let grace = self.shutdown_timeout;
        actix_rt::spawn(async move {
            wait_for_signal().await;
            slog::info!(state.log, "shutting down");
            state.graph.registry.do_send(CloseAll {
                code: close::GOING_AWAY,
                reason: "server shutting down".into(),
            });
            // Let the close frames go out before the workers stop.
            tokio::time::sleep(Duration::from_millis(200).min(grace)).await;
            handle.stop(true).await;
        });
        let cleanup = cleanup::spawn(
            self.state.sessions.clone(),
            self.state.revocations.clone(),
            self.state.clock.clone(),
            Duration::from_secs(self.state.settings.sessions.cleanup_interval_seconds),
            self.state.log.new(slog::o!("component" => "cleanup")),
        );
        let keep = self.state.settings.delivery.keep_finished_seconds;
        let retention = (keep > 0).then(|| {
            crate::store::retention::spawn(
                self.state.store.clone(),
                self.state.clock.clone(),
                Duration::from_secs(keep),
                self.state.log.new(slog::o!("component" => "retention")),
            )
        });
        let block_sync = spawn_block_sync(self.state.clone().into_inner());
        // OTLP reads the registry on its own thread: keep the state gauges fresh for it.
        let gauges = self.state.otlp.is_some().then(|| {
            self.state.scrape().refresh_every(Duration::from_millis(
                self.state.settings.otlp.export_interval_ms,
            ))
        });
        let side_servers: Vec<_> = [self.metrics_server, self.redirect_server]
            .into_iter()
            .flatten()
            .map(|(_, server)| {
                let handle = server.handle();
                (handle, actix_rt::spawn(server))
            })
            .collect();
        let result = self.server.await;
        for (handle, task) in side_servers {
            handle.stop(true).await;
            let _ = task.await; // its own outcome does not change the relay's
        }
        cleanup.abort();
        if let Some(retention) = retention {
            retention.abort();
        }
        block_sync.abort();
        if let Some(gauges) = gauges {
            gauges.abort();
        }
        if let Some(otlp) = &self.state.otlp {
            otlp.shutdown();
        }
        // Audit events still waiting, and a checkpoint covering them.
        match self
            .state
            .audit
            .writer()
            .send(beepmyphone_actors::audit::Flush)
            .timeout(Duration::from_secs(5))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                slog::error!(self.state.log, "audit events could not be written before exit"; "error" => %e)
            }
            Err(_) => slog::warn!(self.state.log, "the audit writer did not flush before exit"),
        }
        // Commit sent and acked marks still waiting for the commit window.
        if self
            .state
            .graph
            .queue
            .send(Drain)
            .timeout(Duration::from_secs(5))
            .await
            .is_err()
        {
            slog::warn!(
                self.state.log,
                "the queue did not drain before exit; unacked marks will be redelivered"
            );
        }
        result
    }
}

/// Binds a side listener (the token-free metrics, the HTTPS redirect) on `listen` and starts
/// `serve` on it; its port and server.
fn side_listener(
    listen: &str,
    serve: impl FnOnce(TcpListener, std::net::SocketAddr) -> std::io::Result<Server>,
) -> Result<(u16, Server), StartError> {
    let bind_error = |source| StartError::Bind {
        addr: listen.to_owned(),
        source,
    };
    let listener = TcpListener::bind(listen).map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((bound.port(), serve(listener, bound).map_err(bind_error)?))
}

/// Reads the IP blocks shared through Redis every [`BLOCK_SYNC_INTERVAL`] of the injected clock
/// (nothing to do on the embedded backend). A failed read keeps the last known blocks and is
/// logged once per outage.
fn spawn_block_sync(state: Arc<AppState>) -> actix_rt::task::JoinHandle<()> {
    actix_rt::spawn(async move {
        if state.limits.limiter.backend_name() != "redis" {
            return;
        }
        let mut ticks = state.clock.interval(BLOCK_SYNC_INTERVAL);
        let mut failing = false;
        while ticks.next().await.is_some() {
            match state.limits.limiter.sync_blocks(state.clock.now_ms()).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    slog::warn!(state.log, "could not read the shared IP blocks from Redis; the last known ones stay in force"; "error" => %e);
                }
                Err(_) => {}
            }
        }
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
