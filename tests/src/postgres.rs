//! A PostgreSQL server for the tests: `VIGIL_TEST_DATABASE_URL` if given, otherwise a
//! throwaway cluster this process starts itself (Debian's `initdb` + `pg_ctl` in a temporary
//! folder, a free loopback port), once per test process. A detached watchdog stops the cluster
//! and deletes its folder when the test process exits, however it exits.
//!
//! The cluster this process starts serves TLS (`ssl=on`) with a certificate for `localhost`
//! and `127.0.0.1` from a throwaway CA ([`tls_ca_file`]), so tests can connect with
//! `sslmode=verify-full`; plain connections stay allowed.
//!
//! Without PostgreSQL the PostgreSQL variants of the tests are skipped with a notice on stderr,
//! unless `VIGIL_REQUIRE_POSTGRES=1` (CI) turns the skip into a failure.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use sqlx::Connection as _;

/// How to install what is missing, printed with every skip notice.
pub const INSTALL_HINT: &str = "install PostgreSQL (Debian/Ubuntu: `sudo apt-get install -y \
    postgresql`) or point VIGIL_TEST_DATABASE_URL at a server where the user may CREATE DATABASE";

/// The URL of a PostgreSQL server the tests may create databases on (without a database name),
/// or `None` (after a one-time notice on stderr) when there is none. Panics when
/// `VIGIL_REQUIRE_POSTGRES=1` and there is none.
pub fn server_url() -> Option<&'static str> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(|| {
        let found = match std::env::var("VIGIL_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Ok(url),
            _ => start_cluster(),
        };
        match found {
            Ok(url) => Some(url),
            Err(why) => {
                let required = std::env::var("VIGIL_REQUIRE_POSTGRES").is_ok_and(|v| v == "1");
                assert!(
                    !required,
                    "VIGIL_REQUIRE_POSTGRES=1 but no PostgreSQL: {why}; {INSTALL_HINT}"
                );
                // Written to the real stderr (not the captured test output) so the notice
                // shows in a plain `cargo test` run.
                let _ = writeln!(
                    std::io::stderr(),
                    "\nNOTICE: the PostgreSQL variants of the end-to-end tests are SKIPPED \
                     ({why}); to run them, {INSTALL_HINT}.\n"
                );
                None
            }
        }
    })
    .as_deref()
}

/// `server/database`: the URL of database `name` on the server at `server_url`.
pub fn database_url(server_url: &str, name: &str) -> String {
    let (without_query, query) = match server_url.split_once('?') {
        Some((url, query)) => (url, format!("?{query}")),
        None => (server_url, String::new()),
    };
    let authority_start = without_query.find("://").map_or(0, |i| i + 3);
    let base = match without_query[authority_start..].find('/') {
        Some(slash) => &without_query[..authority_start + slash],
        None => without_query,
    };
    format!("{base}/{name}{query}")
}

/// Creates database `name` if it does not exist yet and returns its URL.
pub async fn ensure_database(server_url: &str, name: &str) -> String {
    let admin_url = database_url(server_url, "postgres");
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect to the test PostgreSQL server");
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut admin)
        .await
        .expect("look up the database");
    if exists.is_none() {
        // `name` is made by the harness from a hash ([a-z0-9_]); never from input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
    }
    let _ = admin.close().await;
    database_url(server_url, name)
}

fn bin_dir() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "no /usr/lib/postgresql".to_owned())?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_owned())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program args…`, as the `postgres` user when we are root (PostgreSQL refuses to run as root).
fn as_cluster_owner(program: &Path, root: bool) -> Command {
    if root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The PEM file of the CA that signed the harness cluster's certificate, when this process
/// started the cluster (not with `VIGIL_TEST_DATABASE_URL`, whose TLS set-up is unknown).
pub fn tls_ca_file() -> Option<&'static Path> {
    server_url()?;
    TLS_CA.get().map(PathBuf::as_path)
}

static TLS_CA: OnceLock<PathBuf> = OnceLock::new();

/// Mints the cluster's CA and certificate into `dir`; returns the `-c` options that turn TLS
/// on. The key is the cluster owner's, mode 0600, as PostgreSQL demands.
fn tls_files(dir: &Path, root: bool) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let ca = crate::tls::TestCa::new("vigil test PostgreSQL CA");
    let leaf = ca.leaf();
    let ca_path = ca.write(dir, "ca.crt");
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    std::fs::write(&cert, &leaf.cert_pem).map_err(|e| format!("writing server.crt: {e}"))?;
    std::fs::write(&key, &leaf.key_pem).map_err(|e| format!("writing server.key: {e}"))?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod server.key: {e}"))?;
    if root {
        run(
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(&cert)
                .arg(&key),
            "chown the certificate",
        )?;
    }
    let _ = TLS_CA.set(ca_path);
    Ok(format!(
        " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        cert.display(),
        key.display()
    ))
}

fn start_cluster() -> Result<String, String> {
    let bin = bin_dir()?;
    let root = is_root();
    let dir = std::env::temp_dir().join(format!("vigil-test-pg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if root {
        run(
            Command::new("chown").arg("postgres:postgres").arg(&dir),
            "chown the cluster folder",
        )?;
    }
    let data = dir.join("data");
    run(
        as_cluster_owner(&bin.join("initdb"), root)
            .current_dir(&dir)
            .arg("-D")
            .arg(&data)
            .args(["--auth=trust", "-U", "postgres", "-E", "UTF8", "--no-sync"]),
        "initdb",
    )?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))?
        .port();
    // A throwaway cluster: durability settings off for speed, room for many test pools.
    let options = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} \
         -c max_connections=500 -c fsync=off -c synchronous_commit=off \
         -c full_page_writes=off -c shared_buffers=64MB{}",
        dir.display(),
        tls_files(&dir, root)?
    );
    let pg_ctl = bin.join("pg_ctl");
    run(
        as_cluster_owner(&pg_ctl, root)
            .current_dir(&dir)
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(&options)
            .arg("-l")
            .arg(dir.join("log"))
            .args(["-w", "-t", "60", "start"]),
        "pg_ctl start",
    )?;
    // The watchdog outlives nothing but this process: it stops the cluster once we are gone.
    let stop = if root {
        format!(
            "runuser -u postgres -- {} -D {} -m immediate stop",
            pg_ctl.display(),
            data.display()
        )
    } else {
        format!(
            "{} -D {} -m immediate stop",
            pg_ctl.display(),
            data.display()
        )
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        dir = dir.display()
    );
    Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the cluster watchdog: {e}"))?;
    Ok(format!("postgres://postgres@127.0.0.1:{port}/postgres"))
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_url_replaces_only_the_database() {
        assert_eq!(
            database_url("postgres://u:p@h:5/postgres", "t1"),
            "postgres://u:p@h:5/t1"
        );
        assert_eq!(database_url("postgres://h", "t1"), "postgres://h/t1");
        assert_eq!(
            database_url("postgresql://h/db?sslmode=disable", "t1"),
            "postgresql://h/t1?sslmode=disable"
        );
    }
}
