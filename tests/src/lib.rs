//! Shared harness for Vigil's end-to-end tests.
//!
//! [`TestApp`] builds the real host (real SQLite file in a temp dir, or a fresh database on a
//! real PostgreSQL — see [`postgres`] — and the real compiled policy) and drives the real router
//! over HTTP semantics without a socket; [`on_both_backends!`] runs a test once per backend;
//! [`Agent`] signs heartbeats exactly as an agent does; [`misbehaving_policy`] builds the test
//! guest from source. [`Cli`] and [`ServeProcess`] run the real binary (see [`process`]);
//! [`wait_until`] is the one polling loop (see [`wait`]).

pub mod postgres;

/// Runs `$body` with `$pool` bound to the pool of whichever backend `$db` (a
/// [`vigil::store::Db`]) holds: tests inspect tables with SQL both backends accept. The host
/// keeps its own copy private to `store/`.
#[macro_export]
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            vigil::store::Db::Sqlite($pool) => $body,
            vigil::store::Db::Postgres($pool) => $body,
        }
    };
}
pub mod browser;
pub mod process;
pub mod tls;
pub mod wait;

pub use process::{Cli, Run, ServeProcess};
pub use wait::wait_until;

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};
use tower::ServiceExt;
use vigil::api::AppState;
use vigil::clock::format_rfc3339_ms;
use vigil::config::Config;
use vigil::ingest::signature::sign_body;
use vigil::store::Store;

/// The admin token every test app uses.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// Which database a test's hosts use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    /// A SQLite file in the test's temp dir (the default).
    Sqlite,
    /// A fresh database on the test PostgreSQL server ([`postgres::server_url`]).
    Postgres,
}

tokio::task_local! {
    /// The backend of the test running in this task (set by [`TestBackend::run`]).
    static BACKEND: TestBackend;
}

impl TestBackend {
    /// The backend of the running test: SQLite unless [`TestBackend::run`] says otherwise.
    pub fn current() -> Self {
        BACKEND.try_with(|b| *b).unwrap_or(TestBackend::Sqlite)
    }

    /// Runs `test` with every [`TestApp`] it spawns on this backend. A PostgreSQL run without a
    /// PostgreSQL server is skipped (see [`postgres::server_url`]).
    pub async fn run(self, test: impl Future<Output = ()>) {
        if self == TestBackend::Postgres && postgres::server_url().is_none() {
            return;
        }
        BACKEND.scope(self, test).await;
    }

    /// The storage URL of the test database that belongs to `dir`.
    pub async fn database_url(self, dir: &Path) -> String {
        match self {
            TestBackend::Sqlite => format!("sqlite://{}", dir.join("vigil.db").display()),
            TestBackend::Postgres => {
                let server = postgres::server_url().expect("checked by TestBackend::run");
                // One database per temp dir, so a restart on the same dir finds its data.
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                dir.hash(&mut hasher);
                let name = format!("vigil_test_{:016x}", hasher.finish());
                postgres::ensure_database(server, &name).await
            }
        }
    }
}

/// Defines, for each listed `async fn name()`, a module `name` with two tests, `sqlite` and
/// `postgres`, that run it on each backend (`cargo test postgres` runs the PostgreSQL half).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                $crate::TestBackend::Sqlite.run(super::$name()).await;
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                $crate::TestBackend::Postgres.run(super::$name()).await;
            }
        }
    )*};
}

/// A running host: router, state and its database.
pub struct TestApp {
    /// The real router.
    pub router: Router,
    /// The state behind it.
    pub state: AppState,
    /// The store behind the trait.
    pub store: Store,
    /// The opened store (raw SQL: [`TestApp::scalar`], [`TestApp::execute`]).
    pub db: Store,
    /// Where the database lives; kept alive with the app.
    pub dir: std::sync::Arc<tempfile::TempDir>,
    writer: tokio::task::JoinHandle<()>,
    dispatcher: tokio::task::JoinHandle<()>,
    served: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    /// The config file watch of [`TestApp::spawn_from_file`].
    pub config_watcher: Option<vigil::config::reload::ConfigWatcher>,
}

/// A decoded HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// `Content-Type`.
    pub content_type: String,
    /// `Retry-After`, if any.
    pub retry_after: Option<String>,
    /// JSON body (or a string of the raw text).
    pub body: Value,
}

impl Answer {
    /// The problem `code`, if any.
    pub fn code(&self) -> &str {
        self.body.get("code").and_then(Value::as_str).unwrap_or("")
    }
}

/// A base configuration for tests: temp SQLite file, admin token, no rate limits, defaults
/// otherwise.
pub fn test_config(dir: &Path) -> Config {
    let mut config = Config::from_toml("").expect("empty config is valid");
    config.storage.url = format!("sqlite://{}", dir.join("vigil.db").display());
    config.admin.token = Some(ADMIN_TOKEN.into());
    // Tests post in bursts from one (or no) address; the ones about rate limits set their own.
    config.rate_limit.per_server_per_minute = 0;
    config.rate_limit.per_ip_per_minute = 0;
    config
}

impl TestApp {
    /// A host with the default configuration and the bundled default policy.
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A host with a configuration adjusted by `adjust`.
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::spawn_in(dir, adjust).await
    }

    /// A host on the database in `dir` (to restart a host on the same data).
    pub async fn spawn_in(
        dir: std::sync::Arc<tempfile::TempDir>,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = test_config(dir.path());
        config.storage.url = TestBackend::current().database_url(dir.path()).await;
        adjust(&mut config);
        let host = vigil::build(config).await.expect("host builds");
        Self::from_host(host, dir)
    }

    /// A host configured from the file at `path` (which must name a database), reloading it
    /// on every edit as `vigil serve --config` does.
    pub async fn spawn_from_file(dir: std::sync::Arc<tempfile::TempDir>, path: &Path) -> Self {
        let config = Config::load(path).expect("config file is valid");
        let host = vigil::build_with(config, Some(path))
            .await
            .expect("host builds");
        Self::from_host(host, dir)
    }

    fn from_host(host: vigil::Host, dir: std::sync::Arc<tempfile::TempDir>) -> Self {
        let router = vigil::api::app(host.state.clone());
        Self {
            router,
            store: host.state.store.clone(),
            state: host.state,
            db: host.store,
            dir,
            writer: host.writer,
            dispatcher: host.dispatcher,
            served: None,
            config_watcher: host.config_watcher,
        }
    }

    /// Serves the real router on `127.0.0.1:0` (for streams that need a socket) and returns
    /// its address. [`TestApp::stop`] shuts it down gracefully: drop stream clients first.
    pub async fn serve(&mut self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds loopback");
        let address = listener.local_addr().expect("bound address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = self.router.clone();
        let task = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .expect("serves");
        });
        self.served = Some((stop, task));
        address
    }

    /// Stops the host: drops every handle and waits for the writer to finish its queue.
    pub async fn stop(self) -> std::sync::Arc<tempfile::TempDir> {
        let Self {
            router,
            state,
            writer,
            dir,
            dispatcher,
            served,
            config_watcher,
            ..
        } = self;
        drop(config_watcher);
        state.live.close();
        if let Some((stop, task)) = served {
            let _ = stop.send(());
            task.await.expect("server ends cleanly");
        }
        drop(router);
        drop(state);
        writer.await.expect("writer ends cleanly");
        dispatcher.await.expect("alert dispatcher ends cleanly");
        dir
    }

    /// Sends a request with raw bytes.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        token: Option<&str>,
    ) -> Answer {
        let request = request(method, path, token).body(Body::from(body));
        self.send(request.expect("valid request")).await
    }

    /// Sends a request built by the test (own headers, a peer address) through the router and
    /// reads the whole answer.
    pub async fn send(&self, request: Request<Body>) -> Answer {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router answers");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            content_type: headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            retry_after: headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
        }
    }

    /// Sends raw bytes as if from the TCP peer `peer` (`ip:port`), with extra headers.
    pub async fn send_from(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        peer: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let peer: std::net::SocketAddr = peer.parse().expect("socket address");
        let mut request = request(method, path, None);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut request = request.body(Body::from(body)).expect("valid request");
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        self.send(request).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.send_raw(Method::GET, path, Vec::new(), None).await
    }

    /// `POST path` with a JSON body and the admin token.
    pub async fn admin_post(&self, path: &str, body: &Value) -> Answer {
        self.send_raw(
            Method::POST,
            path,
            body.to_string().into_bytes(),
            Some(ADMIN_TOKEN),
        )
        .await
    }

    /// Posts a heartbeat body (already signed).
    pub async fn post_heartbeat(&self, body: &Value) -> Answer {
        self.post_heartbeat_raw(body.to_string().into_bytes()).await
    }

    /// Posts raw heartbeat bytes.
    pub async fn post_heartbeat_raw(&self, bytes: Vec<u8>) -> Answer {
        self.send_raw(Method::POST, "/v1/agent/heartbeat", bytes, None)
            .await
    }

    /// Registers `agent`'s server through the admin API.
    pub async fn register(&self, agent: &Agent) -> Answer {
        let answer = self
            .admin_post(
                "/v1/admin/servers",
                &json!({"server_id": agent.server_id, "public_key": agent.public_key_b64()}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
        answer
    }

    /// Marks a server verified.
    pub async fn verify(&self, server_id: &str) {
        let answer = self
            .admin_post(&format!("/v1/admin/servers/{server_id}/verify"), &json!({}))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }

    /// The directory entry of a server.
    pub async fn server(&self, server_id: &str) -> Value {
        let answer = self.get(&format!("/v1/servers/{server_id}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
        answer.body
    }

    /// Rows in a table.
    pub async fn count(&self, table: &str) -> i64 {
        // Table names come from the tests themselves, never from input.
        self.scalar(&format!("SELECT COUNT(*) FROM {table}")).await
    }

    /// The integer one row, one column `sql` returns (SQL portable to both backends).
    pub async fn scalar(&self, sql: &str) -> i64 {
        // Statements come from the tests themselves, never from input.
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        crate::with_pool!(&self.db.pool_for_tests(), pool => sqlx::query_scalar(sql).fetch_one(pool).await)
            .expect("scalar query")
    }

    /// Runs `sql` (portable to both backends); the database's error message if it fails.
    pub async fn execute(&self, sql: &str) -> Result<u64, String> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        crate::with_pool!(&self.db.pool_for_tests(), pool => sqlx::query(sql)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))
        .map_err(|e| e.to_string())
    }

    /// Codes of the rejections appended so far, oldest first.
    pub async fn rejection_codes(&self) -> Vec<String> {
        let sql = "SELECT code FROM rejections ORDER BY id";
        crate::with_pool!(&self.db.pool_for_tests(), pool => sqlx::query_scalar(sql).fetch_all(pool).await)
            .expect("rejections")
    }
}

/// A JSON request to `path`, with `token` as its bearer credential; add headers or extensions
/// and hand it to [`TestApp::send`].
pub fn request(method: Method, path: &str, token: Option<&str>) -> axum::http::request::Builder {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/json");
    match token {
        Some(token) => request.header(header::AUTHORIZATION, format!("Bearer {token}")),
        None => request,
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    vigil::clock::now_ms()
}

/// An agent: a key and a server id; signs heartbeats like a real agent.
pub struct Agent {
    /// Its signing key.
    pub key: SigningKey,
    /// The server it reports for.
    pub server_id: String,
    /// The key version it claims.
    pub key_version: u32,
    last_ms: std::sync::atomic::AtomicI64,
}

impl Agent {
    /// A new agent with a random key.
    pub fn new(server_id: &str) -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
            server_id: server_id.into(),
            key_version: 1,
            last_ms: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// An agent with a given key and key version.
    pub fn with_key(server_id: &str, key: SigningKey, key_version: u32) -> Self {
        Self {
            key,
            key_version,
            ..Self::new(server_id)
        }
    }

    /// Base64 of the public key.
    pub fn public_key_b64(&self) -> String {
        STANDARD.encode(self.key.verifying_key().as_bytes())
    }

    /// A signed heartbeat at the current time (strictly later than the previous one), with
    /// `extra` members merged in before signing.
    pub fn heartbeat(&self, extra: Value) -> Value {
        let now = now_ms();
        // One atomic step: two tasks signing for the same agent at once must never get the
        // same timestamp (the host acknowledges an exact repeat without storing it again).
        let next = |previous: i64| now.max(previous + 1);
        let previous = self
            .last_ms
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |previous| Some(next(previous)),
            )
            .unwrap_or_else(|previous| previous);
        self.heartbeat_at(next(previous), extra)
    }

    /// A signed heartbeat with the given timestamp.
    pub fn heartbeat_at(&self, at_ms: i64, extra: Value) -> Value {
        let mut body = Map::new();
        body.insert("server_id".into(), self.server_id.clone().into());
        body.insert("key_version".into(), self.key_version.into());
        body.insert("timestamp".into(), format_rfc3339_ms(at_ms).into());
        body.insert("status".into(), "online".into());
        if let Value::Object(extra) = extra {
            body.extend(extra);
        }
        let signature = sign_body(&self.key, &body).expect("signs");
        body.insert("signature".into(), signature.into());
        Value::Object(body)
    }
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .into()
}

/// One guest target dir per checkout (as the host's build script does): worktrees sharing one
/// `CARGO_TARGET_DIR` must not overwrite each other's components.
fn checkout_key(root: &Path) -> String {
    // FNV-1a over the path: stable across runs and toolchains (std's hasher is not).
    let hash = root
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// Builds the misbehaving test guest from source (once per test run) and returns its path.
pub fn misbehaving_policy() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            let target_dir = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"))
                .join("policies")
                .join(checkout_key(&root));
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = std::process::Command::new(cargo)
                .current_dir(&root)
                .args(["build", "--release", "--target", "wasm32-wasip2"])
                .args(["-p", "vigil-test-policy-misbehaving", "--target-dir"])
                .arg(&target_dir)
                .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
                .env("CARGO_PROFILE_RELEASE_STRIP", "true")
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .status()
                .expect("cargo runs");
            assert!(
                status.success(),
                "building the misbehaving test policy failed"
            );
            target_dir.join("wasm32-wasip2/release/vigil_test_policy_misbehaving.wasm")
        })
        .clone()
}

/// Builds a policy crate from source with build-time environment overrides (distinct versions
/// or behaviours of the same policy, for the lifecycle tests) and returns the component bytes.
/// Variants share one target dir (only the policy crate itself recompiles between them); a
/// lock keeps two tests of this binary from building into it at once.
pub fn policy_variant(package: &str, env: &[(&str, &str)]) -> Vec<u8> {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    let root = workspace_root();
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("policy-variants")
        .join(checkout_key(&root));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for var in [
        "VIGIL_POLICY_VERSION",
        "VIGIL_TEST_POLICY_VERSION",
        "VIGIL_TEST_POLICY_BEHAVIOUR",
        "VIGIL_TEST_POLICY_DESCRIBE",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "building {package} {env:?} failed");
    let artifact = package.replace('-', "_");
    std::fs::read(target_dir.join(format!("wasm32-wasip2/release/{artifact}.wasm")))
        .expect("the built component")
}

/// The bundled default policy rebuilt with another `describe()` version.
pub fn default_policy_version(version: &str) -> Vec<u8> {
    policy_variant("vigil-policy-default", &[("VIGIL_POLICY_VERSION", version)])
}

/// The same component claiming another major of the `vigil:policy` package: every
/// `vigil:policy/…@1.4.0` name (what the bundled policies are built against) becomes `@2.0.0`
/// (same length, so the binary stays well formed).
pub fn with_world_major_2(component: &[u8]) -> Vec<u8> {
    let (from, to) = (b"vigil:policy/".as_slice(), b"@1.4.0".as_slice());
    let mut out = component.to_vec();
    let mut i = 0;
    let mut replaced = 0;
    while let Some(pos) = out[i..].windows(from.len()).position(|w| w == from) {
        let start = i + pos + from.len();
        if let Some(at) = out[start..].iter().take(64).position(|b| *b == b'@')
            && out[start + at..].starts_with(to)
        {
            out[start + at..start + at + to.len()].copy_from_slice(b"@2.0.0");
            replaced += 1;
        }
        i = start;
    }
    assert!(replaced > 0, "the component names vigil:policy@1.4.0");
    out
}

/// Waits (polling `GET /v1/policies`) until `digest` is active and no rebuild is pending;
/// panics after `limit`.
pub async fn wait_for_active(app: &TestApp, digest: &str, limit: std::time::Duration) {
    let every = std::time::Duration::from_millis(20);
    wait_until(
        limit,
        every,
        async || app.get("/v1/policies").await,
        |answer| {
            answer.body["active"]["digest"] == digest && answer.body["rebuild"]["pending"] == 0
        },
    )
    .await
    .unwrap_or_else(|answer| panic!("{digest} never became active: {:#}", answer.body));
}
