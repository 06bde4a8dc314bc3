//! The demo's users: who asks, with which clearance, and whose conversation
//! is whose.
//!
//! - **Tokens.** Each user has an API token: 32 random letters and digits,
//!   shown once (at the first start, or when made or reset with `tidings
//!   users`), stored only as its SHA-256. A request names its user with
//!   `Authorization: Bearer <token>`; the user and the clearance come from
//!   the token, never from the request body.
//! - **First start.** An empty users table is seeded with one user per
//!   clearance (`alice` PUBLIC, `bob` INTERNAL, `carol` CONFIDENTIAL, `dave`
//!   SECRET), and the service prints one line per user:
//!   `user <name> (<CLEARANCE>): token <token>`.
//! - **Conversations.** A conversation belongs to the user who started it;
//!   for anyone else it does not exist (404), to read or to post into.

use super::error::ApiError;
use super::knowledge::Clearance;
use axum::http::HeaderMap;
use sha2::{Digest, Sha256};
use sqlx::SqlitePool;

/// The users a fresh service starts with, one per clearance.
pub const SEED: [(&str, Clearance); 4] = [
    ("alice", Clearance::Public),
    ("bob", Clearance::Internal),
    ("carol", Clearance::Confidential),
    ("dave", Clearance::Secret),
];

/// Who is asking.
#[derive(Clone, Debug)]
pub struct User {
    /// The user's id.
    pub id: i64,
    /// The user's name.
    pub name: String,
    /// What the user may read.
    pub clearance: Clearance,
}

/// A user and the token just made for it (shown once).
#[derive(Clone, Debug)]
pub struct Issued {
    /// The user's name.
    pub name: String,
    /// The user's clearance.
    pub clearance: Clearance,
    /// The token, in clear: shown once, never stored.
    pub token: String,
}

impl std::fmt::Display for Issued {
    /// `user <name> (<CLEARANCE>): token <token>`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "user {} ({}): token {}",
            self.name,
            self.clearance.as_str(),
            self.token
        )
    }
}

/// Why a user could not be made or found.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// Names are 1 to 32 characters of `a-z0-9_-`.
    #[error("a user name is 1 to 32 characters of a-z, 0-9, _ and -")]
    InvalidName,
    /// The name is taken.
    #[error("there is already a user with that name")]
    Exists,
    /// No such user.
    #[error("no user with that name")]
    NotFound,
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

/// Seeds an empty users table with [`SEED`]; returns the tokens made (none
/// when users exist already).
///
/// # Errors
/// The database failed.
pub async fn seed(db: &SqlitePool) -> Result<Vec<Issued>, UserError> {
    let mut tx = db.begin().await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut *tx)
        .await?;
    if n > 0 {
        return Ok(Vec::new());
    }
    let mut issued = Vec::new();
    for (name, clearance) in SEED {
        let token = super::generated_token();
        sqlx::query(
            "INSERT INTO users (name, clearance, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(name)
        .bind(clearance.as_str())
        .bind(hash(&token))
        .bind(now())
        .execute(&mut *tx)
        .await?;
        issued.push(Issued {
            name: name.into(),
            clearance,
            token,
        });
    }
    tx.commit().await?;
    Ok(issued)
}

/// Adds a user; returns its token (shown once).
///
/// # Errors
/// An invalid or taken name, or the database failed.
pub async fn add(db: &SqlitePool, name: &str, clearance: Clearance) -> Result<Issued, UserError> {
    if !valid_name(name) {
        return Err(UserError::InvalidName);
    }
    let token = super::generated_token();
    let inserted = sqlx::query(
        "INSERT INTO users (name, clearance, token_hash, created_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(clearance.as_str())
    .bind(hash(&token))
    .bind(now())
    .execute(db)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(UserError::Exists);
    }
    Ok(Issued {
        name: name.into(),
        clearance,
        token,
    })
}

/// Gives a user a new token (the old one stops working); returns it.
///
/// # Errors
/// An invalid or unknown name, or the database failed.
pub async fn reset_token(db: &SqlitePool, name: &str) -> Result<Issued, UserError> {
    if !valid_name(name) {
        return Err(UserError::InvalidName);
    }
    let token = super::generated_token();
    let clearance: Option<String> =
        sqlx::query_scalar("UPDATE users SET token_hash = ?1 WHERE name = ?2 RETURNING clearance")
            .bind(hash(&token))
            .bind(name)
            .fetch_optional(db)
            .await?;
    let clearance = clearance
        .and_then(|c| Clearance::parse(&c))
        .ok_or(UserError::NotFound)?;
    Ok(Issued {
        name: name.into(),
        clearance,
        token,
    })
}

/// Every user: name and clearance (never a token).
///
/// # Errors
/// The database failed.
pub async fn list(db: &SqlitePool) -> Result<Vec<(String, String)>, UserError> {
    Ok(
        sqlx::query_as("SELECT name, clearance FROM users ORDER BY id")
            .fetch_all(db)
            .await?,
    )
}

/// The user whose token the request carries: 401 without one, or with one
/// no user has.
pub async fn authenticate(db: &SqlitePool, headers: &HeaderMap) -> Result<User, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::unauthorized("this route needs an Authorization: Bearer <user token> header")
        })?;
    // A token is a lookup key of 256 bits of hash: no timing to learn from
    // an index lookup that a guess could use.
    let row: Option<(i64, String, String)> =
        sqlx::query_as("SELECT id, name, clearance FROM users WHERE token_hash = ?1")
            .bind(hash(token))
            .fetch_optional(db)
            .await
            .map_err(ApiError::internal)?;
    let (id, name, clearance) =
        row.ok_or_else(|| ApiError::unauthorized("the user token is not valid"))?;
    let clearance = Clearance::parse(&clearance)
        .ok_or_else(|| ApiError::internal("a user's stored clearance is not a clearance"))?;
    Ok(User {
        id,
        name,
        clearance,
    })
}

/// Makes `user` the owner of conversation `id` if nobody is yet; 404 when
/// it is someone else's.
pub async fn claim_conversation(db: &SqlitePool, user: &User, id: &str) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO conversations (id, user_id, created_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(user.id)
    .bind(now())
    .execute(db)
    .await
    .map_err(ApiError::internal)?;
    owns(db, user, id).await
}

/// 404 unless conversation `id` is `user`'s.
pub async fn owns(db: &SqlitePool, user: &User, id: &str) -> Result<(), ApiError> {
    let owner: Option<i64> = sqlx::query_scalar("SELECT user_id FROM conversations WHERE id = ?1")
        .bind(id)
        .fetch_optional(db)
        .await
        .map_err(ApiError::internal)?;
    match owner {
        Some(o) if o == user.id => Ok(()),
        _ => Err(ApiError::not_found("no such conversation")),
    }
}
