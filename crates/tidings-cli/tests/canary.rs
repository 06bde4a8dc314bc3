//! The canary: a secret placed in every payload field, in ordering keys and
//! in the password of every URL, then everything the service and the CLI
//! show is searched for it: the demo's answers (errors included), dead
//! letters, the admin API, the CLI's output, every log line at TRACE with
//! its spans, the bus's stats and the Prometheus scrape. Found: 0 times.
//!
//! One exception, by design and checked as such: the operator's views show
//! an ordering key where they name a delivery (the admin API behind its
//! token, the CLI that reads it, and the `Debug` of a dead letter the
//! application asks for), since an operator needs it to find a stuck key.
//! Keys appear nowhere else: not in logs, spans, errors, stats or metrics.
//!
//! The subprocess parts (the banner of a demo on NATS and on PostgreSQL
//! with a password in their URL, and `tidings inspect`) use
//! `TIDINGS_TEST_NATS_URL` and `TIDINGS_TEST_POSTGRES_URL`.

use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings::{Envelope, EventHandler, HandlerError};
use tidings_cli::demo;

mod common;

/// In payload fields and URLs.
const SECRET: &str = "canary5f3c9e7a";
/// In ordering keys.
const KEY_SECRET: &str = "keycanary81d2";
const ADMIN: &str = "canary-test-admin-token-012345";

/// Everything logged, at TRACE, spans included.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A card the handler decodes: each canary payload gets one field wrong,
/// with the secret in it.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct Card {
    account: u64,
    holder: String,
    plan: Plan,
}

#[derive(serde::Deserialize)]
#[allow(dead_code)]
enum Plan {
    Free,
    Pro,
}

/// Decodes its payload as a [`Card`]; the canary's payloads never decode,
/// so each delivery becomes a dead letter with the decode error.
struct Decodes;

impl EventHandler for Decodes {
    fn event_type(&self) -> &str {
        "canary_card"
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        event.decode::<Card>()?;
        Ok(())
    }
}

/// Counts how often `needle` occurs in `haystack`.
fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// `url` with `user:password@` as its user part.
fn with_password(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}:{SECRET}@{rest}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_payloads_keys_and_urls_is_never_shown() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();
    let metrics = tidings_admin::prometheus().unwrap();

    let common::Durable {
        dir: _dir,
        store,
        users,
        builder,
    } = common::durable().await;
    let tokens: std::collections::HashMap<String, String> = users.into_iter().collect();
    let bus = builder.handler(Decodes).build().unwrap();
    let mut state = demo::state(
        bus.clone(),
        store.clone(),
        false,
        tidings_admin::AdminConfig::new(ADMIN).unwrap(),
    );
    state.metrics = Some(metrics);
    let (base, stop, server) = common::serve(state, Duration::from_secs(5)).await;

    // What the service and the CLI show, to be searched.
    let mut shown = String::new();

    // Emits: payloads that do not decode (dead letters), with a key.
    let forged = format!("{SECRET}\nERROR forged");
    let cards = [
        json!({"account": SECRET, "holder": SECRET, "plan": "Free"}),
        json!({"account": 1, "holder": {"name": SECRET}, "plan": "Free"}),
        json!({"account": 1, "holder": "h", "plan": forged}),
    ];
    for card in &cards {
        bus.emit("canary_card", card.clone())
            .key(KEY_SECRET)
            .await
            .unwrap();
    }
    // A typed event emitted dynamically with wrongly typed fields: refused.
    for data in [
        json!({"conversation_id": SECRET, "user_id": SECRET, "role": SECRET, "content": 5}),
        json!({"user_id": SECRET, "action": [SECRET], "severity": {SECRET: SECRET}}),
    ] {
        for event_type in ["message_save", "activity_log", "order_created"] {
            if let Err(e) = bus.emit(event_type, data.clone()).await {
                shown.push_str(&format!("{e}\n{e:?}\n"));
            }
        }
    }
    // Keys refused: never echoed.
    for key in [format!("{KEY_SECRET}\n"), KEY_SECRET.repeat(30)] {
        let e = bus
            .emit("canary_card", json!({}))
            .key(key)
            .await
            .unwrap_err();
        shown.push_str(&format!("{e}\n{e:?}\n"));
    }
    bus.wait_idle().await;

    // The demo's routes, with the secret in every field of the bodies.
    let client = reqwest::Client::new();
    let alice = &tokens["alice"];
    let post = |path: &str, token: &str, body: Value| {
        client
            .post(format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let mut answers = Vec::new();
    for (path, body) in [
        (
            "/api/chat",
            json!({"conversation_id": "canary-1", "message": SECRET}),
        ),
        (
            "/api/chat",
            json!({"conversation_id": SECRET, "message": 5}),
        ),
        (
            "/api/chat",
            json!({"conversation_id": format!("{SECRET}!"), "message": "hi"}),
        ),
        (
            "/api/chat",
            json!({"conversation_id": "c", "message": "hi", "user_id": SECRET}),
        ),
        (
            "/api/chat",
            json!({"conversation_id": "c", "message": [SECRET]}),
        ),
        (
            "/api/orders",
            json!({"user_id": SECRET, "items": [{"sku": SECRET, "quantity": SECRET}]}),
        ),
        (
            "/api/orders",
            json!({"user_id": 1, "items": [{"sku": SECRET, "quantity": 1}]}),
        ),
        ("/api/orders", json!({"user_id": 1, "items": SECRET})),
    ] {
        let r = post(path, alice, body).await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        answers.push((path, status));
        // The first chat is a valid one: its answer is the user's own.
        if !(path == "/api/chat" && status == 200) {
            shown.push_str(&text);
        }
    }
    assert_eq!(answers[0].1, 200, "{answers:?}");
    assert!(
        answers[1..].iter().all(|(_, s)| (400..500).contains(s)),
        "{answers:?}"
    );
    for (path, body) in [
        (
            "/api/chat",
            format!("{{\"conversation_id\": \"c\", \"message\": \"{SECRET}"),
        ),
        ("/api/chat", format!("{{\"conversation_id\": {SECRET}}}")),
    ] {
        let r = client
            .post(format!("{base}{path}"))
            .bearer_auth(alice)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        shown.push_str(&r.text().await.unwrap());
    }
    for path in [
        format!("/api/conversations/{SECRET}"),
        format!("/api/conversations/canary-1?after={SECRET}&limit={SECRET}"),
        format!("/api/orders?user_id={SECRET}"),
    ] {
        let r = client
            .get(format!("{base}{path}"))
            .bearer_auth(alice)
            .send()
            .await
            .unwrap();
        shown.push_str(&r.text().await.unwrap());
    }
    for path in [
        format!("/api/activity?severity={SECRET}"),
        format!("/api/activity?user_id={SECRET}&{SECRET}=1"),
        "/api/activity".to_owned(),
    ] {
        let r = client
            .get(format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        shown.push_str(&r.text().await.unwrap());
    }
    bus.wait_idle().await;

    // The admin API, the scrape, the stats.
    let mut admin_shown = String::new();
    for path in [
        "/admin/api/overview".to_owned(),
        "/admin/api/handlers".to_owned(),
        "/admin/api/event-types".to_owned(),
        "/admin/api/dead-letters".to_owned(),
        format!("/admin/api/dead-letters?event_type={SECRET}&handler={SECRET}"),
        format!("/admin/api/dead-letters?limit={SECRET}"),
        "/metrics".to_owned(),
    ] {
        let r = client
            .get(format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        admin_shown.push_str(&r.text().await.unwrap());
    }
    let r = client
        .post(format!("{base}/admin/api/dead-letters/replay"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(format!("{{\"ids\": [\"{SECRET}\"]}}"))
        .send()
        .await
        .unwrap();
    admin_shown.push_str(&r.text().await.unwrap());
    let stats = bus.stats();
    shown.push_str(&format!(
        "{stats:?}\n{}\n",
        serde_json::to_string(&stats).unwrap()
    ));
    let letters = bus.dead_letters();
    assert_eq!(
        letters.len(),
        3,
        "the three undecodable cards are dead letters"
    );
    for l in &letters {
        shown.push_str(&format!("{}\n", l.error));
        admin_shown.push_str(&format!("{l:?}\n"));
        assert!(
            l.error.contains("field `") && l.error.contains(", expected "),
            "the error names the field and what was expected: {}",
            l.error
        );
    }

    // The CLI against the running service.
    let cli = env!("CARGO_BIN_EXE_tidings");
    for args in [
        vec!["stats"],
        vec!["stats", "--json"],
        vec!["dead-letters", "list"],
        vec!["dead-letters", "list", "--json"],
    ] {
        let out = tokio::process::Command::new(cli)
            .args(&args)
            .args(["--url", &base, "--token", ADMIN])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        admin_shown.push_str(&String::from_utf8_lossy(&out.stdout));
        admin_shown.push_str(&String::from_utf8_lossy(&out.stderr));
    }

    let _ = stop.send(());
    server.await.unwrap().unwrap();

    // The secret really went through: the saved message holds it.
    let tidings_events::Db::Sqlite(db) = &store else {
        unreachable!("the demo's database is SQLite")
    };
    let saved: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE content = ?")
        .bind(SECRET)
        .fetch_one(db)
        .await
        .unwrap();
    assert_eq!(
        saved, 1,
        "the valid chat's message was saved with the secret"
    );

    let logged = logs.text();
    assert!(logged.contains("TRACE"), "logs were captured at TRACE");
    assert!(
        logged.contains("canary_card"),
        "the dead letters were logged"
    );
    for (what, text) in [("answers, errors, stats, CLI", &shown), ("logs", &logged)] {
        assert_eq!(
            count(text, SECRET),
            0,
            "the secret in {what}: {}",
            around(text, SECRET)
        );
        assert_eq!(
            count(text, KEY_SECRET),
            0,
            "the key in {what}: {}",
            around(text, KEY_SECRET)
        );
        assert_eq!(count(text, "ERROR forged"), 0, "a forged line in {what}");
    }
    assert_eq!(
        count(&admin_shown, SECRET),
        0,
        "{}",
        around(&admin_shown, SECRET)
    );
    assert_eq!(count(&admin_shown, "ERROR forged"), 0);
    // The operator's views name the keys of the dead letters (by design).
    assert!(admin_shown.contains(KEY_SECRET));
}

/// The demo's banner and errors, and `tidings inspect`, with a password in
/// the NATS and PostgreSQL URLs: never printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_in_urls_are_never_printed() {
    let cli = env!("CARGO_BIN_EXE_tidings");
    let mut runs: Vec<(String, Vec<String>)> = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let bus_name = format!("canary-{}", std::process::id());
    let sqlite_args = |n: &str| {
        vec![
            "--db".to_owned(),
            format!("sqlite:{}", dir.path().join(format!("{n}.db")).display()),
            "--bus-file".to_owned(),
            dir.path().join(format!("{n}-bus.db")).display().to_string(),
        ]
    };
    // (the server's env var, the flag, the URL's user, one no server answers).
    // Trust authentication ignores a PostgreSQL password: the URL works as given.
    let servers = [
        (
            "TIDINGS_TEST_NATS_URL",
            "--nats",
            "canary",
            format!("nats://canary:{SECRET}@127.0.0.1:1"),
        ),
        (
            "TIDINGS_TEST_POSTGRES_URL",
            "--postgres",
            "postgres",
            format!("postgres://postgres:{SECRET}@127.0.0.1:1/test"),
        ),
    ];
    for (var, flag, user, unreachable) in servers {
        let Ok(base) = std::env::var(var) else {
            eprintln!("{var} unset: {flag} is not tried");
            continue;
        };
        let url = with_password(&base, user);
        let mut serve = sqlite_args(&flag[2..]);
        serve.extend([
            flag.into(),
            url.clone(),
            "--bus-name".into(),
            bus_name.clone(),
        ]);
        runs.push(("serve".into(), serve));
        // Reachable, and not: an error names the server, not the password.
        for url in [url, unreachable] {
            runs.push((
                "inspect".into(),
                vec![flag.into(), url, "--bus".into(), bus_name.clone()],
            ));
        }
    }
    for (command, args) in runs {
        let mut cmd = tokio::process::Command::new(cli);
        cmd.arg(&command)
            .args(&args)
            .env("RUST_LOG", "trace")
            .env("TIDINGS_ADMIN_TOKEN", ADMIN)
            .kill_on_drop(true);
        let out = if command == "serve" {
            // To files: a pipe nobody reads while the banner is awaited
            // would fill up with TRACE lines and stop the process.
            let (out_path, err_path) = (dir.path().join("out.txt"), dir.path().join("err.txt"));
            cmd.args(["--addr", "127.0.0.1:0"])
                .stdout(std::fs::File::create(&out_path).unwrap())
                .stderr(std::fs::File::create(&err_path).unwrap());
            let mut child = cmd.spawn().unwrap();
            let started = std::time::Instant::now();
            // Its banner, then a clean stop.
            while !std::fs::read_to_string(&out_path)
                .unwrap_or_default()
                .contains("event types:")
            {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "the demo stopped: {}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "no banner within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let pid = child.id().unwrap();
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            child.wait().await.unwrap();
            format!(
                "{}{}",
                std::fs::read_to_string(&out_path).unwrap(),
                std::fs::read_to_string(&err_path).unwrap()
            )
        } else {
            let out = cmd.output().await.unwrap();
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        assert!(
            out.contains("***") || !out.contains("://"),
            "{command} {args:?}: {out}"
        );
        assert_eq!(
            count(&out, SECRET),
            0,
            "{command} {args:?} printed the password: {}",
            around(&out, SECRET)
        );
    }
}

/// The text around the first occurrence of `needle`, for the failure message.
fn around(text: &str, needle: &str) -> String {
    match text.find(needle) {
        Some(i) => {
            let mut start = i.saturating_sub(300);
            while !text.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (i + 300).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            text[start..end].to_owned()
        }
        None => String::new(),
    }
}
