//! `message_save`: a chat message written in the background, so that the
//! request that produced it does not wait for the write (the seed's latency
//! optimization). Stored once per event id (and per message id) in `messages`.

use crate::db::{execute, fetch_all, Db, DbError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tidings::{Envelope, HandlerError};

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
///
/// ```
/// assert_eq!(tidings_events::Role::Assistant.as_str(), "assistant");
/// ```
pub enum Role {
    /// The person.
    User,
    /// The assistant.
    Assistant,
    /// The system prompt.
    System,
}

impl Role {
    /// The stored spelling.
    ///
    /// ```
    /// assert_eq!(tidings_events::Role::User.as_str(), "user");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        }
    }
}

/// One chat message: the payload of `message_save`.
///
/// ```
/// let m = tidings_events::MessageSave::new("conv-1", 7, tidings_events::Role::User, "hello");
/// assert_eq!(<tidings_events::MessageSave as tidings::Event>::TYPE, "message_save");
/// assert_eq!(m.user_id, 7);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, tidings::Event)]
#[event(type = "message_save")]
pub struct MessageSave {
    /// The message's id (chosen by the caller, so it can be returned at once).
    pub message_id: uuid::Uuid,
    /// The conversation it belongs to.
    pub conversation_id: String,
    /// The user of the conversation.
    pub user_id: i64,
    /// Who wrote it.
    pub role: Role,
    /// The text.
    pub content: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

impl MessageSave {
    /// A new message, with a fresh id, written now.
    ///
    /// ```
    /// let m = tidings_events::MessageSave::new("c", 1, tidings_events::Role::User, "hi");
    /// assert_eq!(m.message_id.get_version_num(), 7);
    /// ```
    pub fn new(
        conversation_id: impl Into<String>,
        user_id: i64,
        role: Role,
        content: impl Into<String>,
    ) -> Self {
        Self {
            message_id: uuid::Uuid::now_v7(),
            conversation_id: conversation_id.into(),
            user_id,
            role,
            content: content.into(),
            created_at: Utc::now(),
        }
    }
}

/// Writes each `message_save` event to `messages`, once.
#[tidings::handler(name = "MessageSaveHandler")]
async fn save_message(
    message: &MessageSave,
    event: &Envelope,
    store: &Db,
) -> Result<(), HandlerError> {
    save(store, message, &event.id().to_string()).await?;
    Ok(())
}

/// Writes one message now, in the caller's time: what `message_save` does in
/// the background. Idempotent on `event_id` and on the message id.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = tidings_events::Db::connect("sqlite::memory:").await?;
/// store.migrate().await?;
/// let m = tidings_events::MessageSave::new("c", 1, tidings_events::Role::User, "hi");
/// tidings_events::save_message_now(&store, &m, "event-1").await?;
/// tidings_events::save_message_now(&store, &m, "event-1").await?; // once
/// let rows: Vec<tidings_events::StoredMessage> = tidings_events::conversation(&store, "c").await?;
/// assert_eq!(rows.len(), 1);
/// # Ok(()) }
/// ```
pub async fn save(store: &Db, message: &MessageSave, event_id: &str) -> Result<(), DbError> {
    execute!(
        store,
        "INSERT INTO messages (message_id, event_id, conversation_id, user_id, role, content, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        message.message_id.to_string(),
        event_id,
        &message.conversation_id,
        message.user_id,
        message.role.as_str(),
        &message.content,
        message.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    )?;
    Ok(())
}

/// A stored message.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = tidings_events::Db::connect("sqlite::memory:").await?;
/// store.migrate().await?;
/// let m = tidings_events::MessageSave::new("c", 1, tidings_events::Role::User, "hi");
/// tidings_events::save_message_now(&store, &m, "event-1").await?;
/// tidings_events::save_message_now(&store, &m, "event-1").await?; // once
/// let rows: Vec<tidings_events::StoredMessage> = tidings_events::conversation(&store, "c").await?;
/// assert_eq!(rows.len(), 1);
/// # Ok(()) }
/// ```
pub struct StoredMessage {
    /// The message id.
    pub message_id: String,
    /// The conversation.
    pub conversation_id: String,
    /// The user.
    pub user_id: i64,
    /// `user`, `assistant` or `system`.
    pub role: String,
    /// The text.
    pub content: String,
    /// When it was written (RFC 3339).
    pub created_at: String,
}

/// The messages of a conversation, oldest first.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = tidings_events::Db::connect("sqlite::memory:").await?;
/// store.migrate().await?;
/// let m = tidings_events::MessageSave::new("c", 1, tidings_events::Role::User, "hi");
/// tidings_events::save_message_now(&store, &m, "event-1").await?;
/// tidings_events::save_message_now(&store, &m, "event-1").await?; // once
/// let rows: Vec<tidings_events::StoredMessage> = tidings_events::conversation(&store, "c").await?;
/// assert_eq!(rows.len(), 1);
/// # Ok(()) }
/// ```
pub async fn conversation(
    store: &Db,
    conversation_id: &str,
) -> Result<Vec<StoredMessage>, DbError> {
    const SQL: &str =
        "SELECT message_id, conversation_id, user_id, role, content, created_at FROM messages \
         WHERE conversation_id = $1 ORDER BY created_at, message_id";
    Ok(fetch_all!(store, SQL, conversation_id)?)
}

/// At most `limit` messages of a conversation, oldest first, after the
/// message `after` (its id, from the previous page) when given: a bounded
/// read however long the conversation grew. An `after` that is not a
/// message of the conversation gives an empty page.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = tidings_events::Db::connect("sqlite::memory:").await?;
/// store.migrate().await?;
/// for (i, text) in ["a", "b", "c"].iter().enumerate() {
///     let m = tidings_events::MessageSave::new("c", 1, tidings_events::Role::User, *text);
///     tidings_events::save_message_now(&store, &m, &format!("event-{i}")).await?;
/// }
/// let first = tidings_events::conversation_page(&store, "c", None, 2).await?;
/// assert_eq!(first.len(), 2);
/// let rest = tidings_events::conversation_page(&store, "c", Some(&first[1].message_id), 2).await?;
/// assert_eq!(rest.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(), ["c"]);
/// # Ok(()) }
/// ```
pub async fn conversation_page(
    store: &Db,
    conversation_id: &str,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<StoredMessage>, DbError> {
    const FIRST: &str =
        "SELECT message_id, conversation_id, user_id, role, content, created_at FROM messages \
         WHERE conversation_id = $1 ORDER BY created_at, message_id LIMIT $2";
    const AFTER: &str =
        "SELECT m.message_id, m.conversation_id, m.user_id, m.role, m.content, m.created_at \
         FROM messages m JOIN messages a ON a.message_id = $3 AND a.conversation_id = $1 \
         WHERE m.conversation_id = $1 \
           AND (m.created_at > a.created_at OR (m.created_at = a.created_at AND m.message_id > a.message_id)) \
         ORDER BY m.created_at, m.message_id LIMIT $2";
    let limit = i64::from(limit);
    Ok(match after {
        None => fetch_all!(store, FIRST, conversation_id, limit)?,
        Some(after) => fetch_all!(store, AFTER, conversation_id, limit, after)?,
    })
}
