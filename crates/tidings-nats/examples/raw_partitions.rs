//! Raw JetStream (no bus), for comparing stream layouts: 64 publishers each
//! awaiting its ack publish `EVENTS` JSON events over 1 000 keys; each of 16
//! key partitions is drained by one streamed consumer (up to 256 out, each
//! acked), as the bus's pinned partitions are. Prints events/s end to end.
//! `MODE`: `one` (one interest-retention stream, a filtered consumer per
//! partition: the bus's keyed stream), `many` (a stream per partition, one
//! consumer each), `limits` (one stream on limits retention), `unkeyed` (one
//! interest stream and a single unfiltered consumer with up to 4 096 out: the
//! same events without key partitions). BENCHMARKS.md, section 7, session 21.
//!
//! ```sh
//! TIDINGS_NATS_URL=nats://127.0.0.1:4222 MODE=one cargo run --release -p tidings-nats --example raw_partitions
//! ```
use anyhow::{bail, Context};
use async_nats::jetstream::{consumer, stream};
use futures_util::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EMITTERS: usize = 64;
const PARTITIONS: usize = 16;
const KEYS: usize = 1_000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("TIDINGS_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let mode = std::env::var("MODE").unwrap_or_else(|_| "one".into());
    if !["one", "many", "limits", "unkeyed", "pinned"].contains(&mode.as_str()) {
        bail!("MODE is one, many, limits, unkeyed or pinned");
    }
    let events: usize = match std::env::var("EVENTS") {
        Ok(v) => v.parse().context("EVENTS is a number")?,
        Err(_) => 20_000,
    };
    let client = async_nats::connect(&url).await?;
    let js = async_nats::jetstream::new(client.clone());
    let id = uuid::Uuid::now_v7().simple().to_string();
    let prefix = format!("rawp.{id}");
    // A stream per partition (`many`), or one for all.
    let streams = if mode == "many" { PARTITIONS } else { 1 };
    let mut made = Vec::new();
    for s in 0..streams {
        let subject = if mode == "many" {
            s.to_string()
        } else {
            "*".into()
        };
        let retention = if mode == "limits" {
            stream::RetentionPolicy::Limits
        } else {
            stream::RetentionPolicy::Interest
        };
        made.push(
            js.create_stream(stream::Config {
                name: format!("RAWP_{id}_{s}"),
                subjects: vec![format!("{prefix}.{subject}")],
                retention,
                ..Default::default()
            })
            .await?,
        );
    }
    let per = events / EMITTERS;
    let total = per * EMITTERS;
    let seen = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let mut consumers = Vec::new();
    // A consumer per partition, streamed, up to the pinned window out; or
    // (`unkeyed`) one for the whole stream.
    let (partitions, window) = if mode == "unkeyed" {
        (1, 4_096)
    } else {
        (PARTITIONS, tidings_nats::PINNED_WINDOW as i64)
    };
    for p in 0..partitions {
        let filter_subject = if mode == "unkeyed" {
            String::new()
        } else {
            format!("{prefix}.{p}")
        };
        let mut config = consumer::pull::Config {
            durable_name: Some(format!("raw{p}")),
            filter_subject,
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: window,
            ..Default::default()
        };
        if mode == "pinned" {
            config.priority_policy = consumer::PriorityPolicy::PinnedClient;
            config.priority_groups = vec!["raw".to_owned()];
            config.priority_timeout = Duration::from_secs(7);
        }
        let c = made[if mode == "many" { p } else { 0 }]
            .create_consumer(config)
            .await?;
        let (seen, done) = (seen.clone(), done.clone());
        if mode == "pinned" {
            let (client, stream) = (client.clone(), made[0].cached_info().config.name.clone());
            consumers.push(tokio::spawn(pinned_pulls(
                client, stream, p, seen, done, total,
            )));
            continue;
        }
        consumers.push(tokio::spawn(async move {
            let mut messages = c.messages().await?;
            while let Some(m) = messages.next().await {
                m?.ack().await?;
                if seen.fetch_add(1, Ordering::AcqRel) + 1 == total {
                    done.notify_one();
                }
            }
            Ok::<_, async_nats::Error>(())
        }));
    }
    let start = Instant::now();
    let finished = done.notified();
    tokio::pin!(finished);
    finished.as_mut().enable();
    let mut tasks = Vec::new();
    for e in 0..EMITTERS {
        let (js, prefix) = (js.clone(), prefix.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let n = e * per + i;
                // The bus's partition of the key (a name-based UUID of it).
                let key = format!("key-{}", n % KEYS);
                let p = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes()).as_u128()
                    % PARTITIONS as u128;
                let body = serde_json::to_vec(&serde_json::json!({
                    "user_id": n,
                    "incident_type": "UNAUTHORIZED_ACCESS",
                    "severity": "HIGH",
                    "description": "User attempted to access restricted resource",
                    "ip_address": "192.168.1.1"
                }))?;
                js.publish(format!("{prefix}.{p}"), body.into())
                    .await?
                    .await?;
            }
            Ok::<_, async_nats::Error>(())
        }));
    }
    for t in tasks {
        t.await?
            .map_err(|e| anyhow::anyhow!("a publisher failed: {e}"))?;
    }
    tokio::time::timeout(Duration::from_secs(120), finished).await?;
    let rate = total as f64 / start.elapsed().as_secs_f64();
    println!("{mode}: {rate:.0} events/s");
    for c in consumers {
        c.abort();
    }
    for s in 0..streams {
        js.delete_stream(format!("RAWP_{id}_{s}")).await?;
    }
    Ok(())
}

/// As the bus's pinned partition poller does: one pull request at a time of
/// up to 64 messages (1 s), in the priority group, with the pin once it
/// came; each message acknowledged.
async fn pinned_pulls(
    client: async_nats::Client,
    stream: String,
    p: usize,
    seen: Arc<AtomicUsize>,
    done: Arc<tokio::sync::Notify>,
    total: usize,
) -> Result<(), async_nats::Error> {
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await?;
    let subject = format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.raw{p}");
    let mut pin: Option<String> = None;
    loop {
        let mut request =
            serde_json::json!({"batch": 64, "expires": 1_000_000_000u64, "group": "raw"});
        if let Some(id) = &pin {
            request["id"] = serde_json::Value::from(id.clone());
        }
        client
            .publish_with_reply(
                subject.clone(),
                inbox.clone(),
                serde_json::to_vec(&request)?.into(),
            )
            .await?;
        let mut taken = 0;
        while let Some(m) = answers.next().await {
            if m.status.is_some_and(|s| s != async_nats::StatusCode::OK) {
                break;
            }
            if let Some(id) = m.headers.as_ref().and_then(|h| h.get_last("Nats-Pin-Id")) {
                pin = Some(id.as_str().to_owned());
            }
            if let Some(reply) = m.reply.clone() {
                client.publish(reply, "+ACK".into()).await?;
            }
            if seen.fetch_add(1, Ordering::AcqRel) + 1 == total {
                done.notify_one();
            }
            taken += 1;
            if taken == 64 {
                break;
            }
        }
    }
}
