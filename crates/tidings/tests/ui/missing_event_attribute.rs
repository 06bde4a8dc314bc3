#[derive(serde::Serialize, serde::Deserialize, tidings::Event)]
struct NoType {}

fn main() {}
