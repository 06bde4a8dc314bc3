//! [`PrivatePostgres`]: a PostgreSQL cluster of a test's own.

use super::{accepts, free_port, scratch_dir, wait_for};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// How a [`PrivatePostgres`] is stopped (`pg_ctl stop -m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Connections are closed, then the server shuts down cleanly
    /// (`-m fast`: a restart or a planned failover).
    Fast,
    /// The server quits without a checkpoint (`-m immediate`: as a crash
    /// of the database host; it recovers from its WAL at the next start).
    Immediate,
}

/// A PostgreSQL cluster made with `initdb` in a temporary directory, run
/// with `pg_ctl` on a port of its own, trust auth for `postgres`. Runs the
/// server as the `postgres` user when the test runs as root (PostgreSQL
/// refuses root). Stopped and deleted when dropped.
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl PrivatePostgres {
    /// Makes and starts a cluster.
    ///
    /// # Errors
    /// `initdb` or `pg_ctl` is missing or fails (their output is in the error).
    pub fn start() -> io::Result<Self> {
        let bin = bindir()?;
        let dir = scratch_dir("pg")?;
        as_postgres_owner(&dir)?;
        let data = dir.join("data");
        let me = Self {
            dir,
            port: free_port(),
            bin,
        };
        me.run(
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )?;
        me.restart()?;
        Ok(me)
    }

    /// Its URL: `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (its clients see their connections closed).
    ///
    /// # Errors
    /// `pg_ctl stop` failed.
    pub fn stop(&self, how: Stop) -> io::Result<()> {
        let mode = match how {
            Stop::Fast => "fast",
            Stop::Immediate => "immediate",
        };
        let data = self.dir.join("data");
        self.run("pg_ctl", &["stop", "-D", path(&data), "-m", mode, "-w"])?;
        Ok(())
    }

    /// Starts the server again on the same port and data (it is the same
    /// database: what was committed is there).
    ///
    /// # Errors
    /// `pg_ctl start` failed or the server did not accept connections in 30 s.
    pub fn restart(&self) -> io::Result<()> {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            path(&self.dir)
        );
        self.run(
            "pg_ctl",
            &[
                "start",
                "-D",
                path(&data),
                "-l",
                path(&log),
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
            ],
        )?;
        if wait_for(Duration::from_secs(30), || accepts(self.port)) {
            Ok(())
        } else {
            Err(io::Error::other("the private PostgreSQL did not come up"))
        }
    }

    /// Runs SQL through `psql` as `postgres` (for `pg_terminate_backend`,
    /// say); returns what it printed, unaligned, tuples only.
    ///
    /// # Errors
    /// `psql` failed.
    pub fn psql(&self, sql: &str) -> io::Result<String> {
        let port = self.port.to_string();
        let out = self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-At",
                "-c",
                sql,
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Terminates every other client's connection (`pg_terminate_backend`):
    /// what an idle-session reaper or an operator does. Returns how many.
    ///
    /// # Errors
    /// `psql` failed.
    pub fn terminate_backends(&self) -> io::Result<usize> {
        let out = self.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        )?;
        Ok(out.parse().unwrap_or(0))
    }

    fn run(&self, tool: &str, args: &[&str]) -> io::Result<Output> {
        let exe = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).current_dir(&self.dir).output()?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(io::Error::other(format!(
                "{tool} failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop(Stop::Immediate);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// Where `initdb` and `pg_ctl` are: `pg_config --bindir`.
fn bindir() -> io::Result<PathBuf> {
    let out = Command::new("pg_config").arg("--bindir").output()?;
    if !out.status.success() {
        return Err(io::Error::other("pg_config --bindir failed"));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    ))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// When running as root, gives the directory to the `postgres` user, who
/// runs the server.
fn as_postgres_owner(dir: &Path) -> io::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other("chown to postgres failed"))
    }
}
