//! Dead letters: listed (paged by cursor, filtered, never their payloads),
//! and replayed or discarded one at a time, by a list of ids, or all that a
//! filter matches, with a dry run that only counts.
//!
//! A dead letter's id only grows, so the cursor is the last id of a page:
//! the next page starts after it, and letters added meanwhile come at the
//! end, never twice.

use crate::error::ApiError;
use crate::Admin;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tidings::{DeadLetter, EventBus, ReplayError};

/// The most dead letters one page holds.
const MAX_PAGE: usize = 500;

/// The most ids one bulk request names.
const MAX_IDS: usize = 10_000;

/// The longest filter text (names, error text).
const MAX_TEXT: usize = 256;

/// Which dead letters a listing or a bulk action takes: all of these that
/// are given must hold.
///
/// ```
/// let f: tidings_admin::DeadLetterFilter =
///     serde_json::from_str(r#"{"handler": "notify", "error": "timeout"}"#).unwrap();
/// assert_eq!(f.handler.as_deref(), Some("notify"));
/// ```
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DeadLetterFilter {
    /// The event type, exactly.
    pub event_type: Option<String>,
    /// The handler's name, exactly.
    pub handler: Option<String>,
    /// Text the last error contains (case-insensitive).
    pub error: Option<String>,
    /// Failed at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Failed before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

impl DeadLetterFilter {
    /// Refuses texts too long to be names or error fragments.
    fn check(&self) -> Result<(), ApiError> {
        for (field, text) in [
            ("event_type", &self.event_type),
            ("handler", &self.handler),
            ("error", &self.error),
        ] {
            if text.as_ref().is_some_and(|t| t.len() > MAX_TEXT) {
                return Err(ApiError::invalid(format!(
                    "`{field}` is longer than {MAX_TEXT} bytes"
                )));
            }
        }
        Ok(())
    }

    fn matches(&self, d: &DeadLetter) -> bool {
        self.event_type
            .as_deref()
            .is_none_or(|t| d.event.event_type() == t)
            && self.handler.as_deref().is_none_or(|h| d.handler == h)
            && self
                .error
                .as_deref()
                .is_none_or(|e| d.error.to_lowercase().contains(&e.to_lowercase()))
            && self.since.is_none_or(|s| d.failed_at >= s)
            && self.until.is_none_or(|u| d.failed_at < u)
    }
}

/// `GET /api/dead-letters`' query: a filter, a cursor and a page size.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    event_type: Option<String>,
    handler: Option<String>,
    error: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    /// The cursor: the last id of the previous page.
    after: Option<u64>,
    /// Letters per page (1 to 500, default 50).
    limit: Option<usize>,
}

/// One page of dead letters, oldest first.
///
/// ```
/// let page: tidings_admin::DeadLetterPage =
///     serde_json::from_str(r#"{"dead_letters": [], "next": null, "total": 0}"#).unwrap();
/// assert!(page.next.is_none());
/// ```
#[derive(Debug, Deserialize, Serialize)]
#[non_exhaustive]
pub struct DeadLetterPage {
    /// The letters: id, handler, event id, type and key, attempts, error, when.
    pub dead_letters: Vec<Value>,
    /// The cursor of the next page (`after=`), if there is one.
    pub next: Option<u64>,
    /// How many letters match the filter in all.
    pub total: usize,
}

/// A dead letter as the API shows it: no payload, unless the application
/// gave a redaction, and then only what it returns.
fn shown(d: &DeadLetter, redact: Option<&crate::auth::Redact>) -> Value {
    let mut v = json!({
        "id": d.id,
        "handler": d.handler,
        "event_id": d.event.id(),
        "event_type": d.event.event_type(),
        "key": d.event.key(),
        "attempts": d.attempts,
        "error": d.error,
        "failed_at": d.failed_at,
    });
    if let Some(redact) = redact {
        v["data"] = redact(d.event.event_type(), d.event.data()).unwrap_or(Value::Null);
    }
    v
}

/// A query that did not parse, as a 400 naming the problem, not the value
/// (serde's text quotes an unknown variant: `decode_problem` drops it).
fn refused(what: &str, rejection: &QueryRejection) -> ApiError {
    let text = rejection.body_text();
    let why = text.split_once(": ").map_or(text.as_str(), |(_, why)| why);
    ApiError::invalid(format!(
        "invalid {what}: {}",
        tidings::redact::decode_problem(why)
    ))
}

/// A bulk body, parsed. A refusal names where in the body it went wrong
/// (`ids[2]`, `filter.since`), never the value found there (serde's own
/// messages quote it).
fn parse_body(body: &[u8]) -> Result<Bulk, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let what = match e.inner().classify() {
            serde_json::error::Category::Data => "has the wrong type, or is unknown or missing",
            serde_json::error::Category::Eof => "is cut short",
            serde_json::error::Category::Syntax | serde_json::error::Category::Io => "is not JSON",
        };
        match e.path().to_string().as_str() {
            "." => ApiError::invalid(format!("invalid body: it {what}")),
            path => ApiError::invalid(format!("invalid body: `{path}` {what}")),
        }
    })
}

/// `GET /api/dead-letters`.
pub(crate) async fn list(
    State(admin): State<Admin>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let Query(q) = query.map_err(|e| refused("query", &e))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "`limit` is from 1 to {MAX_PAGE}"
        )));
    }
    let filter = DeadLetterFilter {
        event_type: q.event_type,
        handler: q.handler,
        error: q.error,
        since: q.since,
        until: q.until,
    };
    filter.check()?;
    let matching: Vec<DeadLetter> = admin
        .bus
        .dead_letters()
        .into_iter()
        .filter(|d| filter.matches(d))
        .collect();
    let total = matching.len();
    let after = q.after.unwrap_or(0);
    let rest: Vec<&DeadLetter> = matching.iter().filter(|d| d.id > after).collect();
    let page: Vec<Value> = rest
        .iter()
        .take(limit)
        .map(|d| shown(d, admin.payloads.as_ref()))
        .collect();
    let next = (rest.len() > limit).then(|| rest[limit - 1].id);
    Ok(Json(DeadLetterPage {
        dead_letters: page,
        next,
        total,
    }))
}

/// A bulk action's body: a list of ids, or a filter (not both), and
/// whether only to count.
///
/// ```
/// let b: tidings_admin::Bulk = serde_json::from_str(r#"{"filter": {"handler": "notify"}, "dry_run": true}"#).unwrap();
/// assert!(b.dry_run && b.ids.is_none());
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Bulk {
    /// These dead letters.
    pub ids: Option<Vec<u64>>,
    /// Or every dead letter this filter matches (`{}`: all of them).
    pub filter: Option<DeadLetterFilter>,
    /// Only count what would be touched.
    #[serde(default)]
    pub dry_run: bool,
}

/// What a bulk action did.
///
/// ```
/// let r: tidings_admin::BulkReport = serde_json::from_str(
///     r#"{"matched": 3, "done": 3, "failed": 0, "errors": [], "dry_run": false}"#,
/// ).unwrap();
/// assert_eq!(r.matched, r.done);
/// ```
#[derive(Debug, Default, Deserialize, Serialize)]
#[non_exhaustive]
pub struct BulkReport {
    /// Dead letters the ids or the filter named (and that exist).
    pub matched: usize,
    /// Replayed or discarded (0 on a dry run).
    pub done: usize,
    /// Could not be (replay: the bus was full or stopping; gone meanwhile).
    pub failed: usize,
    /// Why, for the first few that failed.
    pub errors: Vec<String>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// The ids a bulk body names, that exist now.
fn selected(bus: &EventBus, body: Bytes) -> Result<(Vec<u64>, bool), ApiError> {
    let bulk: Bulk = parse_body(&body)?;
    let letters = bus.dead_letters();
    let ids = match (bulk.ids, bulk.filter) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("give `ids` or `filter`, not both")),
        (None, None) => {
            return Err(ApiError::invalid(
                "give `ids`, or a `filter` (`{}` for every dead letter)",
            ))
        }
        (Some(ids), None) => {
            if ids.len() > MAX_IDS {
                return Err(ApiError::invalid(format!(
                    "`ids` names at most {MAX_IDS} dead letters"
                )));
            }
            let wanted: std::collections::HashSet<u64> = ids.into_iter().collect();
            letters
                .iter()
                .filter(|d| wanted.contains(&d.id))
                .map(|d| d.id)
                .collect()
        }
        (None, Some(filter)) => {
            filter.check()?;
            letters
                .iter()
                .filter(|d| filter.matches(d))
                .map(|d| d.id)
                .collect()
        }
    };
    Ok((ids, bulk.dry_run))
}

/// Runs `act` on each id unless it is a dry run.
fn bulk(ids: Vec<u64>, dry_run: bool, act: impl Fn(u64) -> Result<(), String>) -> BulkReport {
    let mut report = BulkReport {
        matched: ids.len(),
        dry_run,
        ..BulkReport::default()
    };
    if dry_run {
        return report;
    }
    for id in ids {
        match act(id) {
            Ok(()) => report.done += 1,
            Err(e) => {
                report.failed += 1;
                if report.errors.len() < 10 {
                    report.errors.push(format!("{id}: {e}"));
                }
            }
        }
    }
    report
}

fn replay(bus: &EventBus, id: u64) -> Result<(), String> {
    bus.replay(id).map(|_| ()).map_err(|e| e.to_string())
}

fn discard(bus: &EventBus, id: u64) -> Result<(), String> {
    bus.discard(id)
        .map(|_| ())
        .ok_or_else(|| "gone meanwhile".to_owned())
}

/// `POST /api/dead-letters/replay`.
pub(crate) async fn replay_many(
    State(admin): State<Admin>,
    body: Bytes,
) -> Result<Json<BulkReport>, ApiError> {
    let (ids, dry_run) = selected(&admin.bus, body)?;
    Ok(Json(bulk(ids, dry_run, |id| replay(&admin.bus, id))))
}

/// `POST /api/dead-letters/discard`.
pub(crate) async fn discard_many(
    State(admin): State<Admin>,
    body: Bytes,
) -> Result<Json<BulkReport>, ApiError> {
    let (ids, dry_run) = selected(&admin.bus, body)?;
    Ok(Json(bulk(ids, dry_run, |id| discard(&admin.bus, id))))
}

/// A dead letter id from the path.
fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::invalid("a dead letter id is a positive integer"))
}

/// `POST /api/dead-letters/{id}/replay`: 202, or 404 / 503.
pub(crate) async fn replay_one(
    State(admin): State<Admin>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    match admin.bus.replay(id) {
        Ok(receipt) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "replayed": id, "event_id": receipt.id() })),
        )),
        Err(ReplayError::NotFound(_)) => {
            Err(ApiError::not_found(format!("no dead letter with id {id}")))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
        )),
    }
}

/// `DELETE /api/dead-letters/{id}`: 200 with its event id, or 404.
pub(crate) async fn discard_one(
    State(admin): State<Admin>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    match admin.bus.discard(id) {
        Some(letter) => Ok(Json(
            json!({ "discarded": id, "event_id": letter.event.id() }),
        )),
        None => Err(ApiError::not_found(format!("no dead letter with id {id}"))),
    }
}
