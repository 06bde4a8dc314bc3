#[derive(serde::Serialize, serde::Deserialize, tidings::Event)]
#[event(type = "ping")]
struct Ping {}

#[tidings::handler(event = "pong")]
async fn on_ping(_p: &Ping) {}

fn main() {}
