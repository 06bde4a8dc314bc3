//! `tidings stats`, `tidings dead-letters` and `tidings tail` against a
//! running demo service: what they print and their exit codes.

use serde_json::{json, Value};
use std::process::Output;
use std::time::Duration;

mod common;

const ADMIN: &str = "admin-cli-test-token-0123456789";

/// Runs `tidings args...` against `url`, with the token given.
async fn tidings(url: &str, token: &str, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"));
    cmd.args(args)
        .env("TIDINGS_URL", url)
        .env("TIDINGS_ADMIN_TOKEN", token);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_operates_a_running_service() {
    let served = common::Served::start(ADMIN, 30, false).await;
    let (base, bus) = (served.base.clone(), served.bus.clone());

    let out = tidings(&base, ADMIN, &["stats"]).await;
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("30 dead letters"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("Refuses") && l.contains("test_refused")),
        "{text}"
    );

    let out = tidings(
        &base,
        ADMIN,
        &["dead-letters", "list", "--handler", "Refuses", "--json"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.len(), 30);
    assert!(!stdout(&out).contains("hunter2"));

    let out = tidings(
        &base,
        ADMIN,
        &["dead-letters", "discard", "--error", "REFUSED", "--dry-run"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("30 dead letters would be discarded"),
        "{}",
        stdout(&out)
    );
    assert_eq!(bus.dead_letters().len(), 30);

    let first = listed[0]["id"].as_u64().unwrap().to_string();
    let out = tidings(&base, ADMIN, &["dead-letters", "discard", "--id", &first]).await;
    assert!(
        stdout(&out).contains("1 dead letters discarded, 0 failed"),
        "{out:?}"
    );
    let out = tidings(
        &base,
        ADMIN,
        &["dead-letters", "replay", "--handler", "Refuses"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("29 dead letters replayed"),
        "{}",
        stdout(&out)
    );
    bus.wait_idle().await;
    // Replayed, refused again: 29 new dead letters.
    assert_eq!(bus.dead_letters().len(), 29);

    // Exit codes a script can rely on.
    let out = tidings(&base, "a-wrong-token-0123456789", &["stats"]).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let out = tidings("http://127.0.0.1:1", ADMIN, &["stats"]).await;
    assert_eq!(out.status.code(), Some(4), "{out:?}");

    // The tail, one JSON object per line, until it is stopped.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["tail", "--json", "--url", &base, "--token", ADMIN])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut got = Vec::new();
        for line in std::io::BufReader::new(out).lines() {
            let line = line.unwrap();
            let done = line.contains("\"settled\"");
            got.push(line);
            if done {
                break;
            }
        }
        got
    });
    // Emit until the tail (connecting meanwhile) has seen one through.
    let emitting = {
        let bus = bus.clone();
        tokio::spawn(async move {
            loop {
                bus.emit("test_refused", json!({"secret": "hunter2"}))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let lines = tokio::time::timeout(Duration::from_secs(10), lines)
        .await
        .expect("the tail printed within 10 s")
        .unwrap();
    emitting.abort();
    child.kill().unwrap();
    let _ = child.wait();
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["outcome"].as_str()),
        (Some("settled"), Some("dead_lettered"))
    );
    assert!(lines.iter().all(|l| !l.contains("hunter2")));

    served.stop().await;
}
