//! A small load generator for the demo's `POST /api/chat`: a number of
//! concurrent clients, each sending one request after another, for a while.
//! Latency is measured per request with an HDR histogram.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::time::{Duration, Instant};

/// What to send, and for how long.
#[derive(Clone)]
pub struct LoadConfig {
    /// The user tokens the clients send as, in turn (at least one).
    pub tokens: Vec<String>,
    /// The service's base URL, `http://127.0.0.1:8080`.
    pub url: String,
    /// Concurrent clients.
    pub concurrency: usize,
    /// How long to measure.
    pub duration: Duration,
    /// How long to run before measuring.
    pub warmup: Duration,
    /// Requests per second in all, spread over the clients; `None` sends as
    /// fast as answers come back (a closed loop that saturates the service).
    pub rate: Option<f64>,
}

/// What the run measured.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// Requests measured.
    pub requests: u64,
    /// Requests that did not answer 2xx or 403.
    pub errors: u64,
    /// Requests per second.
    pub throughput: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Largest, microseconds.
    pub max_us: f64,
}

impl std::fmt::Debug for LoadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadConfig")
            .field("url", &self.url)
            .field("tokens", &self.tokens.len())
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// Questions the clients ask: most are new (they miss the semantic cache), as
/// each carries a request number; a few are refused below SECRET clearance.
fn question(n: u64) -> String {
    match n % 10 {
        0 => "What are the Lighthouse merger plans?".into(),
        1..=3 => format!("I forgot my password, ticket {n}, how do I reset it?"),
        4..=6 => format!("How do I set up the VPN at home, case {n}?"),
        _ => format!("What is the expense policy for trip {n}?"),
    }
}

/// Runs the load and returns its figures.
pub async fn run(config: LoadConfig) -> anyhow::Result<LoadReport> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(config.concurrency)
        .build()?;
    anyhow::ensure!(!config.tokens.is_empty(), "the load needs a user token");
    let endpoint = format!("{}/api/chat", config.url.trim_end_matches('/'));
    // Each token is tried once first: a refused one fails the run at once
    // rather than fill it with errors.
    for (i, token) in config.tokens.iter().enumerate() {
        let probe = format!(
            "{}/api/conversations/load-probe",
            config.url.trim_end_matches('/')
        );
        let res = client.get(&probe).bearer_auth(token).send().await?;
        anyhow::ensure!(
            res.status() != reqwest::StatusCode::UNAUTHORIZED,
            "user token {} of {} was refused by the service",
            i + 1,
            config.tokens.len()
        );
    }
    // Conversations of this run only: one made by an earlier run belongs to
    // whoever sent it then.
    let run: u32 = rand::random();
    let start = Instant::now();
    let measure_from = start + config.warmup;
    let stop_at = measure_from + config.duration;
    let mut tasks = Vec::new();
    for client_id in 0..config.concurrency {
        let (client, endpoint) = (client.clone(), endpoint.clone());
        let token = config.tokens[client_id % config.tokens.len()].clone();
        let mut pace = config.rate.map(|rate| {
            let period = Duration::from_secs_f64(config.concurrency as f64 / rate.max(0.001));
            let first = tokio::time::Instant::now()
                + period.mul_f64(client_id as f64 / config.concurrency as f64);
            let mut i = tokio::time::interval_at(first, period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut errors = 0u64;
            let mut n = client_id as u64 * 1_000_000;
            while Instant::now() < stop_at {
                if let Some(pace) = pace.as_mut() {
                    pace.tick().await;
                }
                n += 1;
                let body = serde_json::json!({
                    "conversation_id": format!("load-{run:08x}-{client_id}-{}", n % 20),
                    "message": question(n),
                });
                let t = Instant::now();
                let res = client
                    .post(&endpoint)
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                let elapsed = t.elapsed();
                let ok = matches!(&res, Ok(r) if r.status().is_success() || r.status() == 403);
                if let Ok(r) = res {
                    let _ = r.bytes().await;
                }
                if t >= measure_from {
                    hist.record(elapsed.as_micros() as u64).ok();
                    if !ok {
                        errors += 1;
                    }
                }
            }
            (hist, errors)
        }));
    }
    let mut total = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await?;
        total.add(h)?;
        errors += e;
    }
    Ok(LoadReport {
        requests: total.len(),
        errors,
        throughput: total.len() as f64 / config.duration.as_secs_f64(),
        p50_us: total.value_at_quantile(0.5) as f64,
        p99_us: total.value_at_quantile(0.99) as f64,
        max_us: total.max() as f64,
    })
}
