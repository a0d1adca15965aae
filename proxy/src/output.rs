//! What the commands print on standard output.
//!
//! Rust ignores SIGPIPE, so a write to a pipe whose reader has gone (`pgveil policy schema |
//! head -1`) fails with EPIPE, and `println!` turns that failure into a panic. The commands
//! print through [`out!`] and [`outln!`] instead: once the reader is gone, the rest of the
//! output is dropped quietly and the command ends as it would have (same exit status). Any
//! other write error (a full disk, say) is kept, and `main` reports it and exits 1.
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Set once a write failed: nothing more is written.
static CLOSED: AtomicBool = AtomicBool::new(false);
/// The first write error other than EPIPE.
static FAILED: OnceLock<String> = OnceLock::new();

/// Write to standard output; see the module documentation for what happens on errors.
pub fn write(args: std::fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let result = std::io::stdout().lock().write_fmt(args);
    if let Err(e) = result {
        failed(e);
    }
}

/// Flush what is buffered (a last line without a newline); errors as for [`write`].
pub fn flush() {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = std::io::stdout().lock().flush() {
        failed(e);
    }
}

fn failed(e: std::io::Error) {
    CLOSED.store(true, Ordering::Relaxed);
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        let _ = FAILED.set(e.to_string());
    }
}

/// A write to standard output that failed for a reason other than the reader going away.
pub fn failure() -> Option<&'static str> {
    FAILED.get().map(String::as_str)
}

/// `print!` that does not panic when standard output is closed.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}

/// `println!` that does not panic when standard output is closed.
macro_rules! outln {
    () => {
        $crate::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};
