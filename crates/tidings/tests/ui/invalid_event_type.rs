#[derive(serde::Serialize, serde::Deserialize, tidings::Event)]
#[event(type = "no spaces allowed")]
struct Bad {}

fn main() {}
