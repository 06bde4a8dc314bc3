use proc_macro2::TokenStream;
use quote::quote;
use syn::{DeriveInput, LitStr};

pub(crate) fn expand(input: DeriveInput) -> syn::Result<TokenStream> {
    let mut event_type: Option<LitStr> = None;
    for attr in &input.attrs {
        if !attr.path().is_ident("event") {
            continue;
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("type") {
                let lit: LitStr = meta.value()?.parse()?;
                if !crate::valid_event_type(&lit.value()) {
                    return Err(syn::Error::new(
                        lit.span(),
                        "invalid event type: expected 1 to 128 characters of A-Za-z0-9_.:-",
                    ));
                }
                event_type = Some(lit);
                Ok(())
            } else {
                Err(meta.error("unknown `event` attribute; expected `type = \"...\"`"))
            }
        })?;
    }
    let Some(event_type) = event_type else {
        return Err(syn::Error::new_spanned(
            &input.ident,
            "missing `#[event(type = \"...\")]` naming the event type",
        ));
    };
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::tidings::Event for #name #ty_generics #where_clause {
            const TYPE: &'static str = #event_type;
        }
    })
}
