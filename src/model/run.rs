//! One-off runs as stored: a run (a command in a container of a release's image), its
//! status, what started it, the command as a validated type, and the lines it wrote.
//! Invariant: a `RunCommand` is never empty, its program is named, and no argument holds
//! a NUL byte or exceeds the bounds, so whatever is stored can be handed to the engine as
//! an argument array (never to a shell of Cantila's own).

use serde::Serialize;

use crate::{error::Error, live};

/// Where a run is in its life. `pending` (created, not started: an interactive run waits
/// for its terminal) → `running` → one of the final statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Pending,
    Running,
    /// Exited 0.
    Succeeded,
    /// Exited non-zero, or could not start (the run's `error` says why).
    Failed,
    Canceled,
    /// Killed when its timeout ran out.
    TimedOut,
    /// The daemon stopped while it ran; its container was removed at the next start.
    Interrupted,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Canceled,
        RunStatus::TimedOut,
        RunStatus::Interrupted,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Canceled => "canceled",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
    }

    /// Whether the run is over: anything but `pending` and `running`.
    pub const fn is_final(self) -> bool {
        match self {
            RunStatus::Pending | RunStatus::Running => false,
            RunStatus::Succeeded
            | RunStatus::Failed
            | RunStatus::Canceled
            | RunStatus::TimedOut
            | RunStatus::Interrupted => true,
        }
    }
}

/// What started a run: someone through the API or CLI, or a scheduled job's firing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunTrigger {
    Manual,
    Job { job_id: String },
}

impl RunTrigger {
    /// The stored and shown word: `manual` or `job`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RunTrigger::Manual => "manual",
            RunTrigger::Job { .. } => "job",
        }
    }

    pub fn job_id(&self) -> Option<&str> {
        match self {
            RunTrigger::Manual => None,
            RunTrigger::Job { job_id } => Some(job_id),
        }
    }

    /// The trigger as stored: its word and the job id.
    pub fn from_stored(word: &str, job_id: Option<String>) -> Self {
        match (word, job_id) {
            ("job", Some(job_id)) => RunTrigger::Job { job_id },
            _ => RunTrigger::Manual,
        }
    }
}

/// A command to run: the program and its arguments, exactly as the engine receives them.
/// Invariant: 1..=`MAX_ARGS` arguments, the first not empty, each without NUL bytes and
/// at most `MAX_ARG_BYTES` long, `MAX_TOTAL_BYTES` in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCommand(Vec<String>);

impl RunCommand {
    pub const MAX_ARGS: usize = 1024;
    pub const MAX_ARG_BYTES: usize = 64 * 1024;
    pub const MAX_TOTAL_BYTES: usize = 256 * 1024;

    /// Checks a command given as `field` (named in the error).
    pub fn parse(field: &str, args: Vec<String>) -> Result<Self, Error> {
        let invalid = |why: String| Error::Invalid(format!("`{field}` {why}"));
        match args.first() {
            None => {
                return Err(invalid(
                    "is empty; give the program and its arguments as an array of strings, e.g. [\"python\", \"manage.py\", \"migrate\"]"
                        .to_owned(),
                ))
            }
            Some(program) if program.trim().is_empty() => {
                return Err(invalid(
                    "starts with an empty program name; its first element is the program to run"
                        .to_owned(),
                ))
            }
            Some(_) => {}
        }
        if args.len() > Self::MAX_ARGS {
            return Err(invalid(format!(
                "has {} arguments; at most {} are accepted",
                args.len(),
                Self::MAX_ARGS
            )));
        }
        if let Some(index) = args.iter().position(|arg| arg.contains('\0')) {
            return Err(invalid(format!(
                "argument {index} contains a NUL character, which no program can receive"
            )));
        }
        if let Some(index) = args.iter().position(|arg| arg.len() > Self::MAX_ARG_BYTES) {
            return Err(invalid(format!(
                "argument {index} is longer than {} bytes",
                Self::MAX_ARG_BYTES
            )));
        }
        let total: usize = args.iter().map(String::len).sum();
        if total > Self::MAX_TOTAL_BYTES {
            return Err(invalid(format!(
                "is {total} bytes long; at most {} bytes are accepted",
                Self::MAX_TOTAL_BYTES
            )));
        }
        Ok(Self(args))
    }

    /// A command read back from the store, which only ever holds parsed ones.
    pub fn from_stored(args: Vec<String>) -> Self {
        Self(args)
    }

    pub fn args(&self) -> &[String] {
        &self.0
    }

    pub fn into_args(self) -> Vec<String> {
        self.0
    }

    /// The command for people (audit log, CLI): arguments joined by spaces, those with
    /// spaces, quotes or nothing in them quoted as JSON strings so the boundaries show.
    pub fn display(&self) -> String {
        self.0
            .iter()
            .map(|arg| {
                let plain = !arg.is_empty()
                    && arg
                        .chars()
                        .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '\'');
                if plain {
                    arg.clone()
                } else {
                    serde_json::Value::String(arg.clone()).to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One run as stored.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: String,
    pub account_id: String,
    pub project_id: String,
    /// The deploy whose image (and env snapshot) the run uses.
    pub deploy_id: String,
    pub command: RunCommand,
    pub status: RunStatus,
    pub exit_code: Option<i64>,
    /// Why a run failed without an exit code of its own (it could not start), or what
    /// ended it (`canceled`, `timed out after 60 s`, `interrupted`).
    pub error: Option<String>,
    pub trigger: RunTrigger,
    /// Who started it, as the audit log names actors (a token id, `admin-cli`, a job).
    pub started_by: String,
    /// The size tier it runs at.
    pub size: String,
    pub timeout_secs: u64,
    /// Started with a TTY and open stdin, once a terminal attaches.
    pub interactive: bool,
    /// The engine's id of its container, while there is one.
    pub container_id: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<i64>,
}

/// Which output of its container a line of a run came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStream {
    Stdout,
    Stderr,
}

impl RunStream {
    pub const fn as_str(self) -> &'static str {
        match self {
            RunStream::Stdout => "stdout",
            RunStream::Stderr => "stderr",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [RunStream::Stdout, RunStream::Stderr]
            .into_iter()
            .find(|stream| stream.as_str() == value)
    }
}

/// One stored line a run wrote. `seq` counts from 1 per run; lines pruned by the output
/// cap leave a gap at the start, never in the middle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLine {
    pub seq: i64,
    pub at: String,
    pub stream: RunStream,
    pub line: String,
}

impl live::Sequenced for RunLine {
    fn seq(&self) -> i64 {
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn commands_are_checked_and_the_error_names_the_field() {
        let check = |input: Vec<String>, ok: bool, message: &str| {
            let result = RunCommand::parse("command", input.clone());
            assert_eq!(result.is_ok(), ok, "{input:?}: {result:?}");
            if let Err(err) = result {
                let text = err.to_string();
                assert!(text.starts_with("`command`"), "{text}");
                assert!(text.contains(message), "{text}");
            }
        };
        check(args(&["python", "manage.py", "migrate"]), true, "");
        check(args(&["sh", "-c", ""]), true, "");
        check(Vec::new(), false, "is empty");
        check(args(&[""]), false, "empty program");
        check(args(&["  "]), false, "empty program");
        check(args(&["sh", "a\0b"]), false, "argument 1 contains a NUL");
        check(
            vec!["x".to_owned(); RunCommand::MAX_ARGS + 1],
            false,
            "at most 1024",
        );
        check(
            vec!["x".repeat(RunCommand::MAX_ARG_BYTES + 1)],
            false,
            "argument 0 is longer",
        );
        check(
            vec!["x".repeat(RunCommand::MAX_ARG_BYTES); 5],
            false,
            "bytes long",
        );
    }

    #[test]
    fn a_command_reads_with_its_argument_boundaries() {
        let command = RunCommand::parse(
            "command",
            args(&["sh", "-c", "echo $DATABASE_URL; exit 3", ""]),
        )
        .unwrap();
        assert_eq!(
            command.display(),
            r#"sh -c "echo $DATABASE_URL; exit 3" """#
        );
    }

    #[test]
    fn statuses_and_triggers_round_trip() {
        for status in RunStatus::ALL {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(RunStatus::parse("done"), None);
        assert!(!RunStatus::Pending.is_final() && !RunStatus::Running.is_final());
        assert!(RunStatus::Interrupted.is_final() && RunStatus::TimedOut.is_final());
        let job = RunTrigger::Job {
            job_id: "job_a".to_owned(),
        };
        assert_eq!(
            RunTrigger::from_stored(job.as_str(), job.job_id().map(str::to_owned)),
            job
        );
        assert_eq!(RunTrigger::from_stored("manual", None), RunTrigger::Manual);
        for stream in [RunStream::Stdout, RunStream::Stderr] {
            assert_eq!(RunStream::parse(stream.as_str()), Some(stream));
        }
    }
}
