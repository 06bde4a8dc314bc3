//! [`PrivateNats`]: a NATS server with JetStream of a test's own.

use super::{accepts, free_port, scratch_dir, wait_for};
use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// The environment variable that names the `nats-server` binary to run
/// (a newer one than the machine's, say); unset: `nats-server` on the
/// `PATH`, or `/usr/sbin/nats-server`.
pub const SERVER_VAR: &str = "TIDINGS_TEST_NATS_SERVER";

/// `nats-server -a 127.0.0.1 -p PORT -js -sd DIR` as a child process; its
/// JetStream data stays in its directory across [`stop`](Self::stop) and
/// [`restart`](Self::restart). Killed and deleted when dropped.
#[derive(Debug)]
pub struct PrivateNats {
    dir: PathBuf,
    port: u16,
    child: Mutex<Option<Child>>,
}

impl PrivateNats {
    /// Starts a server (the binary [`SERVER_VAR`] names, `nats-server` on the
    /// `PATH`, or `/usr/sbin/nats-server`).
    ///
    /// # Errors
    /// The server is missing or did not accept connections in 30 s.
    pub fn start() -> io::Result<Self> {
        let me = Self {
            dir: scratch_dir("nats")?,
            port: free_port(),
            child: Mutex::new(None),
        };
        me.restart()?;
        Ok(me)
    }

    /// Its URL: `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server: `graceful` with SIGTERM (a restart for an upgrade,
    /// JetStream state written out), otherwise SIGKILL (a crash).
    ///
    /// # Errors
    /// The signal could not be sent.
    pub fn stop(&self, graceful: bool) -> io::Result<()> {
        let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return Ok(());
        };
        if graceful {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            for _ in 0..200 {
                if child.try_wait()?.is_some() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts the server again on the same port and storage directory.
    ///
    /// # Errors
    /// The server is missing or did not accept connections in 30 s.
    pub fn restart(&self) -> io::Result<()> {
        let exe = if let Some(exe) = std::env::var_os(SERVER_VAR) {
            PathBuf::from(exe)
        } else if Command::new("nats-server")
            .arg("--version")
            .output()
            .is_ok()
        {
            PathBuf::from("nats-server")
        } else {
            PathBuf::from("/usr/sbin/nats-server")
        };
        let store = self.dir.join("js");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))?;
        let child = Command::new(exe)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&store)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        *self.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        if wait_for(Duration::from_secs(30), || accepts(self.port)) {
            Ok(())
        } else {
            Err(io::Error::other("the private nats-server did not come up"))
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        let _ = self.stop(false);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
