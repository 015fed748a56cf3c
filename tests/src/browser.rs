//! A real browser for the dashboard tests: Debian's `chromium`, headless, driven over WebDriver
//! by `chromedriver` (Debian's `chromium-driver`) through the `fantoccini` client.
//!
//! WebDriver rather than the DevTools protocol: it is a W3C standard with a small, stable
//! surface (navigate, find, click, type, run a script, take a screenshot), which is all these
//! tests need, and `fantoccini` is a small client for it over the hyper stack the workspace
//! already builds; the CDP clients for Rust generate bindings for the whole protocol and cost
//! far more to build.
//!
//! Without `chromium` and `chromedriver` the browser tests are skipped with a notice on stderr,
//! unless `VIGIL_REQUIRE_BROWSER=1` (CI) turns the skip into a failure, as for PostgreSQL.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// How to install what is missing, printed with every skip notice.
pub const INSTALL_HINT: &str = "install Chromium and its WebDriver (Debian/Ubuntu: `sudo apt-get \
    install -y chromium chromium-driver`)";

/// A headless Chromium session and the `chromedriver` process behind it. Call
/// [`Browser::quit`] at the end of a test (dropping it only kills `chromedriver`).
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    screenshots: PathBuf,
    _profile: tempfile::TempDir,
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

fn skip_or_fail(why: &str) -> Option<Browser> {
    let required = std::env::var("VIGIL_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "VIGIL_REQUIRE_BROWSER=1 but no browser: {why}; {INSTALL_HINT}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "\nNOTICE: the real-browser tests are SKIPPED ({why}); to run them, {INSTALL_HINT}.\n"
    );
    None
}

impl Browser {
    /// Starts `chromedriver` on a free loopback port and opens a headless Chromium session
    /// (1280×1000). Screenshots go to `screenshots` (created). `None` (after a notice) when
    /// either program is missing; panics instead when `VIGIL_REQUIRE_BROWSER=1`.
    pub async fn start(screenshots: &Path) -> Option<Self> {
        let Some(chromium) = find_program(&["chromium", "chromium-browser"]) else {
            return skip_or_fail("no `chromium` on PATH");
        };
        let Some(chromedriver) = find_program(&["chromedriver"]) else {
            return skip_or_fail("no `chromedriver` on PATH");
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().expect("profile dir");
        let url = format!("http://127.0.0.1:{port}");
        let ready = crate::wait_until(
            Duration::from_secs(20),
            Duration::from_millis(50),
            async || reqwest::get(format!("{url}/status")).await.is_ok(),
            |up| *up,
        )
        .await;
        assert!(ready.is_ok(), "chromedriver answers on {url}");
        let mut args = vec![
            "--headless=new".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,1000".to_owned(),
            "--no-first-run".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        // Chromium's sandbox refuses to run as root (CI runs as root).
        if Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"))
        {
            args.push("--no-sandbox".to_owned());
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium, "args": args}),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&url)
            .await
            .expect("a Chromium session");
        std::fs::create_dir_all(screenshots).expect("screenshot dir");
        let _ = writeln!(
            std::io::stderr(),
            "browser screenshots: {}",
            screenshots.display()
        );
        Some(Self {
            client,
            driver,
            screenshots: screenshots.to_owned(),
            _profile: profile,
        })
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("navigates");
    }

    /// The text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .expect("text")
    }

    /// The values of attribute `attr` of every element matching `css`, in page order (empty
    /// while the page is being replaced).
    pub async fn attrs(&self, css: &str, attr: &str) -> Vec<String> {
        let mut out = Vec::new();
        let Ok(found) = self.client.find_all(Locator::Css(css)).await else {
            return out;
        };
        for e in found {
            match e.attr(attr).await {
                Ok(value) => out.push(value.unwrap_or_default()),
                Err(_) => return Vec::new(),
            }
        }
        out
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub async fn eval(&self, script: &str, args: Vec<serde_json::Value>) -> serde_json::Value {
        self.client
            .execute(script, args)
            .await
            .expect("script runs")
    }

    /// Waits until the text of the first element matching `css` contains `wanted`; returns
    /// the last text seen either way.
    pub async fn wait_for_text(
        &self,
        css: &str,
        wanted: &str,
        limit: Duration,
    ) -> Result<String, String> {
        crate::wait_until(
            limit,
            Duration::from_millis(50),
            async || match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            },
            |text| text.contains(wanted),
        )
        .await
    }

    /// Saves a PNG of the viewport as `NAME.png` in the screenshot folder and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    /// Saves a PNG of the whole page (resizing the window to the page's height for the shot).
    pub async fn full_page_screenshot(&self, name: &str) -> PathBuf {
        let (width, height) = self.client.get_window_size().await.expect("size");
        let page_height = self
            .eval(
                "return Math.ceil(document.documentElement.scrollHeight);",
                vec![],
            )
            .await
            .as_u64()
            .unwrap_or(height)
            .clamp(400, 4000);
        let _ = self
            .client
            .set_window_size(width as u32, page_height as u32 + 100)
            .await;
        let path = self.screenshot(name).await;
        let _ = self
            .client
            .set_window_size(width as u32, height as u32)
            .await;
        path
    }

    /// Ends the session (Chromium quits) and stops `chromedriver`.
    pub async fn quit(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
