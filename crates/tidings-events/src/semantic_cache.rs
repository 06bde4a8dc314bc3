//! `semantic_cache`: stores a query, its answer and the query's embedding in
//! the background; [`SemanticCache::lookup`] finds the closest stored answer
//! above a similarity threshold. Stored once per event id in `semantic_cache`.

use crate::db::{execute, fetch_all, Db, DbError};
use crate::embedder::{self, Embedder, SharedEmbedder};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tidings::{Envelope, HandlerError, MissingResource, Resources};

/// An answer to remember: the payload of `semantic_cache`.
///
/// ```
/// let e = tidings_events::SemanticCacheStore::new("how do I reset my password?", "Use the self-service portal.");
/// assert_eq!(e.required_clearance, None);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, tidings::Event)]
#[event(type = "semantic_cache")]
pub struct SemanticCacheStore {
    /// The question.
    pub query: String,
    /// Its answer.
    pub answer: String,
    /// The clearance needed to be served this answer, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_clearance: Option<String>,
}

impl SemanticCacheStore {
    /// An entry anyone may be served.
    ///
    /// ```
    /// let e = tidings_events::SemanticCacheStore::new("q", "a");
    /// assert_eq!((e.query.as_str(), e.answer.as_str()), ("q", "a"));
    /// ```
    pub fn new(query: impl Into<String>, answer: impl Into<String>) -> Self {
        Self {
            query: query.into(),
            answer: answer.into(),
            required_clearance: None,
        }
    }
}

/// Embeds and stores each `semantic_cache` event, once.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = tidings_events::Db::connect("sqlite::memory:").await?;
/// store.migrate().await?;
/// let mut res = tidings::Resources::default();
/// res.insert(store.clone());
/// let handler = tidings_events::SemanticCacheHandler::new(&res)?;
/// let bus = tidings::EventBus::builder().discover(false).handler(handler).build()?;
/// bus.publish(tidings_events::SemanticCacheStore::new("office hours", "7 to 20")).await?;
/// bus.wait_idle().await;
/// let cache = tidings_events::SemanticCache::with_embedder(store, tidings_events::SharedEmbedder::default());
/// let hit: tidings_events::CacheHit = cache.lookup("office hours?", 0.9, |_| true).await?.unwrap();
/// assert_eq!(hit.answer, "7 to 20");
/// # Ok(()) }
/// ```
pub struct SemanticCacheHandler {
    store: Db,
    embedder: Arc<dyn Embedder>,
}

impl SemanticCacheHandler {
    /// Built from the bus's resources: a [`Db`], and a [`SharedEmbedder`]
    /// if given (else the [`crate::HashingEmbedder`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = tidings_events::Db::connect("sqlite::memory:").await?;
    /// store.migrate().await?;
    /// let mut res = tidings::Resources::default();
    /// res.insert(store.clone());
    /// let handler = tidings_events::SemanticCacheHandler::new(&res)?;
    /// let bus = tidings::EventBus::builder().discover(false).handler(handler).build()?;
    /// bus.publish(tidings_events::SemanticCacheStore::new("office hours", "7 to 20")).await?;
    /// bus.wait_idle().await;
    /// let cache = tidings_events::SemanticCache::with_embedder(store, tidings_events::SharedEmbedder::default());
    /// let hit: tidings_events::CacheHit = cache.lookup("office hours?", 0.9, |_| true).await?.unwrap();
    /// assert_eq!(hit.answer, "7 to 20");
    /// # Ok(()) }
    /// ```
    pub fn new(resources: &Resources) -> Result<Self, MissingResource> {
        let embedder = resources.get::<SharedEmbedder>().unwrap_or_default();
        Ok(Self {
            store: resources.get()?,
            embedder: embedder.0,
        })
    }
}

impl tidings::EventHandler for SemanticCacheHandler {
    fn event_type(&self) -> &str {
        "semantic_cache"
    }

    fn payload_type(&self) -> Option<tidings::PayloadType> {
        Some(tidings::PayloadType::of::<SemanticCacheStore>())
    }

    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let entry = event.decode::<SemanticCacheStore>()?;
        let embedding = embedder::to_bytes(&self.embedder.embed(&entry.query));
        execute!(
            &self.store,
            "INSERT INTO semantic_cache (event_id, query, answer, required_clearance, model, embedding, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            event.id().to_string(),
            &entry.query,
            &entry.answer,
            &entry.required_clearance,
            self.embedder.model(),
            embedding,
            event.emitted_at().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        )
        .map_err(DbError::from)?;
        Ok(())
    }
}
tidings::register_handler!(SemanticCacheHandler, SemanticCacheHandler::new);

/// A remembered answer that matched.
#[derive(Clone, Debug, PartialEq, Serialize)]
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = tidings_events::Db::connect("sqlite::memory:").await?;
/// store.migrate().await?;
/// let mut res = tidings::Resources::default();
/// res.insert(store.clone());
/// let handler = tidings_events::SemanticCacheHandler::new(&res)?;
/// let bus = tidings::EventBus::builder().discover(false).handler(handler).build()?;
/// bus.publish(tidings_events::SemanticCacheStore::new("office hours", "7 to 20")).await?;
/// bus.wait_idle().await;
/// let cache = tidings_events::SemanticCache::with_embedder(store, tidings_events::SharedEmbedder::default());
/// let hit: tidings_events::CacheHit = cache.lookup("office hours?", 0.9, |_| true).await?.unwrap();
/// assert_eq!(hit.answer, "7 to 20");
/// # Ok(()) }
/// ```
pub struct CacheHit {
    /// The stored question.
    pub query: String,
    /// Its answer.
    pub answer: String,
    /// Cosine similarity to the question asked, from -1 to 1.
    pub similarity: f32,
}

#[derive(sqlx::FromRow)]
struct Row {
    query: String,
    answer: String,
    required_clearance: Option<String>,
    embedding: Vec<u8>,
}

/// Looks up remembered answers by similarity.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tidings_events::{SemanticCache, SemanticCacheStore, Db};
/// let store = Db::connect("sqlite::memory:").await?;
/// store.migrate().await?;
/// let bus = tidings::EventBus::builder().resource(store.clone()).build()?;
/// bus.publish(SemanticCacheStore::new("how do I reset my password", "Use the portal.")).await?;
/// bus.wait_idle().await;
///
/// let cache = SemanticCache::new(store);
/// let hit = cache.lookup("How can I reset my password?", 0.6, |_| true).await?.unwrap();
/// assert_eq!(hit.answer, "Use the portal.");
/// assert!(cache.lookup("quarterly revenue", 0.6, |_| true).await?.is_none());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SemanticCache {
    store: Db,
    embedder: Arc<dyn Embedder>,
}

impl SemanticCache {
    /// A cache over `store` with the default [`crate::HashingEmbedder`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = tidings_events::Db::connect("sqlite::memory:").await?;
    /// store.migrate().await?;
    /// let mut res = tidings::Resources::default();
    /// res.insert(store.clone());
    /// let handler = tidings_events::SemanticCacheHandler::new(&res)?;
    /// let bus = tidings::EventBus::builder().discover(false).handler(handler).build()?;
    /// bus.publish(tidings_events::SemanticCacheStore::new("office hours", "7 to 20")).await?;
    /// bus.wait_idle().await;
    /// let cache = tidings_events::SemanticCache::with_embedder(store, tidings_events::SharedEmbedder::default());
    /// let hit: tidings_events::CacheHit = cache.lookup("office hours?", 0.9, |_| true).await?.unwrap();
    /// assert_eq!(hit.answer, "7 to 20");
    /// # Ok(()) }
    /// ```
    pub fn new(store: Db) -> Self {
        Self {
            store,
            embedder: SharedEmbedder::default().0,
        }
    }

    /// A cache over `store` with another embedder (use the same one as the handler).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = tidings_events::Db::connect("sqlite::memory:").await?;
    /// store.migrate().await?;
    /// let mut res = tidings::Resources::default();
    /// res.insert(store.clone());
    /// let handler = tidings_events::SemanticCacheHandler::new(&res)?;
    /// let bus = tidings::EventBus::builder().discover(false).handler(handler).build()?;
    /// bus.publish(tidings_events::SemanticCacheStore::new("office hours", "7 to 20")).await?;
    /// bus.wait_idle().await;
    /// let cache = tidings_events::SemanticCache::with_embedder(store, tidings_events::SharedEmbedder::default());
    /// let hit: tidings_events::CacheHit = cache.lookup("office hours?", 0.9, |_| true).await?.unwrap();
    /// assert_eq!(hit.answer, "7 to 20");
    /// # Ok(()) }
    /// ```
    pub fn with_embedder(store: Db, embedder: SharedEmbedder) -> Self {
        Self {
            store,
            embedder: embedder.0,
        }
    }

    /// The closest remembered answer whose similarity is at least `threshold`
    /// and whose required clearance `allowed` accepts. Scans the stored
    /// entries of this embedder's model (fine for thousands, not millions).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = tidings_events::Db::connect("sqlite::memory:").await?;
    /// store.migrate().await?;
    /// let mut res = tidings::Resources::default();
    /// res.insert(store.clone());
    /// let handler = tidings_events::SemanticCacheHandler::new(&res)?;
    /// let bus = tidings::EventBus::builder().discover(false).handler(handler).build()?;
    /// bus.publish(tidings_events::SemanticCacheStore::new("office hours", "7 to 20")).await?;
    /// bus.wait_idle().await;
    /// let cache = tidings_events::SemanticCache::with_embedder(store, tidings_events::SharedEmbedder::default());
    /// let hit: tidings_events::CacheHit = cache.lookup("office hours?", 0.9, |_| true).await?.unwrap();
    /// assert_eq!(hit.answer, "7 to 20");
    /// # Ok(()) }
    /// ```
    pub async fn lookup(
        &self,
        query: &str,
        threshold: f32,
        allowed: impl Fn(Option<&str>) -> bool,
    ) -> Result<Option<CacheHit>, DbError> {
        // The newest answers only: a lookup reads a bounded number of rows
        // however large the cache grew.
        const SQL: &str =
            "SELECT query, answer, required_clearance, embedding FROM semantic_cache \
                           WHERE model = $1 ORDER BY created_at DESC LIMIT 5000";
        let model = self.embedder.model();
        let rows: Vec<Row> = fetch_all!(&self.store, SQL, model)?;
        let wanted = self.embedder.embed(query);
        let mut best: Option<CacheHit> = None;
        for row in rows {
            if !allowed(row.required_clearance.as_deref()) {
                continue;
            }
            let Some(stored) = embedder::from_bytes(&row.embedding) else {
                return Err(DbError::Corrupt(
                    "embedding length is not a multiple of 4".into(),
                ));
            };
            let similarity = embedder::cosine(&wanted, &stored);
            if similarity >= threshold && best.as_ref().is_none_or(|b| similarity > b.similarity) {
                best = Some(CacheHit {
                    query: row.query,
                    answer: row.answer,
                    similarity,
                });
            }
        }
        Ok(best)
    }
}
