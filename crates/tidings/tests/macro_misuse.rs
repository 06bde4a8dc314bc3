//! Misuse of `#[tidings::handler]` and `#[derive(tidings::Event)]` fails to compile with a clear message.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
