//! Template: add your own event. The seed's `EXAMPLE_NEW_EVENT.py`, in Rust.
//!
//! Copy this file next to your other handlers, rename `UserInvited`, and you are done:
//! the handler registers itself at start-up; no list to edit, no bus to touch.
//!
//! `cargo run -p tidings --example example_new_event`

use serde::{Deserialize, Serialize};
use tidings::{Envelope, EventHandler, HandlerError, HandlerOptions};

// Step 1: the event's payload. A typed event is checked by the compiler when
// you publish it, and a dynamic `emit("user_invited", json!({..}))` of the same
// type is checked against it at emit time (a wrong field fails the emit).
#[derive(Debug, Serialize, Deserialize, tidings::Event)]
#[event(type = "user_invited")] // unique event identifier: 1-128 of A-Za-z0-9_.:-
struct UserInvited {
    inviter_id: u64,
    email: String,
    #[serde(default)]
    team: Option<String>,
}

// Step 2: the handler. Either a function...
#[tidings::handler(attempts = 5, timeout_ms = 10_000)]
async fn send_invitation(invite: &UserInvited, event: &Envelope) -> Result<(), HandlerError> {
    // Handlers may run more than once for one event (after a failure): make the
    // work idempotent on `event.id()`, e.g. a unique key in your table.
    if !invite.email.contains('@') {
        // No retry can fix this: give up at once; it lands in the dead letters.
        return Err(HandlerError::permanent(format!(
            "not an email address: {:?}",
            invite.email
        )));
    }
    tracing::info!(event_id = %event.id(), inviter = invite.inviter_id, "invitation sent");
    Ok(()) // `?` on any error makes a retryable failure, retried with backoff
}

// ...or a type, as the seed's `BaseEventHandler` subclasses are.
#[derive(Default)]
struct AuditInvitation;

impl EventHandler for AuditInvitation {
    fn event_type(&self) -> &str {
        "user_invited"
    }

    fn options(&self) -> HandlerOptions {
        HandlerOptions::default().concurrency(4)
    }

    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let invite = event.decode::<UserInvited>()?; // borrowed when published typed
        tracing::info!(team = ?invite.team, "audit: invitation for {}", invite.email.len());
        Ok(())
    }
}
tidings::register_handler!(AuditInvitation);

// Step 3: emit from your services, and return at once.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let bus = tidings::event_bus();
    bus.publish(UserInvited {
        inviter_id: 1,
        email: "ada@example.com".into(),
        team: Some("core".into()),
    })
    .await?;
    bus.emit(
        "user_invited",
        serde_json::json!({"inviter_id": 2, "email": "not-an-address"}),
    )
    .await?;
    bus.wait_idle().await;
    println!("event types: {:?}", bus.event_types());
    println!(
        "handlers for user_invited: {}",
        bus.handler_count(Some("user_invited"))
    );
    for dead in bus.dead_letters() {
        println!("dead letter {} ({}): {}", dead.id, dead.handler, dead.error);
    }
    Ok(())
}
