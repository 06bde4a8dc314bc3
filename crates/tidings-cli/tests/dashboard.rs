//! The admin dashboard in headless Chromium: `tests/browser/dashboard.mjs`
//! (playwright-core driving Debian's Chromium) against a served demo. Needs
//! `TIDINGS_TEST_CHROMIUM` (the browser; `.ci/run` installs it and the npm
//! package): set and missing means fail; unset, the test is not run.

mod common;

const ADMIN: &str = "dashboard-test-admin-token-0123";

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
    let served = common::Served::start(ADMIN, 3, false).await;
    let (base, bus) = (served.base.clone(), served.bus.clone());
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
    served.stop().await;
}
