//! The seed's "Creating a New Event": `MyEventHandler`, with its
//! required-field handling, registered beside its impl, and an emit from a service.
//!
//! `cargo run -p tidings --example my_event`

use tidings::{Envelope, EventHandler, HandlerError};

/// Handles my custom events.
#[derive(Default)]
struct MyEventHandler;

impl EventHandler for MyEventHandler {
    fn event_type(&self) -> &str {
        "my_event" // unique event identifier
    }

    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        // Validate required fields: a missing one can never succeed, so it is
        // permanent (no retry) and lands in the dead letters, named.
        let data = event.data();
        let Some(user_id) = data["user_id"].as_u64() else {
            return Err(HandlerError::permanent("missing required field: user_id"));
        };
        let Some(action) = data["action"].as_str() else {
            return Err(HandlerError::permanent("missing required field: action"));
        };
        tracing::info!("Processing my_event for user {user_id}: {action}");
        Ok(())
    }
}
tidings::register_handler!(MyEventHandler);

async fn my_service_function(user_id: u64) -> anyhow::Result<&'static str> {
    let bus = tidings::event_bus();
    let result = "done"; // do your main work
    bus.emit(
        "my_event",
        serde_json::json!({"user_id": user_id, "action": "something_happened", "details": result}),
    )
    .await?;
    Ok(result) // return immediately: the event is processed in the background
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    my_service_function(1).await?;
    tidings::event_bus()
        .emit("my_event", serde_json::json!({"action": "no user"}))
        .await?;
    let bus = tidings::event_bus();
    bus.wait_idle().await;
    println!("event types: {:?}", bus.event_types());
    for dead in bus.dead_letters() {
        println!(
            "dead letter {} for {}: {}",
            dead.id, dead.handler, dead.error
        );
    }
    Ok(())
}
