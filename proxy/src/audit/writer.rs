//! The writer task: a bounded queue in front of one file, the chain, checkpoints, fsync and
//! rotation. Senders wait when the queue is full (backpressure); nothing is ever dropped. A
//! write error is logged and retried (with the file cut back to its last complete line) until
//! it succeeds, while the queue fills and sessions wait.
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pgveil_policy::crypto::KeySet;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::{mpsc, oneshot};

use super::chain::{Anchor, ChainWriter};
use super::marker;
use super::record::{format_time, PrevEnd, Record};
use super::statement::{Clock, StatementRecord};
use super::syslog::Forwarder;
use super::verify::verify_tail;
use super::{AuditConfig, AuditError, FsyncPolicy};

pub(crate) enum Msg {
    Record(Box<Record>),
    Statement(StatementRecord),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// The sending end; cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::Sender<Msg>,
    depth: IntGauge,
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSink")
            .field("queued", &self.depth.get())
            .finish()
    }
}

impl AuditSink {
    /// Queues one record (its `seq`, `log`, `signature` and `tag` are set by the writer). Waits
    /// while the queue is full. Fails only when the writer has stopped.
    pub async fn record(&self, r: Record) -> Result<(), AuditError> {
        self.send(Msg::Record(Box::new(r))).await
    }

    /// Queues one statement record (the hot path: see [`StatementRecord`]). Waits while the
    /// queue is full. Fails only when the writer has stopped.
    pub async fn statement_record(&self, r: StatementRecord) -> Result<(), AuditError> {
        self.send(Msg::Statement(r)).await
    }

    async fn send(&self, msg: Msg) -> Result<(), AuditError> {
        self.depth.inc();
        if self.tx.send(msg).await.is_err() {
            self.depth.dec();
            tracing::error!("audit writer has stopped; an audit record could not be written");
            return Err(AuditError::Closed);
        }
        Ok(())
    }

    /// Waits until everything queued before is written and fsynced.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Flush(tx))
            .await
            .map_err(|_| AuditError::Closed)?;
        rx.await.map_err(|_| AuditError::Closed)
    }
}

/// Closes the log on shutdown: writes the closing checkpoint, fsyncs, stops the task.
pub struct AuditHandle {
    tx: mpsc::Sender<Msg>,
    task: tokio::task::JoinHandle<()>,
    /// The syslog forwarder, which ends once the writer (its only sender) has stopped.
    forward_task: Option<tokio::task::JoinHandle<()>>,
    path: PathBuf,
}

impl AuditHandle {
    /// The active file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes what is queued, then the closing checkpoint, and fsyncs; then gives the syslog
    /// forwarder up to [`Self::FORWARD_GRACE`] to send what it holds. Records sent after this
    /// fail with [`AuditError::Closed`].
    pub async fn close(self) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        let sent = self.tx.send(Msg::Close(tx)).await.is_ok();
        let closed = sent && rx.await.is_ok();
        self.task.await.map_err(|_| AuditError::Closed)?;
        if let Some(mut forward) = self.forward_task {
            if tokio::time::timeout(Self::FORWARD_GRACE, &mut forward)
                .await
                .is_err()
            {
                forward.abort();
                tracing::warn!("audit syslog: the receiver did not take the last records before shutdown; the audit file has them");
            }
        }
        closed.then_some(()).ok_or(AuditError::Closed)
    }

    /// How long shutdown waits for the syslog forwarder.
    pub const FORWARD_GRACE: Duration = Duration::from_secs(3);
}

/// Opens the log and spawns the writer: checks how the existing file (if any) ended, creates
/// the new log's open marker, moves the file aside, writes the `start` record that says what it
/// found ([`Anchor`]), then removes the previous log's marker.
pub(crate) async fn spawn(
    cfg: &AuditConfig,
    keys: &KeySet,
    records: IntCounter,
    depth: IntGauge,
    forward: Option<(Forwarder, tokio::task::JoinHandle<()>)>,
) -> Result<(AuditSink, AuditHandle), AuditError> {
    if cfg.queue_capacity == 0 {
        return Err(AuditError::Config(
            "audit.queue_capacity: must be at least 1".into(),
        ));
    }
    let path = cfg.file.clone();
    let found = existing(&path, keys)?;
    let mut chain = ChainWriter::new(keys)?;
    // The new marker exists before the old file moves: a crash from here on leaves either the
    // old file active with its own marker, or the new log with its marker.
    let marker = marker::create(&path, &chain, format_time(SystemTime::now()))?;
    let anchor = match found {
        Some(found) => Some(move_aside(&path, found)?),
        None => None,
    };
    let line = chain.start(format_time(SystemTime::now()), anchor)?;
    let file = open_new(&path)?;
    let (forward, forward_task) = forward.unzip();
    let mut w = FileWriter {
        cfg: cfg.clone(),
        path: path.clone(),
        marker,
        file: Arc::new(file),
        bytes: 0,
        opened: Instant::now(),
        records_in_file: 0,
        since_checkpoint: 0,
        last_checkpoint: Instant::now(),
        dirty: false,
        records,
        chain,
        pending: Vec::new(),
        pending_records: 0,
        flushed: 0,
        clock: Clock::default(),
        forward,
    };
    w.write_line(line).await;
    w.sync().await;
    // The start record now says how the previous log ended: its marker has done its work.
    marker::remove_others(&path, &w.marker);
    let (tx, rx) = mpsc::channel(cfg.queue_capacity);
    let task = tokio::spawn(run(w, rx, depth.clone()));
    Ok((
        AuditSink {
            tx: tx.clone(),
            depth,
        },
        AuditHandle {
            tx,
            task,
            forward_task,
            path,
        },
    ))
}

/// How the existing log file ended, if there is one with records. An empty file (a crash
/// between its creation and its first record) is removed.
fn existing(path: &Path, keys: &KeySet) -> Result<Option<Anchor>, AuditError> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => Ok(Some(examine(path, keys))),
        Ok(_) => {
            std::fs::remove_file(path).map_err(|e| AuditError::io(path, e))?;
            Ok(None)
        }
        Err(_) => Ok(None),
    }
}

/// Verifies the end of the file the new log continues from ([`verify_tail`]) and, when it has
/// no closing checkpoint, whether its writer crashed (its open marker is still there).
fn examine(path: &Path, keys: &KeySet) -> Anchor {
    match verify_tail(path, keys) {
        Ok(t) => {
            let end = if t.closed {
                PrevEnd::Closed
            } else if marker::vouches(path, &t.log, keys) {
                PrevEnd::Crashed
            } else {
                PrevEnd::Unclosed
            };
            match end {
                PrevEnd::Crashed => {
                    tracing::warn!(file = %path.display(), last_seq = t.seq, last_signed = t.signed, "audit: the previous log was not closed (pgveil crashed or was killed); the new log's start record says so")
                }
                PrevEnd::Unclosed => {
                    tracing::error!(file = %path.display(), last_seq = t.seq, "audit: the previous log ends without its closing checkpoint although it was closed: its end was cut; the new log's start record says so and `pgveil audit verify` will fail on it")
                }
                _ => {}
            }
            Anchor {
                log: Some(t.log),
                head: Some((t.seq, t.tag)),
                file: None,
                end: Some(end),
                signed: Some(t.signed),
            }
        }
        Err(why) => {
            tracing::error!(file = %path.display(), error = %why, "audit: the end of the previous log does not verify; the new log's start record says so");
            let last = last_anchor(path);
            Anchor {
                end: Some(PrevEnd::Unverified),
                ..last
            }
        }
    }
}

/// Renames the existing file aside; the anchor then names it.
fn move_aside(path: &Path, mut found: Anchor) -> Result<Anchor, AuditError> {
    let moved = rotated_name(path);
    std::fs::rename(path, &moved).map_err(|e| AuditError::io(path, e))?;
    tracing::info!(from = %path.display(), to = %moved.display(), "audit: previous log moved aside");
    found.file = moved.file_name().map(|n| n.to_string_lossy().into_owned());
    Ok(found)
}

fn open_new(path: &Path) -> Result<File, AuditError> {
    let mut o = OpenOptions::new();
    o.create_new(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path).map_err(|e| AuditError::io(path, e))
}

/// `audit.jsonl` → `audit.jsonl.20250601T080000.123456Z` (unique in its directory).
fn rotated_name(path: &Path) -> PathBuf {
    let stamp: String = format_time(SystemTime::now())
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audit".into());
    let mut candidate = path.with_file_name(format!("{name}.{stamp}"));
    let mut i = 1;
    while candidate.exists() {
        candidate = path.with_file_name(format!("{name}.{stamp}-{i}"));
        i += 1;
    }
    candidate
}

/// For a file whose end does not verify: the log id (from its first record) and the seq and tag
/// of its last record that parses, unverified (so that `verify` can still place it).
fn last_anchor(path: &Path) -> Anchor {
    let Ok(f) = File::open(path) else {
        return Anchor::default();
    };
    let mut log = None;
    let mut last: Option<Record> = None;
    for line in std::io::BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        if let Ok(r) = serde_json::from_str::<Record>(&line) {
            if r.log.is_some() {
                log = r.log.clone();
            }
            last = Some(r);
        }
    }
    Anchor {
        log,
        head: last.and_then(|r| Some((r.seq, r.tag?))),
        ..Anchor::default()
    }
}

struct FileWriter {
    cfg: AuditConfig,
    path: PathBuf,
    /// This log's open marker, removed once the log is closed.
    marker: PathBuf,
    file: Arc<File>,
    bytes: u64,
    opened: Instant,
    records_in_file: u64,
    since_checkpoint: u64,
    last_checkpoint: Instant,
    dirty: bool,
    records: IntCounter,
    chain: ChainWriter,
    /// Lines sealed but not yet written (written at the end of each batch).
    pending: Vec<u8>,
    pending_records: u64,
    /// Bytes of the active file that reached the operating system.
    flushed: u64,
    clock: Clock,
    /// The syslog copy (`audit.syslog`): offered each batch once it is written.
    forward: Option<Forwarder>,
}

/// What a session queued: any record, or a statement record on the hot path.
enum Entry {
    Record(Box<Record>),
    Statement(StatementRecord),
}

enum Control {
    Continue,
    Stop,
}

async fn run(mut w: FileWriter, mut rx: mpsc::Receiver<Msg>, depth: IntGauge) {
    let period = Duration::from_millis(250);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sync = Instant::now();
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else {
                    w.close().await;
                    return;
                };
                if let Control::Stop = w.handle(msg, &depth).await {
                    return;
                }
                // Group commit: take what else is queued before syncing.
                let mut n = 0;
                while n < 512 {
                    match rx.try_recv() {
                        Ok(msg) => {
                            if let Control::Stop = w.handle(msg, &depth).await {
                                return;
                            }
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                w.write_pending().await;
                if w.cfg.fsync == FsyncPolicy::Always && w.dirty {
                    w.sync().await;
                    last_sync = Instant::now();
                }
            }
            _ = tick.tick() => {
                w.write_pending().await;
                if w.cfg.fsync == FsyncPolicy::Interval && w.dirty
                    && last_sync.elapsed() + period >= Duration::from_secs(1)
                {
                    w.sync().await;
                    last_sync = Instant::now();
                }
                w.on_tick().await;
            }
        }
    }
}

impl FileWriter {
    async fn handle(&mut self, msg: Msg, depth: &IntGauge) -> Control {
        match msg {
            Msg::Record(r) => {
                depth.dec();
                self.append(Entry::Record(r)).await;
                Control::Continue
            }
            Msg::Statement(r) => {
                depth.dec();
                self.append(Entry::Statement(r)).await;
                Control::Continue
            }
            Msg::Flush(done) => {
                self.sync().await;
                let _ = done.send(());
                Control::Continue
            }
            Msg::Close(done) => {
                self.close().await;
                let _ = done.send(());
                Control::Stop
            }
        }
    }

    async fn append(&mut self, r: Entry) {
        if self.bytes >= self.cfg.max_bytes
            || (self.records_in_file > 0 && self.opened.elapsed() >= self.cfg.max_age)
        {
            self.rotate().await;
        }
        if let Some(d) = self.cfg.write_delay {
            tokio::time::sleep(d).await;
        }
        match r {
            Entry::Record(r) => self.seal_and_write(*r).await,
            Entry::Statement(r) => {
                let start = self.pending.len();
                self.chain
                    .seal_statement(&r, &mut self.clock, &mut self.pending);
                self.pending.push(b'\n');
                self.line_added(self.pending.len() - start).await;
            }
        }
        self.records_in_file += 1;
        self.since_checkpoint += 1;
        if self.since_checkpoint >= self.cfg.checkpoint_every {
            self.checkpoint(false).await;
        }
    }

    async fn on_tick(&mut self) {
        if self.since_checkpoint > 0
            && self.last_checkpoint.elapsed() >= self.cfg.checkpoint_interval
        {
            self.checkpoint(false).await;
        }
        if self.records_in_file > 0 && self.opened.elapsed() >= self.cfg.max_age {
            self.rotate().await;
        }
    }

    async fn seal_and_write(&mut self, r: Record) {
        match self.chain.seal(r) {
            Ok(line) => self.write_line(line).await,
            // Serializing a record of strings and numbers cannot fail; if it ever did, say so.
            Err(e) => tracing::error!(error = %e, "audit: cannot serialize a record"),
        }
    }

    async fn checkpoint(&mut self, closing: bool) {
        match self
            .chain
            .checkpoint(format_time(SystemTime::now()), closing)
        {
            Ok(line) => self.write_line(line).await,
            Err(e) => tracing::error!(error = %e, "audit: cannot serialize a checkpoint"),
        }
        self.since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
    }

    /// Appends one line to the batch being written (one write per batch of queued records, not
    /// one per record); a batch that grows past 256 KiB is written at once.
    async fn write_line(&mut self, line: String) {
        self.pending.extend_from_slice(line.as_bytes());
        self.pending.push(b'\n');
        self.line_added(line.len() + 1).await;
    }

    /// Counts a line of `len` bytes (newline included) just added to the batch.
    async fn line_added(&mut self, len: usize) {
        self.pending_records += 1;
        self.bytes += len as u64;
        self.dirty = true;
        if self.pending.len() >= 256 * 1024 {
            self.write_pending().await;
        }
    }

    /// Writes the batch; on error, cuts the file back to what was written and retries with
    /// backoff, forever (sessions wait while the queue is full; nothing is dropped).
    async fn write_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            match (&*self.file).write_all(&self.pending) {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(file = %self.path.display(), error = %e, retry_in = ?backoff, "audit: write failed; retrying (sessions wait while the queue is full)");
                    let _ = self.file.set_len(self.flushed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.flushed += self.pending.len() as u64;
        if let Some(f) = &self.forward {
            f.offer(&self.pending);
        }
        self.pending.clear();
        self.records.inc_by(self.pending_records);
        self.pending_records = 0;
    }

    async fn sync(&mut self) {
        self.write_pending().await;
        if !self.dirty {
            return;
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            let f = self.file.clone();
            let r = tokio::task::spawn_blocking(move || f.sync_data()).await;
            match r {
                Ok(Ok(())) => break,
                Ok(Err(e)) => {
                    tracing::error!(file = %self.path.display(), error = %e, "audit: fsync failed; retrying");
                }
                Err(e) => tracing::error!(error = %e, "audit: fsync task failed; retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        self.dirty = false;
    }

    async fn rotate(&mut self) {
        self.sync().await;
        let moved = rotated_name(&self.path);
        let mut backoff = Duration::from_millis(50);
        let file = loop {
            let r = std::fs::rename(&self.path, &moved)
                .map_err(|e| AuditError::io(&self.path, e))
                .and_then(|()| open_new(&self.path));
            match r {
                Ok(f) => break f,
                Err(e) => {
                    // If the rename went through but the open did not, the next try renames
                    // nothing: put the old file back first.
                    if !self.path.exists() && moved.exists() {
                        let _ = std::fs::rename(&moved, &self.path);
                    }
                    tracing::error!(error = %e, "audit: rotation failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        self.file = Arc::new(file);
        self.bytes = 0;
        self.flushed = 0;
        self.opened = Instant::now();
        self.records_in_file = 0;
        let name = moved
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match self.chain.rotation(format_time(SystemTime::now()), name) {
            Ok(line) => self.write_line(line).await,
            Err(e) => tracing::error!(error = %e, "audit: cannot serialize a rotation record"),
        }
        tracing::info!(previous = %moved.display(), "audit: log rotated");
    }

    async fn close(&mut self) {
        self.checkpoint(true).await;
        self.sync().await;
        // Only now: a crash before the closing checkpoint is on disk must leave the marker.
        marker::remove(&self.marker);
    }
}
