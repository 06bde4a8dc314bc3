//! `tidings serve --postgres URL --bus-name NAME`: two demo processes share
//! one bus in PostgreSQL (`connect_shared`), each with its own SQLite data;
//! the chats sent to either are saved, each process runs handlers, and
//! nothing is left pending. Run against `TIDINGS_TEST_POSTGRES_URL`
//! (not run when unset); the bus name is purged at the end.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Demo {
    child: Child,
    base: String,
    /// The user token the demo printed for alice at its first start.
    token: String,
}

/// The admin token the test gives both demos.
const ADMIN: &str = "serve-postgres-test-admin-token";

impl Demo {
    fn start(url: &str, bus: &str, dir: &std::path::Path, n: usize) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidings"))
            .args(["serve", "--postgres", url, "--bus-name", bus])
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .arg("--db")
            .arg(format!(
                "sqlite:{}",
                dir.join(format!("demo{n}.db")).display()
            ))
            .env("TIDINGS_ADMIN_TOKEN", ADMIN)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run tidings serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(
            line.contains("PostgreSQL"),
            "the banner names the bus: {line}"
        );
        assert!(!line.contains("password"), "{line}");
        let token = loop {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "no user line printed"
            );
            if let Some(t) = line.trim().strip_prefix("user alice (PUBLIC): token ") {
                break t.to_owned();
            }
        };
        std::thread::spawn(move || for _ in out.lines() {});
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            token,
        }
    }
}

/// Purges the test's bus name when dropped: the test ended, passing or failing.
struct Purged {
    url: String,
    bus: String,
}

impl Drop for Purged {
    fn drop(&mut self) {
        let (url, bus) = (self.url.clone(), self.bus.clone());
        // On a thread of its own: the test's runtime may be the one panicking.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(tidings_postgres::PgStore::purge(&url, &bus))
        })
        .join();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_demo_processes_share_a_postgres_bus() {
    let Ok(url) = std::env::var("TIDINGS_TEST_POSTGRES_URL") else {
        eprintln!("TIDINGS_TEST_POSTGRES_URL not set: test not run");
        return;
    };
    let bus = format!("demo-{}", uuid::Uuid::now_v7().simple());
    let _purged = Purged {
        url: url.clone(),
        bus: bus.clone(),
    };
    let dir = tempfile::tempdir().unwrap();
    let demos = [
        Demo::start(&url, &bus, dir.path(), 0),
        Demo::start(&url, &bus, dir.path(), 1),
    ];
    let client = reqwest::Client::new();
    for i in 0..8 {
        let demo = &demos[i % 2];
        let r = client
            .post(format!("{}/api/chat", demo.base))
            .bearer_auth(&demo.token)
            .json(&json!({"conversation_id": format!("c{i}"),
                          "message": "How do I reset my password?"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    // Every message_save delivery is handled, by one process or the other:
    // they are keyed by conversation, so whichever instance claims first
    // runs each (a race: in 20 runs the split went from [15, 1] to [2, 14],
    // and [0, 16] happens). Each process also runs handlers: the first chat
    // it is sent finds its semantic cache empty and emits `semantic_cache`,
    // unkeyed, which the emitting instance takes as it writes it.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let mut saved = 0;
        let mut ran = Vec::new();
        for demo in &demos {
            let stats: Value = client
                .get(format!("{}/admin/api/handlers", demo.base))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let handlers = stats["handlers"].as_array().cloned().unwrap_or_default();
            let succeeded = |of: &str| -> u64 {
                handlers
                    .iter()
                    .filter(|h| h["event_type"] == of)
                    .map(|h| h["succeeded"].as_u64().unwrap_or(0))
                    .sum()
            };
            saved += succeeded("message_save");
            ran.push(succeeded("semantic_cache"));
        }
        if saved >= 16 && ran.iter().all(|n| *n > 0) {
            break;
        }
        assert!(
            Instant::now() < until,
            "{saved} of 16 message saves handled; semantic_cache runs per process: {ran:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(demos);
    let summary = tidings_postgres::PgStore::summarize(&url, &bus)
        .await
        .unwrap();
    assert!(summary.pending.is_empty(), "{summary:?}");
}
