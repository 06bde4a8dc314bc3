#[derive(serde::Serialize, serde::Deserialize, tidings::Event)]
#[event(type = "ping")]
struct Ping {}

#[tidings::handler]
fn on_ping(_p: &Ping) {}

fn main() {}
