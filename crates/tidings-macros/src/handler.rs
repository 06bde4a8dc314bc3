use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::meta::ParseNestedMeta;
use syn::{FnArg, ItemFn, LitInt, LitStr, Pat, Type};

#[derive(Default)]
pub(crate) struct Args {
    event: Option<LitStr>,
    name: Option<LitStr>,
    attempts: Option<LitInt>,
    timeout_ms: Option<LitInt>,
    concurrency: Option<LitInt>,
}

impl Args {
    pub(crate) fn parse(&mut self, meta: ParseNestedMeta<'_>) -> syn::Result<()> {
        if meta.path.is_ident("event") {
            let lit: LitStr = meta.value()?.parse()?;
            if !crate::valid_event_type(&lit.value()) {
                return Err(syn::Error::new(
                    lit.span(),
                    "invalid event type: expected 1 to 128 characters of A-Za-z0-9_.:-",
                ));
            }
            self.event = Some(lit);
        } else if meta.path.is_ident("name") {
            self.name = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("attempts") {
            self.attempts = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("timeout_ms") {
            self.timeout_ms = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("concurrency") {
            self.concurrency = Some(meta.value()?.parse()?);
        } else {
            return Err(meta.error(
                "unknown handler option; expected one of `event`, `name`, `attempts`, `timeout_ms`, `concurrency`",
            ));
        }
        Ok(())
    }
}

fn is_envelope(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Envelope"))
}

/// `&T` to `T`, or an error pointing at the argument.
fn referent<'a>(arg: &'a FnArg, what: &str) -> syn::Result<&'a Type> {
    match arg {
        FnArg::Typed(pt) => match &*pt.ty {
            Type::Reference(r) if r.mutability.is_none() => Ok(&r.elem),
            other => Err(syn::Error::new_spanned(
                other,
                format!("{what} must be taken by shared reference, as `&T`"),
            )),
        },
        FnArg::Receiver(r) => Err(syn::Error::new_spanned(
            r,
            "a handler is a free `async fn`, not a method",
        )),
    }
}

pub(crate) fn expand(args: Args, item: ItemFn) -> syn::Result<TokenStream> {
    let sig = &item.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            sig.fn_token,
            "#[tidings::handler] needs an `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "a handler cannot be generic",
        ));
    }
    let mut inputs = sig.inputs.iter();
    let Some(first) = inputs.next() else {
        return Err(syn::Error::new_spanned(
            &sig.ident,
            "a handler takes its event as first argument: `&MyEvent` or `&tidings::Envelope`",
        ));
    };
    let event_ty = referent(first, "the event")?;
    let fn_name = &sig.ident;
    let handler_name = args
        .name
        .clone()
        .unwrap_or_else(|| LitStr::new(&fn_name.to_string(), fn_name.span()));

    let (event_type, payload_type, event_arg) = if is_envelope(event_ty) {
        let Some(event) = &args.event else {
            return Err(syn::Error::new_spanned(
                first,
                "a handler taking `&Envelope` must name its event type: `#[tidings::handler(event = \"my_event\")]`",
            ));
        };
        (
            quote!(#event),
            quote!(::core::option::Option::None),
            quote!(__event),
        )
    } else {
        if let Some(event) = &args.event {
            return Err(syn::Error::new_spanned(
                event,
                "a typed handler's event type comes from its event's `Event::TYPE`; remove `event = ...`",
            ));
        }
        (
            quote!(<#event_ty as ::tidings::Event>::TYPE),
            quote!(::core::option::Option::Some(::tidings::PayloadType::of::<#event_ty>())),
            quote!(&*__event.decode::<#event_ty>()?),
        )
    };

    let mut fields = Vec::new();
    let mut inits = Vec::new();
    let mut uses = Vec::new();
    for (i, arg) in inputs.enumerate() {
        let ty = referent(arg, "a resource")?;
        if is_envelope(ty) {
            uses.push(quote!(__event));
            continue;
        }
        let field = match arg {
            FnArg::Typed(pt) => match &*pt.pat {
                Pat::Ident(id) => format_ident!("r_{}", id.ident),
                _ => format_ident!("r_{}", i),
            },
            FnArg::Receiver(_) => unreachable!("checked by referent"),
        };
        fields.push(quote!(#field: #ty));
        inits.push(quote!(#field: resources.get::<#ty>()?));
        uses.push(quote!(&self.#field));
    }

    let mut options = quote!(::tidings::HandlerOptions::default());
    if let Some(n) = &args.attempts {
        options = quote!(#options.attempts(#n));
    }
    if let Some(n) = &args.timeout_ms {
        options = quote!(#options.timeout(::core::time::Duration::from_millis(#n)));
    }
    if let Some(n) = &args.concurrency {
        options = quote!(#options.concurrency(#n));
    }

    let holder = format_ident!("__TidingsHandler_{}", fn_name, span = Span::call_site());
    Ok(quote! {
        #item

        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        struct #holder { #(#fields,)* }

        const _: () = {
            impl ::tidings::EventHandler for #holder {
                fn event_type(&self) -> &str {
                    #event_type
                }
                fn name(&self) -> &str {
                    #handler_name
                }
                fn options(&self) -> ::tidings::HandlerOptions {
                    #options
                }
                fn payload_type(&self) -> ::core::option::Option<::tidings::PayloadType> {
                    #payload_type
                }
                async fn handle(&self, __event: &::tidings::Envelope) -> ::core::result::Result<(), ::tidings::HandlerError> {
                    ::tidings::IntoHandlerResult::into_handler_result(#fn_name(#event_arg, #(#uses),*).await)
                }
            }
            ::tidings::register_handler!(#holder, |resources: &::tidings::Resources| {
                ::core::result::Result::Ok::<_, ::tidings::MissingResource>(#holder { #(#inits,)* })
            });
        };
    })
}
