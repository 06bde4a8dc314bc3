//! Log lines and tracing spans; payloads never logged.
//!
//! Alone in its binary: tracing caches per-callsite interest process-wide, so a
//! scoped subscriber shares badly with tests running in parallel threads.

mod common;
use common::{bus, FnHandler};
use serde_json::json;
use std::sync::{Arc, Mutex};
use tidings::HandlerError;

/// Captures formatted log output.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn logs_have_the_seed_lines_and_spans_but_never_the_payload() {
    let out = Capture::default();
    let o2 = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || o2.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let bus = bus()
                .handler(FnHandler::new("MyEventHandler", "my_event", |_| async {
                    tracing::info!("inside the handler");
                    Err(HandlerError::permanent("boom"))
                }))
                .build()
                .unwrap();
            let span = tracing::info_span!("request", route = "/api/chat");
            let _g = span.enter();
            bus.emit("my_event", json!({"password": "hunter2"}))
                .await
                .unwrap();
            drop(_g);
            bus.wait_idle().await;
        });
    });
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("Registered event handler: MyEventHandler for 'my_event' events"),
        "{text}"
    );
    assert!(
        text.contains("Error in MyEventHandler for 'my_event' event: boom"),
        "{text}"
    );
    assert!(
        !text.contains("hunter2"),
        "payload leaked into logs:\n{text}"
    );
    // The handler's span carries handler, type, id and attempt, under the emitting span.
    let inside = text
        .lines()
        .find(|l| l.contains("inside the handler"))
        .unwrap();
    assert!(inside.contains("request{route=\"/api/chat\"}"), "{inside}");
    assert!(
        inside.contains("handle{handler=\"MyEventHandler\" event_type=\"my_event\" event_id="),
        "{inside}"
    );
    assert!(inside.contains("attempt=1"), "{inside}");
}
