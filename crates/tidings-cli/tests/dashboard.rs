//! The admin dashboard in headless Chromium: `tests/browser/dashboard.mjs`
//! (playwright-core driving Debian's Chromium) against a served demo. Needs
//! `TIDINGS_TEST_CHROMIUM` (the browser; `.ci/run` installs it and the npm
//! package): set and missing means fail; unset, the test is not run.

use serde_json::json;
use std::time::Duration;
use tidings_cli::demo;

const ADMIN: &str = "dashboard-test-admin-token-0123";

struct Refuses;

impl tidings::EventHandler for Refuses {
    fn event_type(&self) -> &str {
        "test_refused"
    }
    async fn handle(&self, _: &tidings::Envelope) -> Result<(), tidings::HandlerError> {
        Err(tidings::HandlerError::permanent("refused by the test"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_handler_and_replays_a_dead_letter() {
    let Ok(chromium) = std::env::var("TIDINGS_TEST_CHROMIUM") else {
        eprintln!("TIDINGS_TEST_CHROMIUM not set: test not run");
        return;
    };
    assert!(
        std::path::Path::new(&chromium).exists(),
        "{chromium} is missing"
    );
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = here.join("tests/browser/dashboard.mjs");
    assert!(
        here.join("tests/browser/node_modules/playwright-core")
            .exists(),
        "run `npm install --prefix crates/tidings-cli/tests/browser` first"
    );
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("demo.db").display());
    let store = demo::open_store(&url).await.unwrap();
    let bus = demo::bus_builder(&store).handler(Refuses).build().unwrap();
    for n in 0..3 {
        bus.emit("test_refused", json!({"n": n, "secret": "hunter2"}))
            .await
            .unwrap();
    }
    bus.wait_idle().await;
    let admin = tidings_admin::AdminConfig::new(ADMIN).unwrap();
    let state = demo::state(bus.clone(), store, false, admin);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(demo::serve(
        listener,
        state,
        Duration::from_secs(5),
        async move {
            let _ = stopped.await;
        },
    ));
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    std::fs::create_dir_all(&target).unwrap();
    let shot = target.join("dashboard.png");
    let mut cmd = std::process::Command::new("node");
    cmd.arg(&script)
        .arg(&base)
        .arg(ADMIN)
        .arg(&shot)
        .arg(&chromium);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.contains("OK"), "{said}");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a screenshot"
    );
    // The replayed letter was handled (and refused) again.
    assert_eq!(bus.stats().handler("Refuses").unwrap().dead_lettered, 4);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
