//! `activity_log`: security and audit activity, logged in the background.
//!
//! The seed's first built-in event. Required fields: `user_id`, `incident_type`,
//! `severity`, `description`; optional: `details`, `user_clearance_level`,
//! `required_clearance_level`, `access_granted`, `user_query`, `threat_type`,
//! `ip_address`, `user_agent`. A dynamic emit with a missing or wrong field
//! fails at emit, with the field named. Each entry is stored once in
//! `activity_logs`, keyed on the event id.

use crate::db::{execute, fetch_all, Db, DbError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tidings::{EmitError, Envelope, HandlerError, Receipt};

/// How serious an incident is. Reads the seed's strings (`"HIGH"`, any case).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
///
/// ```
/// use tidings_events::Severity;
/// assert_eq!("high".parse::<Severity>().unwrap(), Severity::High);
/// assert_eq!(Severity::Critical.as_str(), "CRITICAL");
/// assert!(Severity::Low < Severity::Critical);
/// ```
pub enum Severity {
    /// Informational.
    Low,
    /// Worth a look.
    Medium,
    /// Needs attention.
    High,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// The seed's spelling.
    ///
    /// ```
    /// use tidings_events::Severity;
    /// assert_eq!("high".parse::<Severity>().unwrap(), Severity::High);
    /// assert_eq!(Severity::Critical.as_str(), "CRITICAL");
    /// assert!(Severity::Low < Severity::Critical);
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "LOW" => Ok(Severity::Low),
            "MEDIUM" => Ok(Severity::Medium),
            "HIGH" => Ok(Severity::High),
            "CRITICAL" => Ok(Severity::Critical),
            _ => Err("expected one of LOW, MEDIUM, HIGH, CRITICAL".to_owned()),
        }
    }
}

impl<'de> Deserialize<'de> for Severity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One activity log entry: the payload of `activity_log`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use tidings_events::{ActivityLog, Severity};
/// let bus = tidings::EventBus::builder().discover(false).build().unwrap();
/// // The seed's example, dynamic:
/// bus.emit("activity_log", serde_json::json!({
///     "user_id": 1,
///     "incident_type": "UNAUTHORIZED_ACCESS",
///     "severity": "HIGH",
///     "description": "User attempted to access restricted resource",
///     "ip_address": "192.168.1.1"
/// })).await.unwrap();
/// // The same, typed:
/// let mut entry = ActivityLog::new(1, "UNAUTHORIZED_ACCESS", Severity::High, "User attempted to access restricted resource");
/// entry.ip_address = Some("192.168.1.1".into());
/// bus.publish(entry).await.unwrap();
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, tidings::Event)]
#[event(type = "activity_log")]
pub struct ActivityLog {
    /// Who.
    pub user_id: i64,
    /// What kind of incident (`UNAUTHORIZED_ACCESS`, ...).
    pub incident_type: String,
    /// How serious.
    pub severity: Severity,
    /// What happened, for a person.
    pub description: String,
    /// Anything else, as a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Map<String, Value>>,
    /// The user's clearance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_clearance_level: Option<String>,
    /// The clearance the resource needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_clearance_level: Option<String>,
    /// Whether access was granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_granted: Option<bool>,
    /// The user's query, when one caused this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_query: Option<String>,
    /// The kind of threat, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat_type: Option<String>,
    /// The caller's IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// The caller's user agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl ActivityLog {
    /// An entry with the required fields; set the optional ones as needed.
    ///
    /// ```
    /// let e = tidings_events::ActivityLog::new(1, "LOGIN_FAILED", tidings_events::Severity::Low, "bad password");
    /// assert_eq!(e.ip_address, None);
    /// ```
    pub fn new(
        user_id: i64,
        incident_type: impl Into<String>,
        severity: Severity,
        description: impl Into<String>,
    ) -> Self {
        Self {
            user_id,
            incident_type: incident_type.into(),
            severity,
            description: description.into(),
            details: None,
            user_clearance_level: None,
            required_clearance_level: None,
            access_granted: None,
            user_query: None,
            threat_type: None,
            ip_address: None,
            user_agent: None,
        }
    }
}

/// Stores each `activity_log` event in `activity_logs`, once per event id.
#[tidings::handler(name = "ActivityLogHandler")]
async fn store_activity_log(
    entry: &ActivityLog,
    event: &Envelope,
    store: &Db,
) -> Result<(), HandlerError> {
    let details = entry
        .details
        .as_ref()
        .map(|d| Value::Object(d.clone()).to_string());
    let created_at = event
        .emitted_at()
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    execute!(
        store,
        "INSERT INTO activity_logs (event_id, user_id, incident_type, severity, description, details, \
         user_clearance_level, required_clearance_level, access_granted, user_query, threat_type, ip_address, \
         user_agent, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT DO NOTHING",
        event.id().to_string(),
        entry.user_id,
        &entry.incident_type,
        entry.severity.as_str(),
        &entry.description,
        details,
        &entry.user_clearance_level,
        &entry.required_clearance_level,
        entry.access_granted,
        &entry.user_query,
        &entry.threat_type,
        &entry.ip_address,
        &entry.user_agent,
        created_at,
    )
    .map_err(DbError::from)?;
    Ok(())
}

/// A stored activity log entry.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = tidings_events::Db::connect("sqlite::memory:").await?;
/// store.migrate().await?;
/// let bus = tidings::EventBus::builder().resource(store.clone()).build()?;
/// bus.publish(tidings_events::ActivityLog::new(3, "X", tidings_events::Severity::High, "d")).await?;
/// bus.wait_idle().await;
/// let rows: Vec<tidings_events::StoredActivity> = tidings_events::list_activity(&store, Some(3), None, 10).await?;
/// assert_eq!(rows[0].severity, "HIGH");
/// # Ok(()) }
/// ```
pub struct StoredActivity {
    /// The event id.
    pub event_id: String,
    /// Who.
    pub user_id: i64,
    /// What kind.
    pub incident_type: String,
    /// How serious (the seed's spelling).
    pub severity: String,
    /// What happened.
    pub description: String,
    /// Extra details, JSON text.
    pub details: Option<String>,
    /// Whether access was granted.
    pub access_granted: Option<bool>,
    /// The query that caused it.
    pub user_query: Option<String>,
    /// The caller's IP address.
    pub ip_address: Option<String>,
    /// The caller's user agent.
    pub user_agent: Option<String>,
    /// When it was emitted (RFC 3339).
    pub created_at: String,
}

/// Activity log entries, newest first, optionally for one user and/or one severity.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = tidings_events::Db::connect("sqlite::memory:").await?;
/// store.migrate().await?;
/// let bus = tidings::EventBus::builder().resource(store.clone()).build()?;
/// bus.publish(tidings_events::ActivityLog::new(3, "X", tidings_events::Severity::High, "d")).await?;
/// bus.wait_idle().await;
/// let rows: Vec<tidings_events::StoredActivity> = tidings_events::list_activity(&store, Some(3), None, 10).await?;
/// assert_eq!(rows[0].severity, "HIGH");
/// # Ok(()) }
/// ```
pub async fn list_activity(
    store: &Db,
    user_id: Option<i64>,
    severity: Option<Severity>,
    limit: i64,
) -> Result<Vec<StoredActivity>, DbError> {
    // The CASTs type the NULL checks for PostgreSQL; SQLite takes them as they are.
    const SQL: &str = "SELECT event_id, user_id, incident_type, severity, description, details, access_granted, \
         user_query, ip_address, user_agent, created_at FROM activity_logs \
         WHERE (CAST($1 AS BIGINT) IS NULL OR user_id = $1) AND (CAST($2 AS TEXT) IS NULL OR severity = $2) \
         ORDER BY created_at DESC LIMIT $3";
    let severity = severity.map(Severity::as_str);
    Ok(fetch_all!(store, SQL, user_id, severity, limit)?)
}

/// The seed's old helper: emits `activity_log` on the process-wide bus.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = tidings_events::Db::connect("sqlite::memory:").await?;
/// store.migrate().await?;
/// tidings::init(tidings::EventBus::builder().resource(store.clone()))?;
///
/// #[allow(deprecated)]
/// tidings_events::emit_activity_log(1, "LOGIN_FAILED", "MEDIUM", "bad password").await?;
///
/// tidings::event_bus().wait_idle().await;
/// let rows = tidings_events::list_activity(&store, Some(1), None, 10).await?;
/// assert_eq!(rows[0].severity, "MEDIUM");
/// # Ok(()) }
/// ```
///
/// # Errors
/// As [`tidings::EventBus::emit`]: an unknown severity fails with the field named.
#[deprecated(
    since = "0.1.0",
    note = "use `tidings::event_bus().publish(ActivityLog::new(..))` or `tidings::event_bus().emit(\"activity_log\", json!({..}))`"
)]
pub async fn emit_activity_log(
    user_id: i64,
    incident_type: &str,
    severity: &str,
    description: &str,
) -> Result<Receipt, EmitError> {
    let data = serde_json::json!({
        "user_id": user_id,
        "incident_type": incident_type,
        "severity": severity,
        "description": description,
    });
    tidings::event_bus().emit("activity_log", data).await
}
