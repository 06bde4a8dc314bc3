//! `tidings stats`, `tidings dead-letters` and `tidings tail`: a running
//! service's admin API (`tidings-admin`), from the command line.
//!
//! **Exit codes**, for scripts: `0` done; `1` any other failure; `2` a usage
//! error (from the argument parser); `3` the admin token was refused (401);
//! `4` the service could not be reached; `5` a bulk action left some dead
//! letters undone (the bus full or stopping: try again).

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::time::Duration;

/// Where the service is and how to get in.
#[derive(Clone)]
pub struct Remote {
    base: String,
    token: String,
    client: reqwest::Client,
}

/// A failure with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// 401: no token, or a wrong one.
    #[error("the admin token was refused (set --token or TIDINGS_ADMIN_TOKEN)")]
    Unauthorized,
    /// The service did not answer.
    #[error("cannot reach the service at {0}")]
    Unreachable(String),
    /// It answered with an error.
    #[error("the service answered {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// Some of a bulk action's dead letters were not done.
    #[error("{0} dead letters could not be done")]
    Partial(usize),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

impl RemoteError {
    /// The process's exit code for it.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Unauthorized => 3,
            Self::Unreachable(_) => 4,
            Self::Partial(_) => 5,
            Self::Refused { .. } | Self::Other(_) => 1,
        }
    }
}

/// Which dead letters: the admin API's filter.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Filter {
    /// Of this event type.
    #[arg(long)]
    pub event_type: Option<String>,
    /// Of this handler.
    #[arg(long)]
    pub handler: Option<String>,
    /// Whose last error contains this text (case-insensitive).
    #[arg(long)]
    pub error: Option<String>,
    /// Failed within this long (`90m`, `2d`) or since this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
}

impl Filter {
    /// As the API's JSON filter.
    fn json(&self) -> Result<Value, RemoteError> {
        let mut f = serde_json::Map::new();
        for (k, v) in [
            ("event_type", &self.event_type),
            ("handler", &self.handler),
            ("error", &self.error),
        ] {
            if let Some(v) = v {
                f.insert(k.into(), json!(v));
            }
        }
        if let Some(since) = &self.since {
            f.insert("since".into(), json!(since_time(since)?));
        }
        Ok(Value::Object(f))
    }
}

/// `90m` → that long ago, or an RFC 3339 time as given.
fn since_time(since: &str) -> Result<String, RemoteError> {
    if let Ok(d) = humantime::parse_duration(since) {
        let d = chrono::Duration::from_std(d).map_err(|e| RemoteError::Other(e.to_string()))?;
        return Ok((chrono::Utc::now() - d).to_rfc3339());
    }
    chrono::DateTime::parse_from_rfc3339(since)
        .map(|t| t.to_rfc3339())
        .map_err(|_| {
            RemoteError::Other("--since is a duration (90m, 2d) or an RFC 3339 time".into())
        })
}

impl Remote {
    /// A client of the service at `base` (`http://127.0.0.1:8080`).
    pub fn new(base: &str, token: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, RemoteError> {
        let res = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|_| RemoteError::Unreachable(self.base.clone()))?;
        match res.status().as_u16() {
            200..=299 => Ok(res),
            401 => Err(RemoteError::Unauthorized),
            status => {
                let body: Value = res.json().await.unwrap_or(Value::Null);
                Err(RemoteError::Refused {
                    status,
                    message: body["message"].as_str().unwrap_or("no message").to_owned(),
                })
            }
        }
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, RemoteError> {
        let req = self
            .client
            .get(format!("{}/admin/api{path}", self.base))
            .query(query);
        self.send(req)
            .await?
            .json()
            .await
            .map_err(|e| RemoteError::Other(e.to_string()))
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, RemoteError> {
        let req = self
            .client
            .post(format!("{}/admin/api{path}", self.base))
            .json(body);
        self.send(req)
            .await?
            .json()
            .await
            .map_err(|e| RemoteError::Other(e.to_string()))
    }

    /// `tidings stats`: the overview and a table of the handlers.
    pub async fn stats(&self, as_json: bool) -> Result<(), RemoteError> {
        let overview = self.get("/overview", &[]).await?;
        let handlers = self.get("/handlers", &[]).await?;
        if as_json {
            println!(
                "{}",
                json!({"overview": overview, "handlers": handlers["handlers"]})
            );
            return Ok(());
        }
        println!(
            "bus {}: {} pending of {}, {} dead letters; event types: {}",
            if overview["enabled"] == true {
                "enabled"
            } else {
                "disabled"
            },
            overview["pending"],
            overview["capacity"],
            overview["dead_letters"],
            overview["event_types"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        );
        println!(
            "{:<28} {:<20} {:>10} {:>8} {:>8} {:>6} {:>8} {:>9} {:>9}",
            "handler",
            "event type",
            "succeeded",
            "failed",
            "retried",
            "dead",
            "queued",
            "p50 ms",
            "p99 ms"
        );
        for h in handlers["handlers"].as_array().into_iter().flatten() {
            let ms = |k: &str| {
                h["latency"][k]
                    .as_f64()
                    .map_or("-".into(), |ns| format!("{:.2}", ns / 1e6))
            };
            println!(
                "{:<28} {:<20} {:>10} {:>8} {:>8} {:>6} {:>8} {:>9} {:>9}",
                h["name"].as_str().unwrap_or(""),
                h["event_type"].as_str().unwrap_or(""),
                h["succeeded"],
                h["failed"],
                h["retried"],
                h["dead_lettered"],
                h["queued"],
                ms("p50_ns"),
                ms("p99_ns"),
            );
        }
        Ok(())
    }

    /// Every dead letter the filter matches, page by page.
    async fn matching(&self, filter: &Filter) -> Result<Vec<Value>, RemoteError> {
        let f = filter.json()?;
        let mut query: Vec<(&str, String)> = f
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        query.push(("limit", "500".into()));
        let mut all = Vec::new();
        let mut after: Option<u64> = None;
        loop {
            let mut q = query.clone();
            if let Some(a) = after {
                q.push(("after", a.to_string()));
            }
            let page = self.get("/dead-letters", &q).await?;
            all.extend(page["dead_letters"].as_array().cloned().unwrap_or_default());
            match page["next"].as_u64() {
                Some(n) => after = Some(n),
                None => return Ok(all),
            }
        }
    }

    /// `tidings dead-letters list`.
    pub async fn list(&self, filter: &Filter, as_json: bool) -> Result<(), RemoteError> {
        let letters = self.matching(filter).await?;
        if as_json {
            println!("{}", Value::Array(letters));
            return Ok(());
        }
        println!(
            "{:>8} {:<24} {:<20} {:>8} {:<25} error",
            "id", "handler", "event type", "attempts", "failed at"
        );
        for d in &letters {
            let error: String = d["error"].as_str().unwrap_or("").chars().take(60).collect();
            println!(
                "{:>8} {:<24} {:<20} {:>8} {:<25} {}",
                d["id"],
                d["handler"].as_str().unwrap_or(""),
                d["event_type"].as_str().unwrap_or(""),
                d["attempts"],
                d["failed_at"].as_str().unwrap_or(""),
                error
            );
        }
        println!("{} dead letters", letters.len());
        Ok(())
    }

    /// `tidings dead-letters replay|discard`: the ids given, or all the
    /// filter matches, in batches of 500 with a progress bar; a dry run
    /// only counts.
    pub async fn bulk(
        &self,
        action: &str,
        ids: &[u64],
        filter: &Filter,
        dry_run: bool,
        progress: bool,
    ) -> Result<(), RemoteError> {
        let path = format!("/dead-letters/{action}");
        if dry_run {
            let body = if ids.is_empty() {
                json!({"filter": filter.json()?, "dry_run": true})
            } else {
                json!({"ids": ids, "dry_run": true})
            };
            let report = self.post(&path, &body).await?;
            println!(
                "{} dead letters would be {action}ed (dry run)",
                report["matched"]
            );
            return Ok(());
        }
        let ids: Vec<u64> = if ids.is_empty() {
            self.matching(filter)
                .await?
                .iter()
                .filter_map(|d| d["id"].as_u64())
                .collect()
        } else {
            ids.to_vec()
        };
        let bar = if progress {
            ProgressBar::new(ids.len() as u64)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
                .map_err(|e| RemoteError::Other(e.to_string()))?
                .progress_chars("=> "),
        );
        bar.set_message(format!("{action}ing"));
        let (mut done, mut failed, mut errors) = (0usize, 0usize, Vec::new());
        for chunk in ids.chunks(500) {
            let report = self.post(&path, &json!({"ids": chunk})).await?;
            done += report["done"].as_u64().unwrap_or(0) as usize;
            failed += report["failed"].as_u64().unwrap_or(0) as usize;
            errors.extend(report["errors"].as_array().cloned().unwrap_or_default());
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        println!("{done} dead letters {action}ed, {failed} failed");
        for e in errors.iter().take(10) {
            println!("  {}", e.as_str().unwrap_or_default());
        }
        if failed > 0 {
            return Err(RemoteError::Partial(failed));
        }
        Ok(())
    }

    /// `tidings tail`: one line per tiding until interrupted or the service
    /// stops.
    pub async fn tail(&self, as_json: bool) -> Result<(), RemoteError> {
        let req = self.client.get(format!("{}/admin/api/tail", self.base));
        let mut res = self.send(req).await?;
        let mut buf = String::new();
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|_| RemoteError::Unreachable(self.base.clone()))?
        {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                print_frame(&frame, as_json);
            }
        }
        Ok(())
    }
}

/// Prints one Server-Sent Event of the tail.
fn print_frame(frame: &str, as_json: bool) {
    let mut event = "message";
    let mut data = String::new();
    for line in frame.lines() {
        if let Some(e) = line.strip_prefix("event: ") {
            event = e;
        } else if let Some(d) = line.strip_prefix("data: ") {
            data.push_str(d);
        }
    }
    if data.is_empty() {
        return;
    }
    if event == "lagged" {
        eprintln!("(fell behind: {data} skipped)");
        return;
    }
    if as_json {
        println!("{data}");
        return;
    }
    let Ok(t) = serde_json::from_str::<Value>(&data) else {
        return;
    };
    let key = t["key"]
        .as_str()
        .map(|k| format!(" key={k}"))
        .unwrap_or_default();
    match t["kind"].as_str() {
        Some("emitted") => println!(
            "emitted  {} {}{key}",
            t["event_type"].as_str().unwrap_or(""),
            t["event_id"].as_str().unwrap_or("")
        ),
        Some("settled") => println!(
            "{:<8} {} {} {} attempt {}",
            t["outcome"].as_str().unwrap_or(""),
            t["event_type"].as_str().unwrap_or(""),
            t["event_id"].as_str().unwrap_or(""),
            t["handler"].as_str().unwrap_or(""),
            t["attempt"]
        ),
        _ => {}
    }
}
