//! # tidings-postgres: a PostgreSQL store for tidings
//!
//! The bus's events live in tables of the application's own database
//! (`tidings_events`, `tidings_deliveries`, `tidings_dead_letters`, and for
//! shared names `tidings_instances` and `tidings_handlers`), scoped by a bus
//! name, so that several services can share one database.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let store = tidings_postgres::PgStore::connect("postgres://postgres@127.0.0.1/app", "orders").await?;
//! let bus = tidings::EventBus::builder().store(store).build()?;
//! // Returns once the event is committed in PostgreSQL.
//! bus.emit("order_created", serde_json::json!({"order_id": 1})).await?;
//! # Ok(()) }
//! ```
//!
//! ## Guarantees
//! The same as every store (see `tidings::store`): `emit(..).await` returns
//! after the commit; handled deliveries are deleted, failed attempts counted,
//! dead letters kept until replayed; at the next start, whatever was pending
//! is delivered, oldest first; **at least once** across a crash of the
//! process. PostgreSQL's own durability applies (`synchronous_commit`) to
//! emits, begin marks, replays and discards. **Outcomes of deliveries
//! commit without waiting for the disk** (`synchronous_commit = off` for a
//! batch holding nothing else): a crash of the *server* may undo the last
//! few, and those deliveries are made again, as after a crash of the
//! process; a flush (shutdown) waits until they are on disk.
//!
//! - **Faults of the server.** Every connection is made again after it
//!   breaks (backoff 50 ms to 2 s; a stalled one is dropped, and the
//!   server ends the statement it was running within a second:
//!   `client_connection_check_interval`, PostgreSQL 14 or later, so that a
//!   statement given up on never runs on holding locks). While the
//!   server is away, an emit waits up to [`PgStore::emit_timeout`] (5 s),
//!   then fails with [`tidings::EmitError::Unavailable`]; outcomes of
//!   deliveries wait in the writer's queue and are written once it is back.
//!   `bus.stats().store` says whether the store is connected.
//! - **Group commit.** One writer task with its own connection takes every
//!   operation queued for it (emits and handler outcomes of all tasks),
//!   writes them in one transaction with a handful of set-based statements
//!   (`UNNEST` arrays, not a statement per row), then answers the emits. A
//!   batch of emits alone is one statement, committing by itself. The
//!   bus's connections plan each statement once (`plan_cache_mode =
//!   force_generic_plan`). An emit on its own (nothing queued, the last
//!   batch one operation, the connection free and up) is written by its
//!   emitter's task on the writer's connection, with the same statement:
//!   two task wake-ups fewer (one emitter's wait, p50 368 → 331 µs;
//!   `direct.rs`). Handler outcomes have a writer and a connection of
//!   their own; on a bus name of its own, a small batch of handled
//!   deliveries waits up to 2 ms for more (`writer::OUTCOMES_LINGER`: one
//!   delete for several events instead of one beside each next emit).
//!   A batch of emits is first sent without `ON CONFLICT DO NOTHING`
//!   (20-30 % of the insert's server time); a batch written again after its
//!   answer was lost fails that try, which wrote nothing, and is sent again
//!   guarded (`append::Commit`). Inside a transaction (an outbox emit, a
//!   batch with outcomes) an append is always guarded.
//! - **Emitters that come back join one batch.** Tasks that each await
//!   their emit and emit again (a worker loop) split into two halves under
//!   one writer, each batch carrying half of them and paying a commit's
//!   fixed cost. The writer remembers which tasks emitted its last batch,
//!   and its next batch of emits waits up to 1 ms for those tasks to emit
//!   again (`rejoin.rs`): an emit from any other task ends the wait at
//!   once (requests that each emit once never wait for each other), and a
//!   wait that misses makes the next ones skipped, doubling up to 64
//!   batches. Below 4 emitters nothing waits. (`connect` with 64 such
//!   emitters: 58-59 → 65-73 k events/s in three alternated pairs; the
//!   waits of requests that each emit once unchanged: docs/BENCHMARKS.md
//!   section 7, session 25.)
//! - **One row per event where one suffices.** An event queued to a single
//!   handler (on a bus name of its own), or of a type one handler is
//!   registered for (on a shared name), is written in its delivery's row
//!   (`tidings_deliveries.data` and two more columns), not in a row of
//!   `tidings_events` beside it: an emit inserts one row and a handled
//!   delivery deletes one, where two each doubled the work (0.38-0.43 of raw
//!   PostgreSQL before, 0.55-0.56 after, in alternation: docs/BENCHMARKS.md,
//!   section 7, sessions 15 and 20). An event with several deliveries and an
//!   outbox's on a name of its own keep their row in `tidings_events`; a
//!   single delivery that becomes a dead letter (or is pruned) has its
//!   event written there first.
//! - **Plans the statistics cannot spoil.** A queue's tables empty and fill
//!   again, and autovacuum's `ANALYZE` taken between two bursts tells the
//!   planner they hold no row. Every statement the writers and the claimer
//!   run reads only the rows it names whatever the statistics say: each
//!   delivery and event is found by its primary key (a `LATERAL` lookup)
//!   and changed by its row address, and the claimer's connection plans
//!   without sorts where an index gives the order (`enable_sort = off`,
//!   `jit = off`). So do the statements of a start (the pending read
//!   back after a crash), of a lost claim's recovery, and of an operator's
//!   request (`summarize`, `registrations`, `prune`, `purge`): none joins
//!   two of the queue's tables. Tested under the worst statistics
//!   (`src/plans.rs`); before, such plans read every pending delivery once
//!   per settle and the shared bus collapsed (docs/BENCHMARKS.md, section
//!   7, session 13), and a start with 20 000 pending ran past 20 s a
//!   statement (session 14). A plan kept for a connection's life is made
//!   at its first execution, perhaps right after autovacuum truncated an
//!   emptied table: the bus's connections plan without sequential scans
//!   (`enable_seqscan = off`, `jit = off`), else such a plan looked up
//!   each event by scanning `tidings_events` as it grew again (a batch ran
//!   for minutes; session 15). Tested too.
//! - **One bus per name.** A store holds a session advisory lock on its bus
//!   name for its life; a second store with that name, in any process, gets
//!   [`StoreError::Locked`](tidings::StoreError::Locked). The lock is held
//!   by the writer's own connection: a store whose connection broke has
//!   lost it, and writes nothing until it has taken it again (while another
//!   store holds the name, its emits fail `Unavailable`). The lock is
//!   released when the store is dropped (after its writer has finished) or
//!   when its process dies. `connect` and `connect_shared` refuse each other
//!   on one name.
//! - **Transactional outbox.** [`Outbox::emit`] writes an event inside the
//!   application's own transaction: it exists if and only if that
//!   transaction commits. `pg_notify` at commit wakes the bus's relay, which
//!   claims committed events (`FOR UPDATE SKIP LOCKED`, marking them queued)
//!   and queues them, waiting for room in the bus; it also looks every
//!   second. Such events are delivered in commit order as the relay finds
//!   them, not interleaved by key with events emitted through `emit`.
//! - **Several processes on one bus name** ([`PgStore::connect_shared`]), a
//!   service with replicas: **each delivery goes to one of them**. Every
//!   process registers its handlers on the name (`tidings_handlers`); an
//!   event gets a delivery per registered handler of its type and is not
//!   queued where it was emitted (a process may emit types it has no
//!   handler for); each process's relay claims deliveries to its own
//!   handlers (`FOR UPDATE SKIP LOCKED`), woken by `pg_notify`, reading an
//!   index of what it may take rather than every pending delivery (see
//!   docs/BENCHMARKS.md, section 7). **A key's
//!   deliveries to a handler are claimed one at a time, oldest first**, the
//!   next only once the last is done wherever it ran: per-key order holds
//!   across processes (one claim round trip per delivery of a key). A
//!   keyed event written in a transaction still open (an outbox's, another
//!   process's batch) holds back its key's later ones: appends register
//!   their keys before drawing their order, and claims read the
//!   registrations first (`horizon.rs`). A dead letter replayed, in any
//!   process, is written pending again as its key's newest, for whichever
//!   process claims it: never run beside a later event of its key. Each
//!   store is an instance renewing a lease on itself (on a connection of its
//!   own); what it claimed is its own until it stops (the others claim it at
//!   once) or its lease runs out because its process died (kill -9 tested)
//!   or paused. Every claim carries a fencing token: a settle from an
//!   instance that was paused past its lease, whose delivery another took
//!   over, changes nothing and is counted (`stats().store.stale_settles`).
//!   A claim takes nothing unless its instance's lease is running when it
//!   commits, and each instance sweeps for deliveries it owns under a claim
//!   it never heard back from (a statement given up on the client still
//!   runs on the server): these are run, not left stuck. It sweeps once a
//!   second for a minute after a claim failed, every 10 s until 20 minutes
//!   have passed, once a minute otherwise (the sweep reads the bus's
//!   pending deliveries: see below). Every instance hears every append's
//!   notification; an instance woken by one claims at once, unless its
//!   last claim took nothing (woken while it waited: not by a signal sent
//!   while the claim before was on its way, which kept one keyed event at
//!   a time 7.5 ms from its handler) or 8 deliveries or more: then no
//!   sooner than 6 ms after that claim started, so that the claims' work grows with
//!   the events rather than with the instances (4 processes moved 17-18 k
//!   events/s before, 23-26 k after: docs/BENCHMARKS.md, section 7,
//!   session 21; held after every claim, one event at a time from a front
//!   end waited 7 ms for its claim, 0.8 ms now: session 23). **An instance
//!   takes its own unkeyed emits as it writes them** (`append::Taking`):
//!   when their type has one handler on the name and it is this
//!   instance's, while the instance holds at most 256 deliveries not yet
//!   done and its lease runs, the insert writes the instance as owner with
//!   a fencing token, and the events go to its relay with no claim and no
//!   notification; beyond 256, its emits are left to whichever instance
//!   claims them. Such a taking is a claim in all but name: its token is
//!   held before the statement is sent, and one whose answer was lost is
//!   looked for at the next claim. One instance at a
//!   time walks the keys' heads for a set of handlers (a transaction
//!   advisory lock, taken only if free; an instance that found it taken
//!   claims again after the gap); a keyed settle wakes its own instance's
//!   relay, not every instance's (a notification holds the database's one
//!   lock for notifying commits until the commit is over, so notifying
//!   settles queued behind every append's disk flush); claims commit
//!   without waiting for the disk (a claim lost with the server leaves its
//!   deliveries unclaimed, and its settles are refused by their fencing
//!   token). With 4 processes and 1 000 keys: +40 % (docs/BENCHMARKS.md,
//!   section 7, session 22).
//! - **A claim writes no indexed column.** A shared name's delivery is
//!   written `shared` and `queued` and neither changes; it is claimed when
//!   it has an owner. A claim writes only the owner and its fencing token,
//!   columns no index names, into pages kept more than half empty
//!   (`fillfactor` 40), so PostgreSQL updates the row in place and writes
//!   no index entry (tested: `src/plans.rs`; with 1 000 keys the shared
//!   bus moved half as much again, docs/BENCHMARKS.md section 7, session
//!   20). The claim's index still lists the claimed deliveries in flight,
//!   and each claim walks past them once (tested with 2 000). What reads
//!   deliveries by owner (the sweep, a dead instance's cleanup, a lost
//!   claim's recovery) reads the bus's pending deliveries instead: rare
//!   paths. Upgrading: the migration converts a shared name's rows; an
//!   older version still running has its inserts converted by a trigger
//!   (it claims none of the converted rows, and settles what it holds).

mod admin;
mod append;
mod claims;
mod direct;
mod horizon;
mod link;
#[cfg(test)]
mod plans;
mod recover;
mod rejoin;
mod schema;
mod store;
mod writer;

pub use store::{Outbox, OutboxError, PgAdmin, PgStore};
