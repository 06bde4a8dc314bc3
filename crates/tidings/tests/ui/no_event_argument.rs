#[tidings::handler]
async fn nothing() {}

fn main() {}
