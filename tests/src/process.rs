//! The real `vigil` binary as a user runs it: [`Cli`] runs one subcommand and hands back its
//! exit status and output; [`ServeProcess`] starts `vigil serve` as a child process on a free
//! loopback port, waits until it listens, keeps its log and stops it.
//!
//! This module owns child processes only: it never talks HTTP to them (tests bring their own
//! client) and never builds a host in-process (that is [`crate::TestApp`]).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

/// What the binary reads from its environment for a target, a credential or its log level:
/// removed from every child, so a developer's shell never leaks into a test.
const AMBIENT: [&str; 4] = [
    "VIGIL_URL",
    "VIGIL_CONFIG",
    "VIGIL_ADMIN_TOKEN",
    "VIGIL_LOG",
];

/// The `vigil` program under the test crate's binary name (`vigil-e2e`), next to the running
/// test binary in cargo's target dir (`target/<profile>/deps/e2e-…` → `target/<profile>/`).
pub fn vigil_binary() -> &'static Path {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    FOUND.get_or_init(|| {
        if let Some(path) = std::env::var_os("CARGO_BIN_EXE_vigil-e2e") {
            return path.into();
        }
        let test = std::env::current_exe().expect("the test binary's path");
        let mut dir = test.parent().expect("in a directory");
        if dir.ends_with("deps") {
            dir = dir.parent().expect("deps/ is in the profile dir");
        }
        let path = dir.join(format!("vigil-e2e{}", std::env::consts::EXE_SUFFIX));
        assert!(
            path.exists(),
            "{} is missing: cargo builds it for the e2e tests",
            path.display()
        );
        path
    })
}

/// A way to run `vigil` subcommands: a working directory and environment, reused for every
/// run (cheap to clone and adjust).
#[derive(Debug, Clone, Default)]
pub struct Cli {
    dir: Option<PathBuf>,
    env: Vec<(String, Option<String>)>,
}

/// What one run of a subcommand did.
#[derive(Debug)]
pub struct Run {
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output (lossy UTF-8).
    pub stdout: String,
    /// Its standard error (lossy UTF-8).
    pub stderr: String,
}

impl Run {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl Cli {
    /// Runs in the test's own working directory, without any of `VIGIL_URL`, `VIGIL_CONFIG`,
    /// `VIGIL_ADMIN_TOKEN` or `VIGIL_LOG` from outside.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same, run in `dir` (where relative paths in arguments and configs resolve).
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            dir: Some(dir.to_owned()),
            ..Self::default()
        }
    }

    /// Sets an environment variable for every run.
    #[must_use]
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        let value = value.as_ref().to_string_lossy().into_owned();
        self.env.push((key.to_owned(), Some(value)));
        self
    }

    /// Removes an environment variable for every run.
    #[must_use]
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.push((key.to_owned(), None));
        self
    }

    /// The directory runs happen in, if not the test's own.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The command for `args`, with this directory and environment (output not redirected).
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(vigil_binary());
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        for key in AMBIENT {
            command.env_remove(key);
        }
        for (key, value) in &self.env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command.args(args);
        command
    }

    /// Runs `vigil <args>` to completion.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = self.command(args);
        let out = command.output().expect("vigil runs");
        Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `vigil <args>`, asserts it exited 0 (its stderr otherwise) and returns its stdout.
    pub fn ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        let run = self.run(&args);
        assert!(run.success(), "vigil {shown:?}: {}", run.stderr);
        run.stdout
    }
}

/// A `vigil serve` child process; killed when dropped if still running (a failed test).
pub struct ServeProcess {
    child: Child,
    address: SocketAddr,
    /// Its log lines so far; appended by the thread that drains its stderr.
    log: Arc<Mutex<Vec<String>>>,
    drain: Option<std::thread::JoinHandle<()>>,
}

impl ServeProcess {
    /// Writes `config` to `vigil.toml` in `cli`'s directory and starts
    /// `vigil serve --config vigil.toml` there on a free loopback port (`--listen
    /// 127.0.0.1:0`), with `cli`'s environment; returns once it logs the address it listens on.
    pub fn start(cli: &Cli, config: &str) -> Self {
        Self::start_on(cli, config, "127.0.0.1:0")
    }

    /// The same on the given `--listen` address (to restart a host where its agents look).
    pub fn start_on(cli: &Cli, config: &str, listen: &str) -> Self {
        let dir = cli.dir().expect("a served host needs a directory");
        std::fs::write(dir.join("vigil.toml"), config).expect("config");
        let mut child = cli
            .clone()
            // The line with the address is an info event.
            .env("VIGIL_LOG", "info")
            .command(["serve", "--config", "vigil.toml", "--listen", listen])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("serve starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let address = loop {
            let Some(line) = lines.next() else {
                let _ = child.wait();
                panic!("serve ended before it listened: {:?}", log.lock());
            };
            let line = line.expect("utf-8 log");
            // `address=…` in text logs, `"address":"…"` in JSON ones.
            let address = line
                .split("address=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .or_else(|| {
                    let rest = line.split("\"address\":\"").nth(1)?;
                    rest.split('"').next()
                })
                .map(|a| a.parse::<SocketAddr>().expect("a socket address"));
            log.lock().expect("not poisoned").push(line);
            if let Some(address) = address {
                break address;
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        let drain = {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in lines.map_while(Result::ok) {
                    log.lock().expect("not poisoned").push(line);
                }
            })
        };
        Self {
            child,
            address,
            log,
            drain: Some(drain),
        }
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its base URL, `http://<address>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, …) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("not poisoned").clone()
    }

    /// Sends SIGTERM and asserts a graceful shutdown (exit 0); returns the whole log.
    pub fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill")
                .success()
        );
        let status = self.child.wait().expect("exits");
        if let Some(drain) = self.drain.take() {
            drain.join().expect("log drained");
        }
        let log = self.log();
        assert!(status.success(), "serve exits cleanly on SIGTERM: {log:?}");
        log
    }

    /// Kills it at once (SIGKILL), as a crash would, and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("kill");
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
