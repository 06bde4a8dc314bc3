//! The seed's layout: one handler per concern, none of them listed anywhere.

use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use tidings::{Envelope, HandlerError};

/// What the handlers did, shared through the bus's resources.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    pub fn push(&self, s: String) {
        self.0.lock().unwrap().push(s);
    }
    pub fn get(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

#[derive(Debug, Serialize, Deserialize, tidings::Event)]
#[event(type = "order_created")]
pub struct OrderCreated {
    pub order_id: u64,
    pub user_id: u64,
    pub total: f64,
}

#[tidings::handler]
async fn send_confirmation_email(order: &OrderCreated, seen: &Seen) -> Result<(), HandlerError> {
    seen.push(format!("email {}", order.order_id));
    Ok(())
}

#[tidings::handler]
pub async fn update_inventory(order: &OrderCreated, seen: &Seen) -> Result<(), HandlerError> {
    seen.push(format!("inventory {}", order.order_id));
    Ok(())
}

/// A typed handler may also take the envelope, for its id or attempt.
#[tidings::handler(attempts = 5, timeout_ms = 1000)]
async fn notify_warehouse(
    order: &OrderCreated,
    event: &Envelope,
    seen: &Seen,
) -> Result<(), HandlerError> {
    if order.order_id == 99 && event.attempt() < 5 {
        return Err(HandlerError::retryable("warehouse busy"));
    }
    seen.push(format!("warehouse {}", order.order_id));
    Ok(())
}

pub mod nested {
    use super::Seen;
    use tidings::{Envelope, EventHandler, HandlerError, MissingResource, Resources};

    /// The seed's MyEventHandler, in a nested module, built from the bus's resources.
    pub struct MyEventHandler {
        seen: Seen,
    }

    impl MyEventHandler {
        fn new(resources: &Resources) -> Result<Self, MissingResource> {
            Ok(Self {
                seen: resources.get()?,
            })
        }
    }

    impl EventHandler for MyEventHandler {
        fn event_type(&self) -> &str {
            "my_event"
        }
        async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
            let Some(user_id) = event.data()["user_id"].as_u64() else {
                return Err(HandlerError::permanent("missing required field: user_id"));
            };
            let action = event.data()["action"].as_str().unwrap_or_default();
            self.seen.push(format!("my_event user {user_id} {action}"));
            Ok(())
        }
    }
    tidings::register_handler!(MyEventHandler, MyEventHandler::new);
}
