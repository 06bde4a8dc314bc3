//! [`Proxy`]: a TCP proxy that can freeze or cut the connections through
//! it, and (in front of a NATS server) lose one message the server sends.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with the bytes through it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct State {
    /// Holding every byte (the connections stay open).
    frozen: bool,
    /// Holding the bytes from the upstream only (its answers).
    answers_held: bool,
    /// Bumped by [`Proxy::cut`]: connections opened before are closed.
    generation: u64,
    /// Bumped by [`Proxy::lose_message`]: the next NATS message from the
    /// upstream that holds the marker is dropped.
    losses: u64,
}

/// Forwards `127.0.0.1:<port>` to an upstream port, on a thread and runtime
/// of its own (a frozen test runtime does not freeze it, nor the reverse).
///
/// - [`freeze`](Self::freeze): no byte goes through either way, the
///   connections stay open and new ones are accepted (and held too): a
///   network stall, or a peer paused in a GC or by SIGSTOP, as the other
///   side sees it.
/// - [`hold_answers`](Self::hold_answers): what the clients send goes
///   through, what the upstream sends back is held: a request the server
///   carries out and whose answer is lost (with a [`cut`](Self::cut) after).
/// - [`cut`](Self::cut): every open connection is closed; new ones go
///   through: a partition that resets, a NAT or firewall that forgets.
/// - [`lose_message`](Self::lose_message) (made with
///   [`start_nats`](Self::start_nats)): the next message the NATS server
///   sends that holds a marker is dropped, the connection kept: a delivery
///   lost on its way while the subscription it was sent to lives on (as
///   when a client resubscribes after a reconnect and the server's pull
///   request, older than the cut, goes on answering).
///
/// Stops when dropped (closing every connection).
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    state: watch::Sender<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    marker: Arc<Mutex<Vec<u8>>>,
}

impl Proxy {
    /// Starts forwarding a free port to `127.0.0.1:<upstream>`.
    ///
    /// # Errors
    /// No port could be bound.
    pub fn start(upstream: u16) -> io::Result<Self> {
        Self::start_framed(upstream, false)
    }

    /// Starts forwarding a free port to a NATS server at
    /// `127.0.0.1:<upstream>`, reading the server's bytes as NATS protocol
    /// messages, so that [`lose_message`](Self::lose_message) can drop one.
    ///
    /// # Errors
    /// No port could be bound.
    pub fn start_nats(upstream: u16) -> io::Result<Self> {
        Self::start_framed(upstream, true)
    }

    fn start_framed(upstream: u16, nats: bool) -> io::Result<Self> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        let (state, watching) = watch::channel(State::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let marker = Arc::new(Mutex::new(Vec::new()));
        let frames = nats.then(|| marker.clone());
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("a runtime for the proxy");
            rt.block_on(async move {
                let Ok(listener) = TcpListener::from_std(std_listener) else {
                    return;
                };
                tokio::select! {
                    _ = stopped => {}
                    _ = accept(listener, upstream, watching, frames) => {}
                }
            });
        });
        Ok(Self {
            port,
            state,
            stop: Some(stop),
            thread: Some(thread),
            marker,
        })
    }

    /// The port to connect to instead of the upstream's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Holds every byte until [`thaw`](Self::thaw).
    pub fn freeze(&self) {
        self.state.send_modify(|s| s.frozen = true);
    }

    /// Holds the upstream's bytes (its answers) until [`thaw`](Self::thaw);
    /// the clients' go through.
    pub fn hold_answers(&self) {
        self.state.send_modify(|s| s.answers_held = true);
    }

    /// Lets the bytes through again (both ways).
    pub fn thaw(&self) {
        self.state.send_modify(|s| {
            s.frozen = false;
            s.answers_held = false;
        });
    }

    /// Closes every connection open now.
    pub fn cut(&self) {
        self.state.send_modify(|s| s.generation += 1);
    }

    /// Drops the next message the NATS server sends (a `MSG` or `HMSG`,
    /// whole) whose bytes hold `marker`, on whichever connection; the
    /// connection goes on. Only for a proxy made with
    /// [`start_nats`](Self::start_nats).
    pub fn lose_message(&self, marker: &[u8]) {
        *self.marker.lock().unwrap_or_else(|e| e.into_inner()) = marker.to_vec();
        self.state.send_modify(|s| s.losses += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    state: watch::Receiver<State>,
    frames: Option<Arc<Mutex<Vec<u8>>>>,
) {
    while let Ok((down, _)) = listener.accept().await {
        let state = state.clone();
        let frames = frames.clone();
        tokio::spawn(async move {
            let generation = state.borrow().generation;
            let Ok(up) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = down.set_nodelay(true);
            let _ = up.set_nodelay(true);
            let (dr, dw) = down.into_split();
            let (ur, uw) = up.into_split();
            tokio::select! {
                _ = pipe(dr, uw, state.clone(), generation, false, None) => {}
                _ = pipe(ur, dw, state.clone(), generation, true, frames) => {}
            }
        });
    }
}

/// Copies one direction (`answers`: the upstream's), holding bytes while
/// frozen, until either side closes or the connection is cut. With
/// `frames` (a NATS server's answers), whole protocol messages are
/// forwarded, and one holding the marker is dropped after each
/// [`Proxy::lose_message`].
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut state: watch::Receiver<State>,
    generation: u64,
    answers: bool,
    frames: Option<Arc<Mutex<Vec<u8>>>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut lost = state.borrow().losses;
    loop {
        if !open(&mut state, generation, answers).await {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = cut(&mut state, generation) => return,
        };
        if !open(&mut state, generation, answers).await {
            return;
        }
        let Some(marker) = &frames else {
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
            continue;
        };
        pending.extend_from_slice(&buf[..n]);
        let mut out = Vec::new();
        while let Some((len, message)) = frame_len(&pending) {
            let frame: Vec<u8> = pending.drain(..len).collect();
            let losses = state.borrow().losses;
            if message && losses != lost {
                let marker = marker.lock().unwrap_or_else(|e| e.into_inner());
                if !marker.is_empty() && frame.windows(marker.len()).any(|w| w == &marker[..]) {
                    lost = losses;
                    continue;
                }
            }
            out.extend_from_slice(&frame);
        }
        if to.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// The length of the NATS protocol message at the start of `bytes`, once
/// all of it is there, and whether it is a message (`MSG` or `HMSG`: its
/// line, its payload, sized by the line's last token, and a line end) or
/// any other line (`INFO`, `PING`, `+OK` ...).
fn frame_len(bytes: &[u8]) -> Option<(usize, bool)> {
    let line = bytes.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&bytes[..line]).ok()?;
    let message = head.starts_with("MSG ") || head.starts_with("HMSG ");
    let payload = if message {
        head.split(' ').next_back()?.parse::<usize>().ok()? + 2
    } else {
        0
    };
    let len = line + 2 + payload;
    (bytes.len() >= len).then_some((len, message))
}

/// Waits while this direction is held; `false` once the connection is cut.
async fn open(state: &mut watch::Receiver<State>, generation: u64, answers: bool) -> bool {
    loop {
        let s = *state.borrow_and_update();
        if s.generation != generation {
            return false;
        }
        let held = s.frozen || (answers && s.answers_held);
        if !held {
            return true;
        }
        if state.changed().await.is_err() {
            return false;
        }
    }
}

/// Resolves once the connection is cut.
async fn cut(state: &mut watch::Receiver<State>, generation: u64) {
    loop {
        if state.borrow_and_update().generation != generation {
            return;
        }
        if state.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
