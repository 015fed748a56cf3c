//! The dashboard in a real browser: headless Chromium over WebDriver (see
//! `vigil_tests::browser`) against the real router on a loopback socket. One browser session
//! walks every page, so the whole file costs one Chromium start. Screenshots of each page are
//! kept in `target/tmp/browser-screenshots/` (the path is printed on stderr).

use std::path::PathBuf;
use std::time::Duration;

use axum::http::StatusCode;
use fantoccini::Locator;
use serde_json::json;
use vigil_tests::browser::Browser;
use vigil_tests::{Agent, TestApp};

fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-screenshots")
}

/// How long the browser may take to show what the host already committed.
const SHOWN: Duration = Duration::from_secs(10);

async fn add(app: &TestApp, id: &str, name: &str, cluster: &str) -> Agent {
    let agent = Agent::new(id);
    let answer = app
        .admin_post(
            "/v1/admin/servers",
            &json!({"server_id": id, "public_key": agent.public_key_b64(), "display_name": name, "cluster_id": cluster}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    agent
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_works_in_a_real_browser() {
    let Some(browser) = Browser::start(&screenshot_dir()).await else {
        return;
    };
    let mut app = TestApp::spawn().await;
    let base = format!("http://{}", app.serve().await);
    for (id, name, players) in [
        ("web-alpha", "Alpha Survival", 5),
        ("web-bravo", "Bravo Creative", 50),
        ("web-charlie", "Charlie PvP", 20),
    ] {
        let agent = add(&app, id, name, "eu-west").await;
        let sent = app
            .post_heartbeat(&agent.heartbeat(json!({
                "players_current": players, "players_capacity": 64, "map_name": "world"
            })))
            .await;
        assert_eq!(sent.status, StatusCode::ACCEPTED, "{:?}", sent.body);
    }
    app.verify("web-bravo").await;
    let late = add(&app, "web-delta", "Delta Modded", "eu-west").await;

    // The server list renders: every server, status as icon and text.
    browser.goto(&format!("{base}/?sort=id")).await;
    assert_eq!(browser.client.title().await.unwrap(), "Servers · Vigil");
    assert_eq!(
        browser.attrs("tbody tr", "data-server-id").await,
        ["web-alpha", "web-bravo", "web-charlie", "web-delta"]
    );
    assert_eq!(
        browser
            .text("tr[data-server-id=\"web-alpha\"] .status")
            .await,
        "\u{25CF} online"
    );
    assert_eq!(
        browser
            .text("tr[data-server-id=\"web-delta\"] .status")
            .await,
        "\u{25CC} unknown"
    );

    // A heartbeat sent now turns web-delta's row online without a reload (SSE).
    let opened = wait_live(&browser).await;
    assert!(opened, "the page's event stream opens");
    browser
        .eval("window.__sameDocument = 'yes'; return null;", vec![])
        .await;
    let sent = app
        .post_heartbeat(&late.heartbeat(json!({"players_current": 1, "players_capacity": 8})))
        .await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{:?}", sent.body);
    let shown = browser
        .wait_for_text("tr[data-server-id=\"web-delta\"] .status", "online", SHOWN)
        .await;
    assert_eq!(shown.as_deref(), Ok("\u{25CF} online"), "row updated live");
    assert_eq!(
        browser
            .eval("return window.__sameDocument || null;", vec![])
            .await,
        json!("yes"),
        "without a reload"
    );
    assert!(
        browser
            .text("tr[data-server-id=\"web-delta\"] .seen")
            .await
            .ends_with("UTC"),
        "last seen updated with the status"
    );
    assert_eq!(
        browser.text("#live").await,
        "\u{25CF} Live updates: on",
        "the page says it is live"
    );
    browser.full_page_screenshot("servers").await;

    // Filters and sort through the form's own controls.
    let form = browser
        .client
        .form(Locator::Css("form.filters"))
        .await
        .expect("the filter form");
    form.set_by_name("sort", "players").await.expect("sort");
    form.submit().await.expect("submits");
    // Most players first.
    wait_for_rows(
        &browser,
        &["web-bravo", "web-charlie", "web-alpha", "web-delta"],
    )
    .await;
    let form = browser
        .client
        .form(Locator::Css("form.filters"))
        .await
        .expect("the filter form");
    form.set_by_name("verified", "true")
        .await
        .expect("verified");
    form.submit().await.expect("submits");
    wait_for_rows(&browser, &["web-bravo"]).await;
    let url = browser.client.current_url().await.unwrap();
    assert!(url.query().unwrap_or("").contains("verified=true"), "{url}");
    let search = browser
        .client
        .find(Locator::Css("input[name=\"q\"]"))
        .await
        .expect("search box");
    browser
        .client
        .form(Locator::Css("form.filters"))
        .await
        .unwrap()
        .set_by_name("verified", "")
        .await
        .unwrap();
    search
        .send_keys("charlie\u{E007}")
        .await
        .expect("types, Enter");
    wait_for_rows(&browser, &["web-charlie"]).await;

    // The server page, reached by its link.
    browser
        .client
        .find(Locator::LinkText("Charlie PvP"))
        .await
        .expect("the row links to its page")
        .click()
        .await
        .expect("clicks");
    assert_eq!(
        browser.text("h1").await,
        "Charlie PvP",
        "on the server's page"
    );
    assert!(browser.text("main").await.contains("Computed by"));
    browser.full_page_screenshot("server").await;

    // The cluster's status page, reached from the server page.
    browser
        .client
        .find(Locator::LinkText("eu-west"))
        .await
        .expect("the cluster links to its status page")
        .click()
        .await
        .expect("clicks");
    assert!(browser.text("h1").await.contains("eu-west"));
    browser.full_page_screenshot("status").await;

    // A phone-sized viewport of the list, for the screenshots.
    browser.client.set_window_size(390, 844).await.unwrap();
    browser.goto(&format!("{base}/")).await;
    browser.screenshot("servers-phone").await;

    browser.quit().await;
    app.stop().await;
}

/// Waits until the page's event stream is open.
async fn wait_live(browser: &Browser) -> bool {
    vigil_tests::wait_until(
        SHOWN,
        Duration::from_millis(50),
        async || {
            browser
                .eval(
                    "return document.documentElement.getAttribute('data-live');",
                    vec![],
                )
                .await
        },
        |v| v == &json!("open"),
    )
    .await
    .is_ok()
}

/// Waits until the list shows exactly `ids` (after a navigation the browser started itself).
async fn wait_for_rows(browser: &Browser, ids: &[&str]) {
    let rows = vigil_tests::wait_until(
        SHOWN,
        Duration::from_millis(50),
        async || browser.attrs("tbody tr", "data-server-id").await,
        |rows| rows == ids,
    )
    .await;
    assert!(rows.is_ok(), "{rows:?}");
}

/// Sign-in by keyboard alone, a pause and a policy rollback from the forms (each through the
/// admin API: the API shows the change, the activation log names the acting credential and
/// the typed reason), CSRF refusals, sign-out.
#[tokio::test(flavor = "multi_thread")]
async fn signing_in_pausing_and_rolling_back_in_a_real_browser() {
    let Some(browser) = Browser::start(&screenshot_dir()).await else {
        return;
    };
    let next = vigil_tests::default_policy_version("1.9.0");
    let mut app = TestApp::spawn().await;
    let base = format!("http://{}", app.serve().await);
    let agent = add(&app, "web-echo", "Echo Hardcore", "eu-west").await;
    let sent = app.post_heartbeat(&agent.heartbeat(json!({}))).await;
    assert_eq!(sent.status, StatusCode::ACCEPTED, "{:?}", sent.body);
    let first = app.state.engine.policy().digest().to_owned();

    // Signed out: no admin form.
    browser.goto(&format!("{base}/servers/web-echo")).await;
    assert!(
        browser
            .client
            .find_all(Locator::Css("section.admin"))
            .await
            .unwrap()
            .is_empty()
    );

    // Keyboard only: the key field has the focus; type, Tab to the button, Enter.
    browser.goto(&format!("{base}/sign-in")).await;
    browser.full_page_screenshot("sign-in").await;
    let field = browser.client.active_element().await.expect("focus");
    assert_eq!(field.attr("name").await.unwrap().as_deref(), Some("key"));
    field
        .send_keys(&format!("{}\u{E004}", vigil_tests::ADMIN_TOKEN))
        .await
        .expect("types, Tab");
    let button = browser.client.active_element().await.expect("focus");
    assert_eq!(
        button.text().await.unwrap(),
        "Sign in",
        "Tab reaches the button"
    );
    button.send_keys("\u{E007}").await.expect("Enter");
    let signed = browser
        .wait_for_text("nav", "Signed in as admin", SHOWN)
        .await;
    assert!(signed.is_ok(), "{signed:?}");
    let cookies = browser.client.get_all_cookies().await.expect("cookies");
    let session = cookies
        .iter()
        .find(|c| c.name() == "vigil_session")
        .expect("a session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(
        session.same_site().map(|s| format!("{s:?}")).as_deref(),
        Some("Strict")
    );
    let session_cookie = format!("vigil_session={}", session.value());

    // A form post without this session's CSRF token changes nothing.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let forged = http
        .post(format!("{base}/servers/web-echo/pause"))
        .header("cookie", &session_cookie)
        .form(&[("csrf", "guessed"), ("reason", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), reqwest::StatusCode::FORBIDDEN);
    assert_eq!(app.server("web-echo").await["effective_status"], "online");
    let no_form = http
        .post(format!("{base}/sign-in"))
        .form(&[("csrf", "x"), ("key", vigil_tests::ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        no_form.status(),
        reqwest::StatusCode::FORBIDDEN,
        "sign-in needs the form's own token"
    );

    // Pause from the server page.
    browser.goto(&format!("{base}/servers/web-echo")).await;
    let form = browser
        .client
        .form(Locator::Css("section.admin form"))
        .await
        .expect("the admin form");
    form.set_by_name("reason", "disk swap").await.unwrap();
    form.submit().await.expect("pauses");
    let paused = browser.wait_for_text("dd.st", "paused", SHOWN).await;
    assert!(paused.is_ok(), "{paused:?}");
    assert_eq!(app.server("web-echo").await["effective_status"], "paused");
    browser.full_page_screenshot("server-admin").await;

    // Roll back a policy from the policies page.
    let uploaded = app
        .send(
            vigil_tests::request(
                axum::http::Method::POST,
                "/v1/admin/policies?activate=true",
                Some(vigil_tests::ADMIN_TOKEN),
            )
            .header("content-type", "application/wasm")
            .body(axum::body::Body::from(next))
            .unwrap(),
        )
        .await;
    assert_eq!(uploaded.status, StatusCode::CREATED, "{:?}", uploaded.body);
    let second = uploaded.body["digest"]
        .as_str()
        .or_else(|| uploaded.body["policy"]["digest"].as_str())
        .expect("digest")
        .to_owned();
    vigil_tests::wait_for_active(&app, &second, SHOWN).await;
    browser.goto(&format!("{base}/policies")).await;
    assert!(browser.text("#active").await.contains("1.9.0"));
    let form = browser
        .client
        .form(Locator::Css("section.admin form"))
        .await
        .expect("the rollback form");
    form.set_by_name("reason", "1.9.0 flaps").await.unwrap();
    form.submit().await.expect("rolls back");
    vigil_tests::wait_for_active(&app, &first, SHOWN).await;
    let shown = browser.wait_for_text("#active", &first, SHOWN).await;
    assert!(shown.is_ok(), "{shown:?}");
    assert_eq!(browser.text("#activations tr .who").await, "admin");
    assert_eq!(browser.text("#activations tr .why").await, "1.9.0 flaps");
    browser.full_page_screenshot("policies").await;

    // Sign out: the session is gone, for the browser and for a replay of its cookie.
    browser
        .client
        .find(Locator::Css("nav button"))
        .await
        .expect("sign-out button")
        .click()
        .await
        .unwrap();
    let out = browser.wait_for_text("nav", "Sign in", SHOWN).await;
    assert!(out.is_ok(), "{out:?}");
    let replayed = http
        .post(format!("{base}/servers/web-echo/resume"))
        .header("cookie", &session_cookie)
        .form(&[("csrf", "any")])
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert_eq!(app.server("web-echo").await["effective_status"], "paused");

    browser.quit().await;
    app.stop().await;
}
