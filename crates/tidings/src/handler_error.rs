//! [`HandlerError`]: what a handler returns when it fails, and whether to try again.

use std::fmt;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error a handler returns. It says whether the delivery may be retried.
///
/// `?` on any [`std::error::Error`] inside a handler converts it into a
/// **retryable** `HandlerError`: the bus tries the delivery again, with backoff,
/// until the handler's attempts run out, and then stores it as a dead letter.
/// [`HandlerError::permanent`] skips the remaining attempts (a payload that can
/// never be processed, say).
///
/// Like `anyhow::Error`, `HandlerError` does not implement
/// [`std::error::Error`] itself; that is what lets `?` convert every error.
///
/// # Examples
///
/// ```
/// use tidings::HandlerError;
///
/// fn parse(input: &str) -> Result<u64, HandlerError> {
///     let n: u64 = input.parse()?; // retryable
///     if n == 0 {
///         return Err(HandlerError::permanent("zero is never valid"));
///     }
///     Ok(n)
/// }
/// assert!(parse("x").unwrap_err().is_retryable());
/// assert!(!parse("0").unwrap_err().is_retryable());
/// ```
pub struct HandlerError {
    retryable: bool,
    source: BoxError,
}

impl HandlerError {
    /// A failure worth another attempt (a timeout talking to a database, say).
    ///
    /// ```
    /// let err = tidings::HandlerError::retryable("database busy");
    /// assert!(err.is_retryable());
    /// ```
    pub fn retryable(error: impl Into<BoxError>) -> Self {
        Self {
            retryable: true,
            source: error.into(),
        }
    }

    /// A failure that no retry can fix: the delivery goes straight to the dead letters.
    ///
    /// ```
    /// let err = tidings::HandlerError::permanent("missing field user_id");
    /// assert!(!err.is_retryable());
    /// assert_eq!(err.to_string(), "missing field user_id");
    /// ```
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        Self {
            retryable: false,
            source: error.into(),
        }
    }

    /// Whether the bus may try this delivery again.
    ///
    /// ```
    /// assert!(tidings::HandlerError::retryable("x").is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// The underlying error.
    ///
    /// ```
    /// let err = tidings::HandlerError::from(std::io::Error::other("disk"));
    /// assert!(err.source().downcast_ref::<std::io::Error>().is_some());
    /// ```
    pub fn source(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }

    /// Consumes the error and returns the underlying one.
    ///
    /// ```
    /// let err = tidings::HandlerError::permanent("bad");
    /// assert_eq!(err.into_source().to_string(), "bad");
    /// ```
    pub fn into_source(self) -> BoxError {
        self.source
    }
}

impl<E> From<E> for HandlerError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        Self::retryable(error)
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)?;
        let mut next = self.source.source();
        while let Some(cause) = next {
            write!(f, ": {cause}")?;
            next = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("retryable", &self.retryable)
            .field("source", &self.source)
            .finish()
    }
}

/// What a handler function may return: `()` or `Result<(), E>` with `E: Into<HandlerError>`.
///
/// Used by [`macro@crate::handler`]; you rarely name it yourself.
///
/// ```
/// use tidings::{HandlerError, IntoHandlerResult};
/// assert!(().into_handler_result().is_ok());
/// let r: Result<(), std::io::Error> = Err(std::io::Error::other("x"));
/// assert!(r.into_handler_result().unwrap_err().is_retryable());
/// ```
#[diagnostic::on_unimplemented(
    message = "a handler must return `()` or `Result<(), E>` with `E: Into<HandlerError>`, not `{Self}`",
    label = "this handler returns `{Self}`"
)]
pub trait IntoHandlerResult {
    /// Converts into the bus's result type.
    fn into_handler_result(self) -> Result<(), HandlerError>;
}

impl IntoHandlerResult for () {
    fn into_handler_result(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl<E: Into<HandlerError>> IntoHandlerResult for Result<(), E> {
    fn into_handler_result(self) -> Result<(), HandlerError> {
        self.map_err(Into::into)
    }
}
