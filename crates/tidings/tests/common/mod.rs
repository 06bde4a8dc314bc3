//! Test handlers built from closures.
#![allow(dead_code)]

use futures_util::future::BoxFuture;
use std::sync::{Arc, Mutex};
use tidings::{Envelope, EventHandler, HandlerError, HandlerOptions};

type Body = dyn Fn(Envelope) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync;

/// A handler whose body is a closure.
pub struct FnHandler {
    pub name: String,
    pub event_type: String,
    pub options: HandlerOptions,
    body: Arc<Body>,
}

impl FnHandler {
    pub fn new<F, Fut>(name: &str, event_type: &str, f: F) -> Self
    where
        F: Fn(Envelope) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        Self {
            name: name.into(),
            event_type: event_type.into(),
            options: HandlerOptions::default(),
            body: Arc::new(move |e| Box::pin(f(e))),
        }
    }

    pub fn options(mut self, o: HandlerOptions) -> Self {
        self.options = o;
        self
    }
}

impl EventHandler for FnHandler {
    fn event_type(&self) -> &str {
        &self.event_type
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn options(&self) -> HandlerOptions {
        self.options.clone()
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        (self.body)(event.clone()).await
    }
}

/// A shared log of what handlers saw.
#[derive(Clone)]
pub struct Log<T>(pub Arc<Mutex<Vec<T>>>);

impl<T> Default for Log<T> {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Vec::new())))
    }
}

impl<T: Clone> Log<T> {
    pub fn push(&self, v: T) {
        self.0.lock().unwrap().push(v);
    }
    pub fn get(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// A handler that records `data["n"]` of each event it sees.
pub fn recorder(name: &str, event_type: &str, log: Log<i64>) -> FnHandler {
    FnHandler::new(name, event_type, move |e| {
        let log = log.clone();
        async move {
            log.push(e.data()["n"].as_i64().unwrap_or(-1));
            Ok(())
        }
    })
}

pub fn bus() -> tidings::EventBusBuilder {
    tidings::EventBus::builder().discover(false)
}
