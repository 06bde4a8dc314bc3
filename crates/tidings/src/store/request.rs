//! [`request`]: the one piece of scaffolding every store with a writer task
//! repeats — hand the task an operation with a reply channel, and resolve
//! with its answer.

use super::StoreError;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

/// Where a writer task answers one operation.
pub type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// Hands a store's writer task the operation `make` builds around a
/// [`Reply`], through `send` (`false`: the task is gone), and resolves with
/// the task's answer. The operation is sent at once, not when the future is
/// first polled, so operations keep the order of the calls that made them.
///
/// The task gone before it answers (or before it was sent) is
/// [`StoreError::Closed`].
///
/// ```
/// use tidings::store::{request, Reply, StoreError};
/// use tokio::sync::mpsc;
///
/// enum Op { Flush(Reply<()>) }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (tx, mut rx) = mpsc::unbounded_channel();
/// let flushed = request(|op| tx.send(op).is_ok(), Op::Flush);
/// let Some(Op::Flush(reply)) = rx.recv().await else { unreachable!() };
/// reply.send(Ok(())).unwrap();
/// assert!(flushed.await.is_ok());
///
/// drop(rx); // the writer is gone
/// let closed = request(|op| tx.send(op).is_ok(), Op::Flush).await;
/// assert!(matches!(closed, Err(StoreError::Closed)));
/// # }
/// ```
pub fn request<T: Send + 'static, Op>(
    send: impl FnOnce(Op) -> bool,
    make: impl FnOnce(Reply<T>) -> Op,
) -> BoxFuture<'static, Result<T, StoreError>> {
    let (reply, answer) = oneshot::channel();
    let sent = send(make(reply));
    Box::pin(async move {
        if !sent {
            return Err(StoreError::Closed);
        }
        answer.await.unwrap_or(Err(StoreError::Closed))
    })
}
