//! CLI errors: one line of what went wrong plus an optional hint, and the exit code
//! (2 = the command line or config was wrong, 1 = the work itself failed, 128 + the signal number
//! when a signal stopped it: 130 = Ctrl-C, 143 = SIGTERM, 129 = SIGHUP).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Usage,
    Runtime,
    /// Stopped by this signal after saving its state (exit code 128 + the signal, the shell
    /// convention: 130 for Ctrl-C).
    Interrupted(i32),
}

#[derive(Debug)]
pub struct CliError {
    pub kind: Kind,
    pub msg: String,
    pub hint: Option<String>,
}

pub type CliResult<T> = std::result::Result<T, CliError>;

impl CliError {
    pub fn usage(msg: impl Into<String>) -> Self {
        CliError { kind: Kind::Usage, msg: msg.into(), hint: None }
    }
    pub fn runtime(msg: impl Into<String>) -> Self {
        CliError { kind: Kind::Runtime, msg: msg.into(), hint: None }
    }
    pub fn interrupted(signal: i32, msg: impl Into<String>) -> Self {
        CliError { kind: Kind::Interrupted(signal), msg: msg.into(), hint: None }
    }
    pub fn hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            Kind::Usage => 2,
            Kind::Runtime => 1,
            Kind::Interrupted(signal) => 128 + signal,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl From<spark_engine::Error> for CliError {
    fn from(e: spark_engine::Error) -> Self {
        let hint = match &e {
            spark_engine::Error::DeviceUnavailable { .. } => Some("run with --device cpu".to_string()),
            _ => None,
        };
        CliError { kind: Kind::Runtime, msg: e.to_string(), hint }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::runtime(e.to_string())
    }
}

/// Adds context to io errors: "cannot write runs/x/metrics.jsonl: Permission denied".
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> CliResult<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> CliResult<T> {
        self.map_err(|e| CliError::runtime(format!("{}: {e}", what())))
    }
}
