//! The demo under overload: first its capacity is measured (256 clients, as
//! many as it works on at once, in a closed loop for 3 s), then it is sent twice that rate, open loop, for
//! `TIDINGS_OVERLOAD_SECS` seconds (10 by default; `scripts/overload.sh`
//! runs 60 in release). Checked: every answer is a documented status (200,
//! 403 for a question above the user's clearance, or 503 with
//! `Retry-After`), none takes longer than the service's request timeout
//! (plus 2 s of slack for the client), and both messages saved through
//! `message_save` before a 200 (the question and the answer) are in the
//! database once the bus has drained.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidings_cli::demo;

mod common;

/// What the open-loop phase saw.
#[derive(Default)]
struct Seen {
    statuses: Mutex<BTreeMap<u16, u64>>,
    without_retry_after: AtomicU64,
    slowest_ms: AtomicU64,
    hung: AtomicU64,
    /// The ids of the messages (question and answer) a 200 said were saved.
    saved: Mutex<Vec<String>>,
    latencies_us: Mutex<Vec<u64>>,
}

fn question(n: u64) -> String {
    match n % 10 {
        0 => "What are the Lighthouse merger plans?".into(),
        1..=4 => format!("I forgot my password, ticket {n}, how do I reset it?"),
        _ => format!("How do I set up the VPN at home, case {n}?"),
    }
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    n: u64,
    seen: &Seen,
) -> Option<u16> {
    let body = serde_json::json!({
        "conversation_id": format!("overload-{}", n % 500),
        "message": question(n),
    });
    let t = Instant::now();
    let res = client.post(url).bearer_auth(token).json(&body).send().await;
    let Ok(res) = res else {
        seen.hung.fetch_add(1, Relaxed);
        return None;
    };
    let status = res.status().as_u16();
    let retry_after = res.headers().contains_key(reqwest::header::RETRY_AFTER);
    let value: serde_json::Value = res.json().await.unwrap_or_default();
    let took = t.elapsed();
    seen.slowest_ms.fetch_max(took.as_millis() as u64, Relaxed);
    seen.latencies_us
        .lock()
        .unwrap()
        .push(took.as_micros() as u64);
    *seen.statuses.lock().unwrap().entry(status).or_default() += 1;
    if (status == 503 || status == 429) && !retry_after {
        seen.without_retry_after.fetch_add(1, Relaxed);
    }
    if status == 200 {
        // The question and the answer, both saved before the 200.
        for field in ["question_id", "message_id"] {
            let id = value[field].as_str().expect("a 200 names both messages");
            seen.saved.lock().unwrap().push(id.to_owned());
        }
    }
    Some(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twice_its_capacity_gets_documented_statuses_in_time_and_loses_nothing() {
    let secs: u64 = std::env::var("TIDINGS_OVERLOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let common::Durable {
        dir: _dir,
        store,
        users,
        builder,
    } = common::durable().await;
    let token = users[0].1.clone();
    let bus = builder.build().unwrap();
    let state = demo::state(
        bus.clone(),
        store.clone(),
        false,
        tidings_admin::AdminConfig::new("overload-test-admin-token-0123").unwrap(),
    );
    let (base, stop, server) = common::serve(state, Duration::from_secs(120)).await;
    let client = reqwest::Client::builder()
        .timeout(demo::overload::REQUEST_TIMEOUT + Duration::from_secs(2))
        .pool_max_idle_per_host(1024)
        .build()
        .unwrap();
    let chat = format!("{base}/api/chat");

    // Capacity: a closed loop of as many clients as the service works on at
    // once, for 3 s (fewer would measure their latency, not its throughput).
    let served = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(3);
    let warm = Arc::new(Seen::default());
    let clients: Vec<_> = (0..demo::overload::MAX_IN_FLIGHT as u64)
        .map(|c| {
            let (client, chat, token, served, warm) = (
                client.clone(),
                chat.clone(),
                token.clone(),
                served.clone(),
                warm.clone(),
            );
            tokio::spawn(async move {
                let mut n = c * 1_000_000;
                while Instant::now() < until {
                    n += 1;
                    if let Some(200 | 403) = send(&client, &chat, &token, n, &warm).await {
                        served.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.await.unwrap();
    }
    let capacity = served.load(Relaxed) as f64 / 3.0;
    assert!(capacity > 0.0, "the demo served nothing");
    let rate = 2.0 * capacity;

    // Twice that, open loop: a request every 1/rate s, whatever the answers.
    let seen = Arc::new(Seen::default());
    let period = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = Vec::new();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        n += 1;
        let (client, chat, token, seen) =
            (client.clone(), chat.clone(), token.clone(), seen.clone());
        requests.push(tokio::spawn(async move {
            send(&client, &chat, &token, 100_000_000 + n, &seen).await;
        }));
    }
    for r in requests {
        r.await.unwrap();
    }
    let sent = n;

    // The bus drains, then every answer given is in the database.
    let _ = stop.send(());
    let report = server.await.unwrap().unwrap();
    assert!(report.is_clean(), "{report:?}");
    let saved = seen.saved.lock().unwrap().clone();
    let tidings_events::Db::Sqlite(db) = &store else {
        unreachable!("the demo's database is SQLite")
    };
    let mut missing = 0;
    for id in &saved {
        let found: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE message_id = ?")
            .bind(id)
            .fetch_one(db)
            .await
            .unwrap();
        if found == 0 {
            missing += 1;
        }
    }
    let statuses = seen.statuses.lock().unwrap().clone();
    let mut latencies = seen.latencies_us.lock().unwrap().clone();
    latencies.sort_unstable();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    eprintln!(
        "overload: capacity {capacity:.0}/s, sent {sent} at {rate:.0}/s for {secs} s; statuses {statuses:?}; \
         latency p50 {} ms, p99 {} ms, max {} ms; hung {}; 503 without Retry-After {}; \
         messages of 200s saved {} of {}",
        pct(0.5) / 1000,
        pct(0.99) / 1000,
        seen.slowest_ms.load(Relaxed),
        seen.hung.load(Relaxed),
        seen.without_retry_after.load(Relaxed),
        saved.len() - missing,
        saved.len()
    );
    assert!(
        statuses.keys().all(|s| matches!(s, 200 | 403 | 503)),
        "undocumented statuses: {statuses:?}"
    );
    assert!(
        statuses.contains_key(&503),
        "twice the capacity was never refused: {statuses:?}"
    );
    assert_eq!(
        seen.without_retry_after.load(Relaxed),
        0,
        "a 503 without Retry-After"
    );
    assert_eq!(
        seen.hung.load(Relaxed),
        0,
        "requests without an answer in time"
    );
    let limit = (demo::overload::REQUEST_TIMEOUT + Duration::from_secs(2)).as_millis() as u64;
    assert!(seen.slowest_ms.load(Relaxed) <= limit);
    assert_eq!(
        missing, 0,
        "answers given with a 200 whose message was lost"
    );
    assert!(!saved.is_empty());
}
