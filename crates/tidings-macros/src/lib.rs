//! Procedural macros of [tidings](https://docs.rs/tidings): `#[derive(Event)]` and `#[handler]`.
//! Use them through the `tidings` crate, which re-exports both.

use proc_macro::TokenStream;

mod event;
mod handler;

/// Derives `tidings::Event`. See the `tidings` crate.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(input: TokenStream) -> TokenStream {
    event::expand(syn::parse_macro_input!(input as syn::DeriveInput))
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Makes an `async fn` an event handler and registers it. See the `tidings` crate.
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    let item = syn::parse_macro_input!(item as syn::ItemFn);
    let mut parsed = handler::Args::default();
    let parser = syn::meta::parser(|meta| parsed.parse(meta));
    syn::parse_macro_input!(args with parser);
    handler::expand(parsed, item)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// The event type name rule, checked at compile time: 1 to 128 characters of `A-Za-z0-9_.:-`.
fn valid_event_type(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}
