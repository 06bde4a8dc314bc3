//! What may be printed of what callers and payloads carry.
//!
//! Payloads hold whatever a service's requests hold (card numbers, tokens,
//! personal data), so the bus never prints a payload *value*: not in an
//! error, a log line, a span or a dead letter. These helpers are how it
//! keeps that promise, and are public so that applications and backends
//! keep it the same way:
//!
//! - [`decode_problem`] turns serde's message about a payload that did not
//!   decode into one that names what was expected and the *kind* of value
//!   found (`string`, `integer`), never the value;
//! - [`one_line`] makes any error text safe to log or store: control
//!   characters escaped (no forged log lines), and bounded;
//! - [`redact_url`] replaces the password (or the NATS token) of a URL;
//!   [`ServerUrl`] is where a server URL's credentials are, for a backend
//!   that moves them out of the URL before connecting (as `tidings-nats`
//!   does).

/// The most bytes of an error text the bus logs or stores
/// ([`one_line`] cuts there).
pub const MAX_ERROR_LEN: usize = 1024;

/// `text` as one bounded line: control characters escaped (`\n` becomes
/// `\\n`), cut at `max` bytes (on a character boundary) with `…` added.
///
/// ```
/// assert_eq!(tidings::redact::one_line("a\nERROR forged", 100), "a\\nERROR forged");
/// assert_eq!(tidings::redact::one_line("abcdef", 3), "abc…");
/// ```
pub fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max + 3));
    for c in text.chars() {
        let start = out.len();
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max {
            out.truncate(start);
            out.push('…');
            break;
        }
    }
    out
}

/// The kinds of value serde names in "invalid type" and "invalid value"
/// messages (`serde::de::Unexpected`'s own words).
const KINDS: &[&str] = &[
    "boolean",
    "integer",
    "floating point",
    "character",
    "string",
    "byte array",
    "unit value",
    "Option value",
    "newtype struct",
    "sequence",
    "map",
    "enum",
    "unit variant",
    "newtype variant",
    "tuple variant",
    "struct variant",
    "null",
    "number",
    "array",
    "object",
];

/// serde's message about data that did not decode, rewritten without the
/// value: what was expected and the kind of value found.
///
/// serde's own messages quote the value (`invalid type: string
/// "4111-1111-1111-1111", expected u64`) or the unknown variant, newlines
/// included. Only shapes known to be free of values are kept, the rest is
/// told as `invalid value` (a type's own check refused it; its message may
/// quote anything). The result is one line of at most [`MAX_ERROR_LEN`]
/// bytes.
///
/// ```
/// use tidings::redact::decode_problem;
/// assert_eq!(
///     decode_problem("invalid type: string \"4111-1111-1111-1111\", expected u64"),
///     "invalid type: string, expected u64"
/// );
/// assert_eq!(
///     decode_problem("unknown variant `x\nERROR forged`, expected `a` or `b`"),
///     "unknown variant, expected `a` or `b`"
/// );
/// assert_eq!(decode_problem("missing field `user_id`"), "missing field `user_id`");
/// assert_eq!(decode_problem("card 4111 is not valid"), "invalid value");
/// ```
pub fn decode_problem(message: &str) -> String {
    // serde_json adds the position when it parsed text; it names no value.
    let (message, at) = match message.rfind(" at line ") {
        Some(i) if is_position(&message[i..]) => message.split_at(i),
        _ => (message, ""),
    };
    let invalid = ["invalid type", "invalid value"]
        .into_iter()
        .find_map(|what| {
            let rest = message.strip_prefix(what)?.strip_prefix(": ")?;
            Some((what, rest))
        });
    let told = if let Some((what, rest)) = invalid {
        match rest.rfind(", expected ") {
            Some(i) => {
                let found = kind(&rest[..i]);
                format!("{what}: {found}, expected {}", &rest[i + 11..])
            }
            None => what.to_owned(),
        }
    } else if message.starts_with("unknown variant `") {
        // What follows the variant: the type's own words, found from the
        // end (the variant, sent by the caller, may hold anything).
        match ["`, expected ", "`, there are no variants"]
            .iter()
            .find_map(|tail| message.rfind(tail))
        {
            Some(i) => format!("unknown variant, {}", &message[i + 3..]),
            None => "unknown variant".to_owned(),
        }
    } else if message.starts_with("invalid length ")
        || message.starts_with("missing field `")
        || message.starts_with("duplicate field `")
        || message.starts_with("unknown field `")
        || is_syntax(message)
    {
        // Lengths and the names of fields (the type's, or the keys of the
        // object as sent) are not values.
        message.to_owned()
    } else {
        "invalid value".to_owned()
    };
    one_line(&format!("{told}{at}"), MAX_ERROR_LEN)
}

/// A decode failure with its path, as (field, problem), both printable.
pub(crate) fn told(e: &serde_path_to_error::Error<serde_json::Error>) -> (String, String) {
    (
        one_line(&e.path().to_string(), 256),
        decode_problem(&e.inner().to_string()),
    )
}

/// Why `T` did not decode from a payload, told without its values: the
/// field's path and the problem. Run only after a plain decode failed (the
/// path costs a second pass).
pub(crate) fn decode_failure<'a, T: serde::de::DeserializeOwned>(
    raw: Option<&str>,
    value: impl FnOnce() -> &'a serde_json::Value,
) -> String {
    let failed = match raw {
        Some(raw) => {
            let mut de = serde_json::Deserializer::from_str(raw);
            serde_path_to_error::deserialize::<_, T>(&mut de).err()
        }
        None => serde_path_to_error::deserialize::<_, T>(value()).err(),
    };
    match failed {
        Some(e) => {
            let (field, problem) = told(&e);
            format!(
                "payload does not decode as {}: field `{field}`: {problem}",
                std::any::type_name::<T>()
            )
        }
        None => format!("payload does not decode as {}", std::any::type_name::<T>()),
    }
}

/// The kind of value named by serde's "unexpected" text (`string "x"`,
/// `integer `5``), without the value; `a value` if it is not one of
/// serde's own words.
fn kind(unexpected: &str) -> &'static str {
    KINDS
        .iter()
        .filter(|k| {
            unexpected == **k
                || unexpected
                    .strip_prefix(**k)
                    .is_some_and(|rest| rest.starts_with(" `") || rest.starts_with(" \""))
        })
        .max_by_key(|k| k.len())
        .copied()
        .unwrap_or("a value")
}

/// ` at line N column M`.
fn is_position(s: &str) -> bool {
    let mut words = s.split(' ').skip(1);
    words.next() == Some("at")
        && words.next() == Some("line")
        && words
            .next()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        && words.next() == Some("column")
        && words
            .next()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        && words.next().is_none()
}

/// serde_json's own messages about text that is not JSON (its
/// `ErrorCode`s, word for word), and the standard library's about numbers
/// and booleans: they name no value.
fn is_syntax(message: &str) -> bool {
    const FIXED: &[&str] = &[
        "EOF while parsing a list",
        "EOF while parsing an object",
        "EOF while parsing a string",
        "EOF while parsing a value",
        "expected `:`",
        "expected `,` or `]`",
        "expected `,` or `}`",
        "expected ident",
        "expected value",
        "expected `\"`",
        "invalid escape",
        "invalid number",
        "number out of range",
        "invalid unicode code point",
        "control character (\\u0000-\\u001F) found while parsing a string",
        "key must be a string",
        "float key must be finite",
        "invalid value: expected key to be a number in quotes",
        "lone leading surrogate in hex escape",
        "trailing comma",
        "trailing characters",
        "unexpected end of hex escape",
        "recursion limit exceeded",
        // The standard library's, through `FromStr` (query strings).
        "invalid digit found in string",
        "cannot parse integer from empty string",
        "number too large to fit in target type",
        "number too small to fit in target type",
        "invalid float literal",
        "provided string was not `true` or `false`",
    ];
    FIXED.contains(&message)
}

/// `url` as it may be printed: the password of its user part replaced by
/// `***` (a NATS token alone in the user part too), and so is a
/// `password=` in its query. Not a URL: returned as it is.
///
/// ```
/// use tidings::redact::redact_url;
/// assert_eq!(redact_url("postgres://app:s3cret@db:5432/x"), "postgres://app:***@db:5432/x");
/// assert_eq!(redact_url("nats://t0ken@nats:4222"), "nats://***@nats:4222");
/// assert_eq!(redact_url("postgres://db/x?user=a&password=s3cret"), "postgres://db/x?user=a&password=***");
/// assert_eq!(redact_url("sqlite://tidings.db"), "sqlite://tidings.db");
/// ```
pub fn redact_url(url: &str) -> String {
    if !url.contains("://") {
        return url.to_owned();
    }
    // A list of servers (NATS): each may carry its own credentials.
    url.split(',')
        .map(redact_server)
        .collect::<Vec<_>>()
        .join(",")
}

/// One server URL split where its credentials are: `scheme://userinfo@host`
/// then the rest (path, query, fragment), each part borrowed from the URL.
///
/// ```
/// use tidings::redact::ServerUrl;
/// let u = ServerUrl::parse("nats://u:p@h:4222/x?y");
/// assert_eq!((u.scheme, u.userinfo, u.host, u.tail), (Some("nats"), Some("u:p"), "h:4222", "/x?y"));
/// let bare = ServerUrl::parse("h:4222");
/// assert_eq!((bare.scheme, bare.userinfo, bare.host), (None, None, "h:4222"));
/// assert_eq!(u.without_userinfo(), "nats://h:4222/x?y");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerUrl<'a> {
    /// Before `://`, if the URL has one.
    pub scheme: Option<&'a str>,
    /// Before the last `@` of the authority: `user:password`, or a token.
    pub userinfo: Option<&'a str>,
    /// The authority without its user part: `host:port`.
    pub host: &'a str,
    /// From the first `/`, `?` or `#` after the authority.
    pub tail: &'a str,
}

impl<'a> ServerUrl<'a> {
    /// Splits one server's URL (not a comma-separated list).
    pub fn parse(url: &'a str) -> Self {
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (Some(s), r),
            None => (None, url),
        };
        let (authority, tail) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        Self {
            scheme,
            userinfo,
            host,
            tail,
        }
    }

    /// The URL with its user part left out.
    pub fn without_userinfo(&self) -> String {
        match self.scheme {
            Some(scheme) => format!("{scheme}://{}{}", self.host, self.tail),
            None => format!("{}{}", self.host, self.tail),
        }
    }
}

/// One server of [`redact_url`]'s list (with a scheme, or its host alone).
fn redact_server(url: &str) -> String {
    let u = ServerUrl::parse(url);
    let Some(scheme) = u.scheme else {
        return url.to_owned();
    };
    let host = u.host;
    let authority = match u.userinfo {
        Some(userinfo) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            // NATS (and others) take a token alone in the user part.
            None if scheme.starts_with("nats") || scheme == "tls" || scheme == "redis" => {
                format!("***@{host}")
            }
            None => format!("{userinfo}@{host}"),
        },
        None => host.to_owned(),
    };
    format!("{scheme}://{authority}{}", redact_query(u.tail))
}

/// A URL's path, query and fragment with the value of any `password=`
/// (or `pass=`, `token=`) parameter replaced.
fn redact_query(tail: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((name, _))
                if ["password", "pass", "token", "sslpassword"]
                    .contains(&name.to_ascii_lowercase().as_str()) =>
            {
                format!("{name}=***")
            }
            _ => p.to_owned(),
        })
        .collect();
    let mut out = format!("{path}?{}", params.join("&"));
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// serde's real messages, from real types, told without the value.
    #[test]
    fn real_serde_messages_lose_their_values() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        enum Plan {
            Free,
            Pro,
        }
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            n: u64,
            s: String,
            f: f32,
            plan: Plan,
            list: [u8; 2],
            when: chrono::DateTime<chrono::Utc>,
            uuid: uuid::Uuid,
        }
        let secret = "SECRET-4111\nERROR forged";
        let base = serde_json::json!({
            "n": 1, "s": "x", "f": 1.0, "plan": "Free", "list": [1, 2],
            "when": "2026-01-01T00:00:00Z", "uuid": "0190b2a0-0000-7000-8000-000000000000",
        });
        for (field, value) in [
            ("n", serde_json::json!(secret)),
            ("n", serde_json::json!(-4111)),
            ("n", serde_json::json!(4111.5)),
            ("s", serde_json::json!(4111)),
            ("s", serde_json::json!(true)),
            ("f", serde_json::json!(secret)),
            ("plan", serde_json::json!(secret)),
            ("plan", serde_json::json!({ secret: 1 })),
            ("list", serde_json::json!([secret, secret])),
            ("list", serde_json::json!([1, 2, 3])),
            ("when", serde_json::json!(secret)),
            ("uuid", serde_json::json!(secret)),
        ] {
            let mut v = base.clone();
            v[field] = value.clone();
            let raw = serde_json::from_value::<T>(v.clone())
                .unwrap_err()
                .to_string();
            let told = decode_problem(&raw);
            for needle in ["SECRET", "4111", "forged", "true"] {
                assert!(
                    !told.contains(needle),
                    "{field}={value}: {raw:?} told as {told:?}"
                );
            }
            assert!(!told.chars().any(char::is_control), "{told:?}");
            // And from text, where serde_json adds the position.
            let text = serde_json::to_string(&v).unwrap();
            let raw = serde_json::from_str::<T>(&text).unwrap_err().to_string();
            let told = decode_problem(&raw);
            for needle in ["SECRET", "4111", "forged", "true"] {
                assert!(
                    !told.contains(needle),
                    "{field}={value}: {raw:?} told as {told:?}"
                );
            }
        }
    }

    #[test]
    fn an_unknown_variant_keeps_the_whole_list_of_variants() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        enum Three {
            A,
            B,
            C,
        }
        let raw = serde_json::from_value::<Three>(serde_json::json!("x`, y"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            decode_problem(&raw),
            "unknown variant, expected one of `A`, `B`, `C`"
        );
    }

    #[test]
    fn the_expected_part_and_the_kind_are_kept() {
        let raw = serde_json::from_value::<u64>(serde_json::json!("s3cret"))
            .unwrap_err()
            .to_string();
        assert_eq!(decode_problem(&raw), "invalid type: string, expected u64");
        let raw = serde_json::from_str::<u64>("[1,").unwrap_err().to_string();
        assert!(
            decode_problem(&raw).starts_with("invalid type: sequence"),
            "{raw}"
        );
        let raw = serde_json::from_str::<u64>("{\"a\" 1}")
            .unwrap_err()
            .to_string();
        assert!(
            decode_problem(&raw).starts_with("invalid type: map"),
            "{raw}"
        );
        let raw = serde_json::from_str::<Vec<u8>>("[1, 2")
            .unwrap_err()
            .to_string();
        assert_eq!(decode_problem(&raw), raw, "syntax messages carry no value");
    }

    #[test]
    fn one_line_escapes_and_bounds() {
        assert_eq!(one_line("a\r\nb\u{7}", 100), "a\\r\\nb\\u{7}");
        let long = one_line(&"é".repeat(1000), 9);
        assert_eq!(long, "éééé…");
        assert_eq!(one_line("", 0), "");
    }

    #[test]
    fn urls_lose_their_secrets_only() {
        assert_eq!(redact_url("nats://u:p@h:1,h2:2"), "nats://u:***@h:1,h2:2");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://h/db?password=x&sslmode=require#f"),
            "postgres://h/db?password=***&sslmode=require#f"
        );
        assert_eq!(redact_url("a p@ss word"), "a p@ss word");
        assert_eq!(
            redact_url("nats://u:p1@h1,nats://v:p2@h2"),
            "nats://u:***@h1,nats://v:***@h2"
        );
        assert_eq!(redact_url("u://:p@h"), "u://:***@h");
    }
}
