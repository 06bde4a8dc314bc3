//! The fuzz targets' oracles: each takes the fuzzer's bytes, builds a hostile
//! input from them, hands it to Tidings, and panics if an invariant breaks.
//!
//! The invariants, for every target:
//! - **no panic**, whatever the input (libFuzzer aborts on any panic, in any
//!   thread);
//! - **typed refusals**: an input is refused with the error of what is wrong
//!   with it, and accepted only when valid;
//! - **no value shown**: every string value the oracle puts in a payload,
//!   key, row or body starts with the marker [`MARK`] (and the marker is
//!   taken out of everything else the fuzzer chose: names, types, object
//!   keys); no error text, log line (captured at TRACE) or HTTP answer may
//!   hold it;
//! - **one bounded line**: error texts hold no control character.
//!
//! `fuzz/run.sh SECONDS` runs each target; `tests/replay.rs` replays every
//! input kept in `fuzz/regressions/<target>/` (the crashes found, once
//! fixed) and `fuzz/seeds/<target>/` in `cargo test --workspace`.

use arbitrary::Unstructured;
use serde_json::{json, Map, Value};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tidings::store::{
    Begun, BoundHandler, Change, Recovered, StoredDeadLetter, StoredDelivery, StoredEvent,
};
use tidings::{EmitError, Envelope, EventBus, EventHandler, HandlerError};

/// What every value the oracles plant starts with; found in any output, a
/// value leaked.
pub const MARK: &str = "Zq~";

/// A typed payload with numbers, strings, an enum, a list and a nested
/// object: what the decode paths are tried against.
#[derive(serde::Deserialize, serde::Serialize, Debug, Clone, tidings::Event)]
#[event(type = "card")]
pub struct Card {
    /// A number.
    pub account: u64,
    /// A string.
    pub holder: String,
    /// An enum.
    pub plan: Plan,
    /// A list.
    pub tags: Vec<String>,
    /// A nested object.
    pub address: Address,
}

/// [`Card::plan`].
#[derive(serde::Deserialize, serde::Serialize, Debug, Clone)]
pub enum Plan {
    /// One.
    Free,
    /// Two.
    Pro,
}

/// [`Card::address`].
#[derive(serde::Deserialize, serde::Serialize, Debug, Clone)]
pub struct Address {
    /// A nested number.
    pub zip: u32,
    /// A nested optional string.
    pub city: Option<String>,
}

/// `s` without the marker (for what the fuzzer names rather than fills).
fn unmarked(s: &str) -> String {
    s.replace(MARK, "")
}

/// A JSON value built from the fuzzer's bytes: every string leaf marked,
/// no object key holding the marker, nested at most `depth` deep.
fn value(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    let pick: u8 = if depth == 0 {
        u.int_in_range(0..=4)?
    } else {
        u.int_in_range(0..=6)?
    };
    Ok(match pick {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => json!(u.arbitrary::<i64>()?),
        3 => serde_json::Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        4 => Value::String(format!("{MARK}{}", u.arbitrary::<String>()?)),
        5 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array(
                (0..n)
                    .map(|_| value(u, depth - 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => Value::Object(object(u, depth - 1)?),
    })
}

/// A JSON object built from the fuzzer's bytes (see [`value`]); often with
/// the fields of a [`Card`], so that decoding goes deep.
fn object(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Map<String, Value>> {
    let mut m = Map::new();
    let n = u.int_in_range(0..=6)?;
    for _ in 0..n {
        let name = match u.int_in_range(0..=7)? {
            0 => "account".to_owned(),
            1 => "holder".to_owned(),
            2 => "plan".to_owned(),
            3 => "tags".to_owned(),
            4 => "address".to_owned(),
            5 => "zip".to_owned(),
            6 => "city".to_owned(),
            _ => unmarked(&u.arbitrary::<String>()?),
        };
        m.insert(name, value(u, depth)?);
    }
    Ok(m)
}

/// Panics if `text` shows a planted value or is not one line.
fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(MARK), "{what} shows a value: {text:?}");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{what} holds a control character: {text:?}"
    );
}

/// Every log line, at TRACE, spans included: what the oracles search.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut held = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: a long run keeps only what the current input logged.
        if held.len() > 1 << 22 {
            held.clear();
        }
        held.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process's log capture and runtime, made once.
struct World {
    logs: Logs,
    runtime: tokio::runtime::Runtime,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let logs = Logs::default();
        let writer = logs.clone();
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
                .with_writer(move || writer.clone())
                .finish(),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        World { logs, runtime }
    })
}

/// Runs `f` with the log capture emptied before, and checks what it logged.
fn logged<T>(f: impl FnOnce(&World) -> T) -> T {
    let w = world();
    w.logs
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
    let out = f(w);
    let text = String::from_utf8_lossy(
        &w.logs
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned();
    assert!(!text.contains(MARK), "a log line shows a value: {text}");
    out
}

/// Decodes its payload as a [`Card`] (durable buses hand it JSON text).
struct Decodes;

impl EventHandler for Decodes {
    fn event_type(&self) -> &str {
        "card_text"
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        event.decode::<Card>()?;
        Ok(())
    }
}

impl EventHandler for Takes {
    fn event_type(&self) -> &str {
        "t"
    }
    fn options(&self) -> tidings::HandlerOptions {
        tidings::HandlerOptions::default()
            .attempts(2)
            .backoff(tidings::Backoff::fixed(Duration::from_millis(1)))
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let _ = event.data();
        let _ = event.key();
        if event.attempt() == 1 {
            return Err(HandlerError::retryable("first attempts fail"));
        }
        Ok(())
    }
}

/// A typed handler of [`Card`]: a dynamic emit of `card` is decoded at emit.
struct OnCard;

impl EventHandler for OnCard {
    fn event_type(&self) -> &str {
        "card"
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        event.decode::<Card>()?;
        Ok(())
    }
    fn payload_type(&self) -> Option<tidings::PayloadType> {
        Some(tidings::PayloadType::of::<Card>())
    }
}

/// Takes anything, and fails once (a retry, then done).
struct Takes;

/// **emit**: a hostile type, key and payload, emitted on a bus with a typed
/// handler (`card`) and a dynamic one (`t`). Accepted only when all three
/// are valid (and the payload decodes as a `Card` for `card`); otherwise
/// refused with the error of the part that is wrong, which shows no value.
pub fn emit(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((event_type, key, payload)) = (|| -> arbitrary::Result<_> {
        let event_type = match u.int_in_range(0..=3)? {
            0 => "t".to_owned(),
            1 => "card".to_owned(),
            _ => unmarked(&u.arbitrary::<String>()?),
        };
        let key: Option<String> = match u.int_in_range(0..=2)? {
            0 => None,
            1 => Some(format!("{MARK}{}", u.arbitrary::<String>()?)),
            _ => Some(u.arbitrary::<String>()?),
        };
        let payload = if u.arbitrary()? {
            Value::Object(object(&mut u, 3)?)
        } else {
            value(&mut u, 3)?
        };
        Ok((event_type, key, payload))
    })() else {
        return;
    };
    static BUS: OnceLock<EventBus> = OnceLock::new();
    logged(|w| {
        let bus = BUS.get_or_init(|| {
            let _guard = w.runtime.enter();
            EventBus::builder()
                .discover(false)
                .handler(Takes)
                .handler(OnCard)
                .capacity(1 << 16)
                .build()
                .expect("a bus")
        });
        let _guard = w.runtime.enter();
        let mut emit = bus.emit(&event_type, payload.clone());
        if let Some(k) = &key {
            emit = emit.key(k.clone());
        }
        let result = emit.try_emit();
        let type_ok = tidings::is_valid_event_type(&event_type);
        let key_ok = key.as_deref().is_none_or(tidings::is_valid_key);
        match result {
            Ok(_) => {
                assert!(
                    type_ok && key_ok && payload.is_object(),
                    "accepted invalid input"
                );
                if event_type == "card" {
                    assert!(serde_json::from_value::<Card>(payload).is_ok());
                }
            }
            Err(e) => {
                let text = e.to_string();
                assert_clean("an emit error", &text);
                assert_clean("an emit error's Debug", &format!("{e:?}"));
                assert!(text.len() < 2048, "{} bytes", text.len());
                let right = match &e {
                    EmitError::InvalidEventType { .. } => !type_ok,
                    EmitError::InvalidKey { .. } => type_ok && !key_ok,
                    EmitError::InvalidPayload { .. } => type_ok && key_ok && !payload.is_object(),
                    EmitError::PayloadMismatch { .. } => event_type == "card",
                    EmitError::QueueFull { .. } | EmitError::PayloadTooLarge { .. } => true,
                    _ => false,
                };
                assert!(right, "refused with the wrong error: {e:?}");
            }
        }
    });
}

/// **decode**: a payload, as a value and as the JSON text a durable bus
/// hands back, decoded as a [`Card`]; and any text told by
/// [`tidings::redact::decode_problem`]. A failure names the field and what
/// was expected, in one line, without the value.
pub fn decode(data: &[u8]) {
    // Any text: told as one bounded line.
    let told = tidings::redact::decode_problem(&String::from_utf8_lossy(data));
    assert!(!told.chars().any(char::is_control), "{told:?}");
    assert!(
        told.len() <= tidings::redact::MAX_ERROR_LEN + 3,
        "{} bytes",
        told.len()
    );
    let mut u = Unstructured::new(data);
    let Ok(payload) = object(&mut u, 4) else {
        return;
    };
    let envelope = tidings::testing::envelope("card", Value::Object(payload.clone()));
    match envelope.decode::<Card>() {
        Ok(card) => assert!(
            serde_json::from_value::<Card>(Value::Object(payload.clone())).is_ok(),
            "{:?}",
            &*card
        ),
        Err(e) => {
            assert!(
                !e.is_retryable(),
                "a payload that does not decode is permanent"
            );
            assert_clean("a decode error", &e.to_string());
        }
    }
    // The same payload as text with a number planted as well: serde quotes
    // numbers too ("integer `4111`").
    let text = serde_json::to_string(&payload).unwrap_or_default();
    if let Err(e) = serde_json::from_str::<Card>(&text) {
        let told = tidings::redact::decode_problem(&e.to_string());
        assert_clean("a decode problem", &told);
        for n in numbers(&Value::Object(payload)) {
            assert!(!told.contains(&n), "a number shown: {n} in {told:?}");
        }
    }
}

/// The integers of 7 digits or more in `v` (shorter ones could be a line or
/// a column).
fn numbers(v: &Value) -> Vec<String> {
    match v {
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            let s = n.to_string();
            if s.trim_start_matches('-').len() >= 7 {
                vec![s]
            } else {
                Vec::new()
            }
        }
        Value::Array(a) => a.iter().flat_map(numbers).collect(),
        Value::Object(o) => o.values().flat_map(numbers).collect(),
        _ => Vec::new(),
    }
}

/// A store that hands back, at start, what the fuzzer wrote.
struct Handed(Mutex<Option<Recovered>>);

impl tidings::Store for Handed {
    fn append(
        &self,
        _: StoredEvent,
    ) -> futures_util::future::BoxFuture<'static, Result<(), tidings::StoreError>> {
        Box::pin(async { Ok(()) })
    }
    fn settle(&self, _: tidings::store::DeliveryRef<'_>, _: Change) {}
    fn recover(
        &self,
        _: &[BoundHandler],
        _: tidings::store::Answers,
    ) -> Result<Recovered, tidings::StoreError> {
        Ok(self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or_default())
    }
    fn flush(&self) -> futures_util::future::BoxFuture<'static, Result<(), tidings::StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Text a store might hold: often a valid name, sometimes anything.
fn name(u: &mut Unstructured<'_>, valid: &[&str]) -> arbitrary::Result<String> {
    let i: usize = u.int_in_range(0..=3)?;
    Ok(match i {
        3 => unmarked(&u.arbitrary::<String>()?),
        i => valid[i % valid.len()].to_owned(),
    })
}

/// Events and dead letters as a store might hand them back, corrupt or not.
fn recovered(u: &mut Unstructured<'_>) -> arbitrary::Result<Recovered> {
    let mut r = Recovered::default();
    for _ in 0..u.int_in_range(0..=6)? {
        let event_type = name(u, &["t", "card_text", "card"])?;
        let data = match u.int_in_range(0..=3)? {
            0 => format!("{MARK}{}", u.arbitrary::<String>()?),
            1 => serde_json::to_string(&value(u, 3)?).unwrap_or_default(),
            _ => serde_json::to_string(&object(u, 3)?).unwrap_or_default(),
        };
        let key = if u.arbitrary()? {
            Some(format!("{MARK}{}", u.arbitrary::<String>()?))
        } else {
            None
        };
        let mut deliveries = Vec::new();
        for _ in 0..u.int_in_range(0..=3)? {
            let mut d =
                StoredDelivery::new(name(u, &["Takes", "Decodes", "OnCard"])?, u.arbitrary()?);
            d.begun = match u.int_in_range(0..=2)? {
                0 => Begun::Never,
                1 => Begun::Maybe,
                _ => Begun::Interrupted,
            };
            deliveries.push(d);
        }
        let event = StoredEvent {
            id: uuid::Uuid::from_u128(u.arbitrary()?),
            event_type,
            key,
            emitted_at: std::time::UNIX_EPOCH + Duration::from_nanos(u.arbitrary()?),
            data,
            deliveries,
        };
        if u.int_in_range(0..=3)? == 0 {
            r.dead_letters.push(StoredDeadLetter {
                handler: name(u, &["Takes", "Decodes"])?,
                attempts: u.arbitrary()?,
                error: unmarked(&u.arbitrary::<String>()?),
                failed_at: std::time::UNIX_EPOCH + Duration::from_nanos(u.arbitrary()?),
                event,
            });
        } else {
            r.events.push(event);
        }
    }
    Ok(r)
}

/// Starts a bus over `store` with the oracles' handlers, lets it make
/// what it can, checks its dead letters and its shutdown report, and stops it.
async fn run_over(store: impl tidings::Store) {
    let bus = EventBus::builder()
        .discover(false)
        .handler(Takes)
        .handler(Decodes)
        .handler(OnCard)
        .store(store)
        .build();
    let bus = match bus {
        Ok(bus) => bus,
        Err(e) => {
            assert_clean("a build error", &e.to_string());
            return;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), bus.wait_idle()).await;
    for letter in bus.dead_letters() {
        assert_clean("a dead letter's error", &letter.error);
    }
    let report = bus.shutdown(Duration::from_secs(5)).await;
    assert_clean("a shutdown report", &format!("{report:?}"));
}

/// **stored**: what a store hands back at start (the common path of the
/// SQLite and PostgreSQL row decoders and the NATS message decoder), corrupt
/// on purpose: ids, types, keys, handler names, attempts, begin marks, data
/// that is not JSON or not an object or not a `Card`. The bus starts, makes
/// what it can (a decode failure becomes a dead letter whose error shows no
/// value), leaves the rest in the store, and stops; nothing logged shows a
/// value.
pub fn stored(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(r) = recovered(&mut u) else {
        return;
    };
    logged(|w| w.runtime.block_on(run_over(Handed(Mutex::new(Some(r))))));
}

/// **sqlite_rows**: rows written straight into a SQLite bus file, of any
/// type SQLite takes in any column (it is dynamically typed): blobs for
/// ids, text for times, invalid JSON for data. Opening the store either
/// fails with a typed error or starts a bus as [`stored`] does.
pub fn sqlite_rows(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let dir = tempfile::Builder::new()
        .prefix("tidings-fuzz")
        .tempdir_in(if std::path::Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        })
        .expect("a temporary directory");
    let path = dir.path().join("bus.db");
    logged(|w| {
        w.runtime.block_on(async {
            // The schema, made by the store itself.
            drop(tidings_sqlite::SqliteStore::open(&path).expect("a new store"));
        });
    });
    let Ok(conn) = rusqlite::Connection::open(&path) else {
        return;
    };
    let cell = |u: &mut Unstructured<'_>| -> arbitrary::Result<rusqlite::types::Value> {
        use rusqlite::types::Value as V;
        Ok(match u.int_in_range(0..=4)? {
            0 => V::Null,
            1 => V::Integer(u.arbitrary()?),
            2 => V::Real(u.arbitrary()?),
            3 => V::Text(format!("{MARK}{}", u.arbitrary::<String>()?)),
            _ => V::Blob(u.arbitrary()?),
        })
    };
    let rows = (|| -> arbitrary::Result<()> {
        for _ in 0..u.int_in_range(0..=4)? {
            let seq: i64 = u.int_in_range(1..=8)?;
            let id = if u.arbitrary()? {
                rusqlite::types::Value::Blob(
                    uuid::Uuid::from_u128(u.arbitrary()?).as_bytes().to_vec(),
                )
            } else {
                cell(&mut u)?
            };
            let event_type = if u.arbitrary()? {
                rusqlite::types::Value::Text(name(&mut u, &["t", "card_text"])?)
            } else {
                cell(&mut u)?
            };
            let values = [id, event_type, cell(&mut u)?, cell(&mut u)?, cell(&mut u)?];
            let _ = conn.execute(
                "INSERT OR IGNORE INTO events (seq, id, event_type, key, emitted_at, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                rusqlite::params![seq, values[0], values[1], values[2], values[3], values[4]],
            );
            let handler = if u.arbitrary()? {
                rusqlite::types::Value::Text(name(&mut u, &["Takes", "Decodes"])?)
            } else {
                cell(&mut u)?
            };
            let (attempt, begun) = (cell(&mut u)?, cell(&mut u)?);
            let _ = conn.execute(
                "INSERT OR IGNORE INTO deliveries (seq, handler, attempt, begun) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![seq, handler, attempt, begun],
            );
            if u.arbitrary()? {
                // The error column holds the bus's own (already safe)
                // text: what it holds is shown as is, so it is not marked.
                let (handler, attempts) = (cell(&mut u)?, cell(&mut u)?);
                let error = match cell(&mut u)? {
                    rusqlite::types::Value::Text(t) => rusqlite::types::Value::Text(unmarked(&t)),
                    other => other,
                };
                let values = [handler, attempts, error, cell(&mut u)?];
                let _ = conn.execute(
                    "INSERT OR IGNORE INTO dead_letters (seq, handler, attempts, error, failed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    rusqlite::params![seq, values[0], values[1], values[2], values[3]],
                );
            }
        }
        Ok(())
    })();
    drop(conn);
    if rows.is_err() {
        return;
    }
    logged(|w| {
        w.runtime.block_on(async {
            let store = match tidings_sqlite::SqliteStore::open(&path) {
                Ok(store) => store,
                Err(e) => {
                    assert_clean("an open error", &e.to_string());
                    return;
                }
            };
            run_over(store).await;
        });
    });
}

/// **pg_rows**: rows written straight into the PostgreSQL store's tables
/// for a bus name of its own (`TIDINGS_TEST_POSTGRES_URL`; nothing is done
/// without it): any text in the text columns, any integer in the attempts,
/// begin marks and times (negative too), deliveries and dead letters of
/// events that do not exist. The store then opens (recovers) and a bus
/// starts as [`stored`] does, or the open fails with a typed error; the
/// bus name is purged afterwards.
///
/// # Panics
/// Also when the variable is set and the server is unreachable.
pub fn pg_rows(data: &[u8]) {
    let Ok(url) = std::env::var("TIDINGS_TEST_POSTGRES_URL") else {
        return;
    };
    let mut u = Unstructured::new(data);
    struct Row {
        id: uuid::Uuid,
        event_type: String,
        key: Option<String>,
        at: i64,
        data: String,
        handler: String,
        attempt: i32,
        begun: i32,
        queued: bool,
        dead: Option<(i32, String, i64)>,
    }
    let Ok(rows) = (|| -> arbitrary::Result<Vec<Row>> {
        let mut rows = Vec::new();
        for _ in 0..u.int_in_range(0..=4)? {
            rows.push(Row {
                id: uuid::Uuid::from_u128(u.int_in_range(0..=3)?),
                event_type: name(&mut u, &["t", "card_text", "card"])?,
                key: if u.arbitrary()? {
                    Some(format!("{MARK}{}", u.arbitrary::<String>()?))
                } else {
                    None
                },
                at: u.arbitrary()?,
                data: match u.int_in_range(0..=2)? {
                    0 => format!("{MARK}{}", u.arbitrary::<String>()?),
                    _ => serde_json::to_string(&object(&mut u, 3)?).unwrap_or_default(),
                },
                handler: name(&mut u, &["Takes", "Decodes", "OnCard"])?,
                attempt: u.arbitrary()?,
                begun: u.arbitrary()?,
                queued: u.arbitrary()?,
                dead: if u.arbitrary()? {
                    Some((
                        u.arbitrary()?,
                        unmarked(&u.arbitrary::<String>()?),
                        u.arbitrary()?,
                    ))
                } else {
                    None
                },
            });
        }
        Ok(rows)
    })() else {
        return;
    };
    let bus = format!("fuzz-{}", uuid::Uuid::now_v7().simple());
    logged(|w| {
        w.runtime.block_on(async {
            use sqlx::Connection;
            // The tables, made once by the store itself.
            static SCHEMA: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
            SCHEMA
                .get_or_init(|| async {
                    let store = tidings_postgres::PgStore::connect(&url, "fuzz-schema")
                        .await
                        .expect("TIDINGS_TEST_POSTGRES_URL is set: the server must answer");
                    drop(store);
                })
                .await;
            let mut conn = sqlx::PgConnection::connect(&url)
                .await
                .expect("TIDINGS_TEST_POSTGRES_URL is set: the server must answer");
            for r in &rows {
                // A value PostgreSQL refuses (a NUL in a text) is not written.
                let _ = sqlx::query(
                    "INSERT INTO tidings_events (id, bus, event_type, key, emitted_at_ns, data)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(r.id)
                .bind(&bus)
                .bind(&r.event_type)
                .bind(&r.key)
                .bind(r.at)
                .bind(&r.data)
                .execute(&mut conn)
                .await;
                let _ = sqlx::query(
                    "INSERT INTO tidings_deliveries (event_id, handler, attempt, begun, queued)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(r.id)
                .bind(&r.handler)
                .bind(r.attempt)
                .bind(r.begun)
                .bind(r.queued)
                .execute(&mut conn)
                .await;
                if let Some((attempts, error, at)) = &r.dead {
                    let _ = sqlx::query(
                        "INSERT INTO tidings_dead_letters (event_id, handler, attempts, error, failed_at_ns)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    )
                    .bind(r.id)
                    .bind(&r.handler)
                    .bind(attempts)
                    .bind(error)
                    .bind(at)
                    .execute(&mut conn)
                    .await;
                }
            }
            match tidings_postgres::PgStore::connect(&url, &bus).await {
                Ok(store) => run_over(store).await,
                Err(e) => assert_clean("an open error", &e.to_string()),
            }
            // Rows of events that never existed are not the bus's to purge.
            let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
            for table in ["tidings_deliveries", "tidings_dead_letters"] {
                let _ = sqlx::query(&format!(
                    "DELETE FROM {table} WHERE event_id = ANY($1) AND NOT EXISTS
                       (SELECT 1 FROM tidings_events e WHERE e.id = event_id AND e.bus <> $2)"
                ))
                .bind(&ids)
                .bind(&bus)
                .execute(&mut conn)
                .await;
            }
            tidings_postgres::PgStore::purge(&url, &bus)
                .await
                .expect("the bus name purged");
        });
    });
}

/// **nats_message**: a stream message's headers and payload, and a
/// dead-letter bucket's value, as the server might hand them back (written
/// by anyone with access to the stream). Read back, or refused with a
/// reason that shows no value.
pub fn nats_message(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok((headers, payload, record)) = (|| -> arbitrary::Result<_> {
        let mut headers: [Option<String>; 6] = Default::default();
        for (i, h) in headers.iter_mut().enumerate() {
            *h = match u.int_in_range(0..=3)? {
                0 => None,
                1 if i == 0 || i == 4 => Some(uuid::Uuid::from_u128(u.arbitrary()?).to_string()),
                1 if i == 3 => Some(u.arbitrary::<u64>()?.to_string()),
                _ => Some(format!("{MARK}{}", u.arbitrary::<String>()?)),
            };
        }
        let mut payload: Vec<u8> = Vec::new();
        if u.arbitrary()? {
            // A frame (as a bus made now writes events), its fields arbitrary.
            let id = match u.arbitrary()? {
                true => uuid::Uuid::from_u128(u.arbitrary()?).to_string(),
                false => u.arbitrary()?,
            };
            let at = match u.arbitrary()? {
                true => u.arbitrary::<u64>()?.to_string(),
                false => u.arbitrary()?,
            };
            let (t, k): (String, Option<String>) = (u.arbitrary()?, u.arbitrary()?);
            payload.extend(format!("tidings/1 {id} {at} {t}").bytes());
            if let Some(k) = k {
                payload.extend(format!(" {k}").bytes());
            }
            if u.arbitrary()? {
                payload.push(b'\n');
            }
        }
        payload.extend(u.arbitrary::<Vec<u8>>()?);
        let record = if u.arbitrary()? {
            serde_json::to_vec(&object(&mut u, 3)?).unwrap_or_default()
        } else {
            u.arbitrary()?
        };
        Ok((headers, payload, record))
    })() else {
        return;
    };
    // Header values the client would refuse to send are not tried.
    if headers.iter().flatten().any(|h| h.contains(['\r', '\n'])) {
        return;
    }
    let as_str: [Option<&str>; 6] = [0, 1, 2, 3, 4, 5].map(|i| headers[i].as_deref());
    match tidings_nats::__fuzz::event(as_str, &payload) {
        Ok(event) if headers[1].is_some() => {
            assert!(headers[0].is_some() && headers[3].is_some());
            // A replay's event id is the replayed event's, never its own.
            let id = headers[4].as_deref().or(headers[0].as_deref());
            assert_eq!(id, Some(event.id.to_string().as_str()));
            // What comes back goes the way of every stored event.
            stored_event(event);
        }
        Ok(event) => {
            // Without a type header, only a frame is read: its id first.
            let id = payload
                .strip_prefix(b"tidings/1 ")
                .and_then(|rest| rest.split(|b| *b == b' ').next())
                .and_then(|id| uuid::Uuid::try_parse_ascii(id).ok());
            assert_eq!(id, Some(event.id));
            // What comes back goes the way of every stored event.
            stored_event(event);
        }
        Err(reason) => assert_clean("a refusal's reason", reason),
    }
    let _ = tidings_nats::__fuzz::dead_letter(&record);
    let _ = tidings_nats::__fuzz::handler_label(&String::from_utf8_lossy(&record));
}

/// One event read back, handed to a bus at start (see [`stored`]).
fn stored_event(mut event: StoredEvent) {
    event.deliveries = vec![
        StoredDelivery::new("Takes", 1),
        StoredDelivery::new("Decodes", 1),
    ];
    logged(|w| {
        w.runtime
            .block_on(run_over(Handed(Mutex::new(Some(Recovered {
                events: vec![event],
                ..Recovered::default()
            })))))
    });
}

/// The demo service with the admin API, on a SQLite file, made once.
struct Demo {
    app: axum::Router,
    user: String,
    _dir: tempfile::TempDir,
}

const ADMIN: &str = "fuzz-admin-token-0123456789";

fn demo() -> &'static Demo {
    static DEMO: OnceLock<Demo> = OnceLock::new();
    DEMO.get_or_init(|| {
        let w = world();
        w.runtime.block_on(async {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let url = format!("sqlite:{}", dir.path().join("demo.db").display());
            let store = tidings_cli::demo::open_store(&url)
                .await
                .expect("the demo's database");
            let tidings_events::Db::Sqlite(db) = &store else {
                unreachable!("a SQLite URL")
            };
            let user = tidings_cli::demo::users::seed(db)
                .await
                .expect("users")
                .into_iter()
                .next()
                .expect("a user")
                .token;
            let bus = tidings_cli::demo::bus_builder(&store)
                .build()
                .expect("a bus");
            let admin = tidings_admin::AdminConfig::new(ADMIN).expect("an admin token");
            let state = tidings_cli::demo::state(bus, store, false, admin);
            Demo {
                app: tidings_cli::demo::router(state),
                user,
                _dir: dir,
            }
        })
    })
}

/// **http_bodies**: a body and a query string sent to the demo's routes and
/// the admin API's (chat, orders, conversations, activity, dead letters'
/// listing, replay and discard). Every answer is a documented status (never
/// a 500), and no answer shows a value the request held.
pub fn http_bodies(data: &[u8]) {
    use tower::ServiceExt;
    let mut u = Unstructured::new(data);
    let Ok((route, body, query)) = (|| -> arbitrary::Result<_> {
        let route = u.int_in_range(0..=7)?;
        let body: Vec<u8> = match u.int_in_range(0..=2)? {
            0 => u.arbitrary::<Vec<u8>>()?,
            _ => serde_json::to_vec(&Value::Object(object(&mut u, 3)?)).unwrap_or_default(),
        };
        let query: String = u.arbitrary()?;
        Ok((route, body, query))
    })() else {
        return;
    };
    // A valid chat's answer is the user's own (it may quote the message):
    // only refusals are searched for the marker.
    let body_holds_mark = String::from_utf8_lossy(&body).contains(MARK);
    let query: String = query
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '#')
        .collect();
    let query = format!("{MARK}{query}");
    let (method, path, token) = match route {
        0 => ("POST", "/api/chat".to_owned(), "user"),
        1 => ("POST", "/api/orders".to_owned(), "user"),
        2 => ("GET", format!("/api/conversations/c?{query}"), "user"),
        3 => ("GET", format!("/api/activity?{query}"), "admin"),
        4 => ("GET", format!("/api/orders?{query}"), "user"),
        5 => ("GET", format!("/admin/api/dead-letters?{query}"), "admin"),
        6 => ("POST", "/admin/api/dead-letters/replay".to_owned(), "admin"),
        _ => (
            "POST",
            "/admin/api/dead-letters/discard".to_owned(),
            "admin",
        ),
    };
    let d = demo();
    let token = if token == "admin" {
        ADMIN
    } else {
        d.user.as_str()
    };
    let Ok(request) = axum::http::Request::builder()
        .method(method)
        .uri(&path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .extension(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            40000,
        ))))
        .body(axum::body::Body::from(body))
    else {
        return;
    };
    logged(|w| {
        w.runtime.block_on(async {
            let response = d.app.clone().oneshot(request).await.expect("an answer");
            let status = response.status().as_u16();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                matches!(
                    status,
                    200..=202 | 204 | 400 | 401 | 403 | 404 | 405 | 413 | 415 | 422 | 429 | 503
                ),
                "{method} {path}: status {status}: {text}"
            );
            if status >= 400 || !body_holds_mark {
                assert!(
                    !text.contains(MARK),
                    "{method} {path} ({status}) shows a value: {text}"
                );
            }
        });
    });
}
