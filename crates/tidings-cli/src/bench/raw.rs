//! The distributed rows' ceilings: each engine used directly, as simply and
//! quickly as a queue can be, with the same events and emitters as the bus,
//! end to end (from the first publish or insert to the last event consumed),
//! measured in the same round as the bus.
//!
//! - **NATS JetStream** ([`nats`]): a stream of its own; `emitters` tasks
//!   publish the same JSON, each awaiting its publish's ack before its next
//!   (as an emit does), while a pull consumer takes batches and acks each
//!   message.
//! - **PostgreSQL** ([`postgres`]): a table of its own; `emitters` tasks
//!   insert in multi-row batches (a transaction each), while a second
//!   connection claims and deletes the oldest rows in batches with
//!   `FOR UPDATE SKIP LOCKED`.
//!
//! Scenario 6b's baselines are one emitter's waits ([`RawOne`]): a
//! JetStream publish awaiting its ack, a one-row `INSERT` committed; timed
//! in blocks taking turns with the bus's emits, so that both see the same
//! machine.

use futures_util::StreamExt;
use std::time::{Duration, Instant};
use tidings_benches::dynamic_payload;

/// Rows per insert, and per claim, of the PostgreSQL ceiling.
pub(super) const PG_BATCH: usize = 500;

/// NATS JetStream end to end, on a stream with `retention` (limits: the
/// engine's best; interest: as the bus's streams): events/s, or `None`
/// (said on stderr) if the server could not be used.
pub(super) async fn nats(
    url: &str,
    n: usize,
    emitters: usize,
    retention: async_nats::jetstream::stream::RetentionPolicy,
) -> Option<f64> {
    let run = async {
        let client = connect(url).await?;
        let js = async_nats::jetstream::new(client);
        let name = format!("RAWBENCH_{}", uuid::Uuid::now_v7().simple());
        let subject = format!("rawbench.{}", uuid::Uuid::now_v7().simple());
        let stream = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![subject.clone()],
                retention,
                ..Default::default()
            })
            .await?;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("raw".into()),
                ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 10_000,
                ..Default::default()
            })
            .await?;
        let per = n / emitters;
        let total = per * emitters;
        let start = Instant::now();
        let consuming = tokio::spawn(async move {
            let mut messages = consumer.messages().await?;
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
        for e in 0..emitters {
            let (js, subject) = (js.clone(), subject.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..per as u64 {
                    let body = serde_json::to_vec(&dynamic_payload((e * per) as u64 + i))?;
                    js.publish(subject.clone(), body.into()).await?.await?;
                }
                Ok::<_, async_nats::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let seen = tokio::time::timeout(Duration::from_secs(120), consuming).await???;
        let rate = seen as f64 / start.elapsed().as_secs_f64();
        js.delete_stream(&name).await?;
        Ok::<_, async_nats::Error>(rate)
    };
    run.await
        .map_err(|e| eprintln!("raw NATS: {e}; its ceiling is left empty"))
        .ok()
}

/// PostgreSQL end to end: `emitters` tasks each inserting its events
/// `batch` rows a statement (each statement committed and awaited before the
/// task's next), through up to 16 connections, while a connection of its
/// own claims and deletes them [`PG_BATCH`] at a time (`SKIP LOCKED`):
/// events/s, or `None` (said on stderr) if the server could not be used.
/// With `batch` [`PG_BATCH`], the ceiling; with 1, the same emitters each
/// awaiting every event's commit, as the bus's emitters do.
pub(super) async fn postgres(url: &str, n: usize, emitters: usize, batch: usize) -> Option<f64> {
    let run = async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(emitters.min(16) as u32 + 1)
            .connect(url)
            .await?;
        let table = format!("tidings_rawbench_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(&format!(
            "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, data JSONB NOT NULL)"
        ))
        .execute(&pool)
        .await?;
        let per = n / emitters;
        let total = per * emitters;
        let start = Instant::now();
        let consumer = {
            let (pool, table) = (pool.clone(), table.clone());
            tokio::spawn(async move {
                let claim = format!(
                    "DELETE FROM {table} WHERE id IN \
                     (SELECT id FROM {table} ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) \
                     RETURNING id"
                );
                let mut seen = 0;
                while seen < total {
                    let got = sqlx::query(&claim)
                        .bind(PG_BATCH as i64)
                        .fetch_all(&pool)
                        .await?
                        .len();
                    if got == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    seen += got;
                }
                Ok::<_, sqlx::Error>(seen)
            })
        };
        let mut tasks = Vec::new();
        for e in 0..emitters {
            let (pool, table) = (pool.clone(), table.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while i < per {
                    let batch = batch.clamp(1, PG_BATCH).min(per - i);
                    let data: Vec<serde_json::Value> = (i..i + batch)
                        .map(|k| dynamic_payload((e * per + k) as u64))
                        .collect();
                    sqlx::query(&format!(
                        "INSERT INTO {table} (data) SELECT * FROM UNNEST($1::jsonb[])"
                    ))
                    .bind(&data)
                    .execute(&pool)
                    .await?;
                    i += batch;
                }
                Ok::<_, sqlx::Error>(())
            }));
        }
        for t in tasks {
            t.await
                .map_err(|e| sqlx::Error::Protocol(e.to_string()))??;
        }
        let seen = consumer
            .await
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))??;
        let rate = seen as f64 / start.elapsed().as_secs_f64();
        sqlx::query(&format!("DROP TABLE {table}"))
            .execute(&pool)
            .await?;
        Ok::<_, sqlx::Error>(rate)
    };
    run.await
        .map_err(|e| eprintln!("raw PostgreSQL: {e}; its ceiling is left empty"))
        .ok()
}

/// One emitter's view of a raw engine, for the emit latency rows: each
/// event built and written as an emit on the bus waits for it (NATS: encoded,
/// published, its ack awaited; PostgreSQL: inserted as one row in a
/// transaction of its own, committed), timed one at a time by the caller
/// ([`RawOne::timed_writes`]) in blocks between the bus's own
/// (`durable::paired_latency`).
pub(super) enum RawOne {
    Nats {
        js: Box<async_nats::jetstream::Context>,
        stream: String,
        /// Made once: each publish clones it without a copy, as the bus's do.
        subject: async_nats::Subject,
    },
    Postgres {
        conn: Box<sqlx::PgConnection>,
        table: String,
        insert: String,
    },
}

impl RawOne {
    /// A stream of its own on the NATS server at `url`.
    pub(super) async fn nats(url: &str) -> Result<Self, String> {
        let client = connect(url).await.map_err(|e| e.to_string())?;
        let js = async_nats::jetstream::new(client);
        let stream = format!("RAWBENCH_{}", uuid::Uuid::now_v7().simple());
        let subject = format!("rawbench.{}", uuid::Uuid::now_v7().simple());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
        Ok(Self::Nats {
            js: Box::new(js),
            stream,
            subject: subject.into(),
        })
    }

    /// A table of its own in the PostgreSQL database at `url`.
    pub(super) async fn postgres(url: &str) -> Result<Self, String> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url)
            .await
            .map_err(|e| e.to_string())?;
        let table = format!("tidings_rawbench_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(&format!(
            "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, data JSONB NOT NULL)"
        ))
        .execute(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
        let insert = format!("INSERT INTO {table} (data) VALUES ($1)");
        Ok(Self::Postgres {
            conn: Box::new(conn),
            table,
            insert,
        })
    }

    /// Writes the events `range` one at a time, each wait recorded in `h`
    /// (ns); stops at the first that fails.
    pub(super) async fn timed_writes(
        &mut self,
        range: std::ops::Range<u64>,
        h: &mut hdrhistogram::Histogram<u64>,
    ) -> Result<(), String> {
        for i in range {
            let t = Instant::now();
            self.write(i).await?;
            h.record(t.elapsed().as_nanos() as u64).ok();
        }
        Ok(())
    }

    /// Writes event `i` and waits for the engine to have it.
    async fn write(&mut self, i: u64) -> Result<(), String> {
        match self {
            Self::Nats { js, subject, .. } => {
                let body = serde_json::to_vec(&dynamic_payload(i)).map_err(|e| e.to_string())?;
                js.publish(subject.clone(), body.into())
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Self::Postgres { conn, insert, .. } => {
                sqlx::query(insert)
                    .bind(dynamic_payload(i))
                    .execute(&mut **conn)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Removes its stream or table.
    pub(super) async fn close(self) {
        match self {
            Self::Nats { js, stream, .. } => {
                let _ = js.delete_stream(&stream).await;
            }
            Self::Postgres {
                mut conn, table, ..
            } => {
                let _ = sqlx::query(&format!("DROP TABLE {table}"))
                    .execute(&mut *conn)
                    .await;
            }
        }
    }
}

/// NATS JetStream keeping each key in order the way the NATS bus does,
/// without the bus: `partitions` consumers, each filtered on one partition's
/// subject with `max_ack_pending = 1` (the server hands out a partition's
/// next message only once the last is acked), each drained by its own task
/// that asks for one message at a time and acks it; `emitters` tasks publish the same JSON, each to
/// the partition of its key (`keys` of them in turn), awaiting each ack.
/// `pinned`: as the bus with pinned partitions instead (an interest-retention
/// stream, each partition's consumer with up to [`tidings_nats::PINNED_WINDOW`] out,
/// streamed to one task that acks each message in order).
/// End to end, events/s; `None` (said on stderr) if the server could not be used.
pub(super) async fn nats_partitioned(
    url: &str,
    n: usize,
    emitters: usize,
    keys: usize,
    partitions: usize,
    pinned: bool,
) -> Option<f64> {
    use async_nats::jetstream::consumer;
    let run = async {
        let client = connect(url).await?;
        let js = async_nats::jetstream::new(client.clone());
        let name = format!("RAWBENCH_{}", uuid::Uuid::now_v7().simple());
        let prefix = format!("rawbench.{}", uuid::Uuid::now_v7().simple());
        // As the pinned bus's keyed stream: interest retention (each
        // acknowledgement asks whether another consumer still needs it).
        let retention = if pinned {
            async_nats::jetstream::stream::RetentionPolicy::Interest
        } else {
            async_nats::jetstream::stream::RetentionPolicy::Limits
        };
        let stream = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![format!("{prefix}.*")],
                retention,
                ..Default::default()
            })
            .await?;
        let per = n / emitters;
        let total = per * emitters;
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let done = std::sync::Arc::new(tokio::sync::Notify::new());
        let mut consumers = Vec::new();
        for p in 0..partitions {
            let c = stream
                .create_consumer(consumer::pull::Config {
                    durable_name: Some(format!("raw{p}")),
                    filter_subject: format!("{prefix}.{p}"),
                    ack_policy: consumer::AckPolicy::Explicit,
                    max_ack_pending: if pinned {
                        tidings_nats::PINNED_WINDOW as i64
                    } else {
                        1
                    },
                    ..Default::default()
                })
                .await?;
            let (seen, done, client) = (seen.clone(), done.clone(), client.clone());
            let js2 = js.clone();
            if pinned {
                // One client per partition takes its messages as they come,
                // up to the window out, and acknowledges each in order.
                consumers.push(tokio::spawn(async move {
                    let mut messages = c.messages().await?;
                    while let Some(m) = messages.next().await {
                        m?.ack().await?;
                        if seen.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1 == total {
                            done.notify_one();
                        }
                    }
                    Ok::<_, async_nats::Error>(())
                }));
                continue;
            }
            consumers.push(tokio::spawn(async move {
                // As the bus's partition pollers do (a streaming pull was
                // slower than the bus here, measured): one subscription, a
                // pull request for one message at a time, sent when the
                // last answer came.
                let inbox = async_nats::Subject::from(client.new_inbox());
                let mut answers = client.subscribe(inbox.clone()).await?;
                let request = || consumer::pull::BatchConfig {
                    batch: 1,
                    expires: Some(Duration::from_secs(5)),
                    ..Default::default()
                };
                c.request_batch(request(), inbox.clone()).await?;
                loop {
                    let Some(m) = answers.next().await else {
                        break;
                    };
                    // The next request goes out before the ack, as the
                    // bus's poller asks again before its handler runs.
                    c.request_batch(request(), inbox.clone()).await?;
                    if m.status.is_some_and(|s| s != async_nats::StatusCode::OK) {
                        continue;
                    }
                    let m = async_nats::jetstream::Message {
                        message: m,
                        context: js2.clone(),
                    };
                    m.ack().await?;
                    if seen.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1 == total {
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
        for e in 0..emitters {
            let (js, prefix) = (js.clone(), prefix.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..per {
                    let k = (e * per + i) % keys.max(1);
                    let p = partition_of(&format!("key-{k}"), partitions);
                    let body = serde_json::to_vec(&dynamic_payload((e * per + i) as u64))?;
                    js.publish(format!("{prefix}.{p}"), body.into())
                        .await?
                        .await?;
                }
                Ok::<_, async_nats::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        tokio::time::timeout(Duration::from_secs(120), finished).await?;
        let rate = total as f64 / start.elapsed().as_secs_f64();
        for c in consumers {
            c.abort();
        }
        js.delete_stream(&name).await?;
        Ok::<_, async_nats::Error>(rate)
    };
    run.await
        .map_err(|e| eprintln!("raw NATS (key partitions): {e}; its ceiling is left empty"))
        .ok()
}

/// The partition of `key` as the NATS bus chooses it (a name-based UUID of
/// the key, modulo the partitions), so that the raw run spreads keys alike.
fn partition_of(key: &str, partitions: usize) -> u128 {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, key.as_bytes()).as_u128()
        % partitions.max(1) as u128
}

/// A client of the server at `url`, its credentials kept out of the
/// client's logs ([`tidings_nats::connect_options`]).
async fn connect(url: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    let (options, servers) = tidings_nats::connect_options(url);
    options.connect(servers.as_str()).await
}

/// The NATS server's version (for the rows' labels: the keyed ceiling
/// depends on it, BENCHMARKS section 7), or "unknown".
pub(super) async fn nats_version(url: &str) -> String {
    match connect(url).await {
        Ok(client) => client.server_info().version,
        Err(_) => "unknown".into(),
    }
}
