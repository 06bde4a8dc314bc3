//! Raw JetStream (no bus), for what a message's headers cost the engine:
//! 64 publishers each awaiting its ack publish 20 000 small JSON events on
//! one interest-retention stream, drained by one streamed consumer acking
//! each; prints events/s end to end. `HDR`: `none` (the payload alone),
//! `one` (a `Nats-Msg-Id` header), `all` (the three headers an unkeyed
//! tidings event had before session 28: `Nats-Msg-Id`, `Tidings-Type`,
//! `Tidings-Emitted-At`; a keyed one had `Tidings-Key` too),
//! `prefix` (no headers; the same fields as a first line of the payload, as
//! the bus frames events now). BENCHMARKS.md, section 7, session 28.
//!
//! ```sh
//! TIDINGS_NATS_URL=nats://127.0.0.1:4222 HDR=all cargo run --release -p tidings-nats --example raw_headers
//! ```
use anyhow::bail;
use async_nats::jetstream::{consumer, stream};
use futures_util::StreamExt;
use std::time::Instant;

const EVENTS: usize = 20_000;
const EMITTERS: usize = 64;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("TIDINGS_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let hdr = std::env::var("HDR").unwrap_or_else(|_| "none".into());
    if !["none", "one", "all", "prefix"].contains(&hdr.as_str()) {
        bail!("HDR is none, one, all or prefix");
    }
    let client = async_nats::connect(&url).await?;
    let js = async_nats::jetstream::new(client);
    let id = uuid::Uuid::now_v7().simple().to_string();
    let subject = format!("rawh.{id}");
    let name = format!("RAWH_{id}");
    let made = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            retention: stream::RetentionPolicy::Interest,
            ..Default::default()
        })
        .await?;
    let drained: consumer::PullConsumer = made
        .create_consumer(consumer::pull::Config {
            durable_name: Some("c".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await?;
    let per = EVENTS / EMITTERS;
    let total = per * EMITTERS;
    let start = Instant::now();
    let consuming = tokio::spawn(async move {
        let mut messages = drained.messages().await?;
        let mut seen = 0;
        while seen < total {
            let Some(m) = messages.next().await else {
                break;
            };
            m?.ack().await?;
            seen += 1;
        }
        Ok::<_, async_nats::Error>(seen)
    });
    let mut tasks = Vec::new();
    for e in 0..EMITTERS {
        let (js, subject, hdr) = (js.clone(), subject.clone(), hdr.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let body = serde_json::to_vec(&serde_json::json!({
                    "user_id": e, "action": "login", "n": i, "ip": "10.0.0.1", "ok": true
                }))?;
                let id = uuid::Uuid::now_v7().to_string();
                let at = "1796509827782959836";
                let ack = match hdr.as_str() {
                    "none" => js.publish(subject.clone(), body.into()).await?,
                    "prefix" => {
                        let mut b = format!("tidings/1 {id} {at} activity_log\n").into_bytes();
                        b.extend_from_slice(&body);
                        js.publish(subject.clone(), b.into()).await?
                    }
                    one_or_all => {
                        let mut h = async_nats::HeaderMap::new();
                        h.insert("Nats-Msg-Id", id.as_str());
                        if one_or_all == "all" {
                            h.insert("Tidings-Type", "activity_log");
                            h.insert("Tidings-Emitted-At", at);
                        }
                        js.publish_with_headers(subject.clone(), h, body.into())
                            .await?
                    }
                };
                ack.await?;
            }
            Ok::<_, async_nats::Error>(())
        }));
    }
    for t in tasks {
        t.await?.map_err(|e| anyhow::anyhow!(e))?;
    }
    let seen = consuming.await?.map_err(|e| anyhow::anyhow!(e))?;
    let rate = seen as f64 / start.elapsed().as_secs_f64();
    println!("HDR={hdr} {rate:.0} events/s");
    js.delete_stream(&name).await?;
    Ok(())
}
