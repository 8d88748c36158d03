//! The agent's configuration: command-line flags (each with a `JSAGENT_*` environment variable)
//! over the TOML file of DESIGN §9, resolved once into a validated [`Config`].
//!
//! Precedence, highest first: flag, its environment variable, the config file, the default.
//! The token comes from `token_file` (flag, env or file) or else from `JSAGENT_TOKEN`.

use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use reqwest::Url;
use serde::Deserialize;

use crate::link::tls::{Trust, TrustError};

pub mod jobs;

pub use jobs::ConfigJob;

/// Default `max_file_size`: 100 MB.
pub(crate) const DEFAULT_MAX_FILE_SIZE: u64 = 100 * 1024 * 1024;

/// The bounds of the count and size keys; a value outside stops the agent at start with an
/// error naming the key. 0 made no sense where it is refused (a log store rotated after every
/// write, one upload per log message, every file refused); the upper bounds are far beyond
/// any real setting and keep clear of what fails (a `max_jobs` past `Semaphore::MAX_PERMITS`
/// panicked the supervisor).
const MAX_JOBS: RangeInclusive<usize> = 1..=10_000;
const LOG_DB_MAX_SIZE: RangeInclusive<u64> = (64 << 10)..=(1 << 40);
const LOG_DB_KEEP: RangeInclusive<u32> = 0..=10_000;
const LOG_BATCH_SIZE: RangeInclusive<usize> = 1..=100_000;
const OUTPUT_MAX_LINES: RangeInclusive<usize> = 1..=1_000_000_000;
const MAX_FILE_SIZE: RangeInclusive<u64> = 1..=(1 << 40);

/// Environment variable that may carry the token itself (a token file wins over it).
pub(crate) const TOKEN_ENV: &str = "JSAGENT_TOKEN";

const ABOUT: &str = "jsagent, the jsacc node agent: long-polls the controller for commands, \
runs them under its process manager and reports their results";

const AFTER_HELP: &str = "\
Every flag overrides the same key of the config file. The token may also be given directly in \
the JSAGENT_TOKEN environment variable (a token file wins if both are set).

Template variables in execute's cmd, args and workingdir: $agentroot = the data dir; \
$root = the install root, the parent of the directory holding the jsagent executable \
(/opt/jsagent for /opt/jsagent/bin/jsagent); $tmp = the system temporary directory.

Exit codes: 0 stopped by SIGTERM/SIGINT; 1 fatal error; 2 bad flags or configuration; \
75 restart requested by the `restart` command (the service manager should start it again).

Logging: JSAGENT_LOG (or RUST_LOG) filters the log on stderr (with --service: in \
<data_dir>/jsagent.log, kept with one older file jsagent.log.1); default info, e.g. \
JSAGENT_LOG=info,node_agent=debug.";

/// Raw command-line flags. Every one is optional here: [`Config::resolve`] decides what is missing.
#[derive(Debug, Default, Parser)]
#[command(
    name = "jsagent",
    version,
    about = ABOUT,
    after_help = AFTER_HELP,
    args_conflicts_with_subcommands = true
)]
pub struct Flags {
    /// Without one, the agent runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML config file: the settings of these flags (controller, gid, nid, roles, token_file,
    /// ca_cert, insecure_http, data_dir, max_jobs, output) and jumpscripts_dir, [interpreters]
    /// python and lua, stats_*, log_*, output_max_lines and max_file_size settings, and [[job]]
    /// tables: jobs the agent starts itself (ids cfg:<gid>:<nid>:<id>; a bad table stops it at
    /// start, exit code 2). Unknown keys are an error.
    #[arg(short = 'c', long, env = "JSAGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Base URL of the controller, e.g. https://127.0.0.1:4000 (https needs --ca-cert).
    #[arg(long, env = "JSAGENT_CONTROLLER", value_name = "URL")]
    pub controller: Option<String>,
    /// Grid id of this agent (integer >= 0).
    #[arg(long, env = "JSAGENT_GID", value_name = "N")]
    pub gid: Option<u64>,
    /// Node id of this agent, unique within its grid (integer >= 0).
    #[arg(long, env = "JSAGENT_NID", value_name = "N")]
    pub nid: Option<u64>,
    /// File holding this agent's bearer token (from `jsacc token add --gid G --nid N`).
    #[arg(long, env = "JSAGENT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM file with the controller's certificate or the CA that signed it; the only roots trusted.
    /// A certificate given here is trusted as it is, even one marked as a CA (as `openssl req
    /// -x509` makes them).
    #[arg(long, env = "JSAGENT_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Allow a plain http:// controller URL on a host other than this machine (127.0.0.0/8, ::1,
    /// localhost). The agent's token and every command and result then cross the network in
    /// clear: for tests, or inside a tunnel that encrypts. Config key `insecure_http = true`.
    #[arg(long, env = "JSAGENT_INSECURE_HTTP")]
    pub insecure_http: bool,
    /// Directory for the agent's database and temporary scripts; the `$agentroot` of commands
    /// [default: ./jsagent-data].
    #[arg(long, env = "JSAGENT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Roles of this agent, comma-separated (commands may target a role instead of a node).
    #[arg(
        long,
        env = "JSAGENT_ROLES",
        value_name = "ROLE,...",
        value_delimiter = ','
    )]
    pub roles: Option<Vec<String>>,
    /// Most processes run at once (1 to 10000); further jobs wait for a free slot [default: 16].
    #[arg(long, env = "JSAGENT_MAX_JOBS", value_name = "N")]
    pub max_jobs: Option<usize>,
    /// Live output: forward every line a job prints to the controller (Redis stream
    /// `output:<id>`) within about 200 ms; `false` turns it off for every job (a job turns it
    /// off for itself with `args.output: false`). Config key `output` [default: true].
    #[arg(long, env = "JSAGENT_OUTPUT", value_name = "BOOL")]
    pub output: Option<bool>,
    /// Windows: run as a service of the Service Control Manager (what
    /// deploy/windows/install-jsagent.ps1 registers). A stop or a system shutdown stops the agent
    /// as SIGTERM does; the exit code becomes the service's (75 lets the recovery actions
    /// restart it); the log goes to <data_dir>/jsagent.log.
    #[arg(long)]
    pub service: bool,
}

/// What `jsagent` does instead of running the agent.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Enroll this machine: trade a code from `jsacc enroll create` for its identity and token,
    /// and write <data-dir>/agent.toml (with token and controller.pem) for `jsagent -c`.
    #[command(after_help = crate::enroll::EXAMPLES)]
    Enroll(crate::enroll::EnrollFlags),
}

/// The config file as written. Durations are seconds, sizes bytes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    controller: Option<String>,
    gid: Option<u64>,
    nid: Option<u64>,
    roles: Option<Vec<String>>,
    token_file: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
    insecure_http: Option<bool>,
    data_dir: Option<PathBuf>,
    jumpscripts_dir: Option<PathBuf>,
    max_jobs: Option<usize>,
    restart_backoff_max: Option<f64>,
    stats_interval: Option<f64>,
    stats_flush_interval: Option<f64>,
    statsd_listen: Option<String>,
    log_db_max_size: Option<u64>,
    log_db_keep: Option<u32>,
    loglevels_db: Option<String>,
    loglevels_ac: Option<String>,
    log_batch_size: Option<usize>,
    log_flush_interval: Option<f64>,
    output: Option<bool>,
    output_max_lines: Option<usize>,
    max_file_size: Option<u64>,
    #[serde(default)]
    interpreters: FileInterpreters,
    /// `[[job]]` tables: jobs the agent starts itself ([`jobs`]).
    #[serde(default)]
    job: Vec<toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileInterpreters {
    python: Option<String>,
    lua: Option<String>,
}

/// The bearer token. Its `Debug` never shows it, so a logged config cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub(crate) fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Interpreters of `execute_js_py` and `execute_js_lua`: a full path or a name on PATH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreters {
    pub(crate) python: String,
    pub(crate) lua: String,
}

/// The validated configuration the agent runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Base URL of the controller; its path ends with `/`.
    pub controller: Url,
    pub gid: u64,
    pub nid: u64,
    pub token: Token,
    /// Where the token came from (a file path or `JSAGENT_TOKEN`), for error messages.
    pub token_source: String,
    pub ca_cert: Option<PathBuf>,
    /// The certificates of `ca_cert`, read at start, for an https controller.
    pub trust: Option<Trust>,
    pub roles: Vec<String>,
    /// `$agentroot`: absolute.
    pub data_dir: PathBuf,
    /// `$root`: the install root (see [`install_root`]).
    pub install_root: PathBuf,
    pub jumpscripts_dir: PathBuf,
    pub max_jobs: usize,
    /// Longest wait before restarting a failed process (`max_restart`, long-running jobs); the
    /// wait starts at 1 s and doubles.
    pub restart_backoff_max: Duration,
    pub interpreters: Interpreters,
    // Read and checked now; used by the logger and stats issues.
    pub stats_interval: Duration,
    pub stats_flush_interval: Duration,
    pub statsd_listen: Option<SocketAddr>,
    pub log_db_max_size: u64,
    pub log_db_keep: u32,
    pub loglevels_db: String,
    pub loglevels_ac: String,
    pub log_batch_size: usize,
    pub log_flush_interval: Duration,
    /// Live output on (see [`crate::live`]).
    pub output: bool,
    /// Lines of live output forwarded per run of a job; then one marker line, and no more.
    pub output_max_lines: usize,
    /// Largest file `put_file` writes or `get_file` reads, in bytes.
    pub max_file_size: u64,
    /// The `[[job]]` tables, checked: jobs the agent starts at boot.
    pub jobs: Vec<ConfigJob>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("missing {what}: set {how}")]
    Missing {
        what: &'static str,
        how: &'static str,
    },
    #[error("cannot read token file {path}: {source}")]
    ReadToken {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {0} is empty")]
    EmptyToken(PathBuf),
    #[error("bad controller URL `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "refusing the plain-http controller URL `{0}`: the agent's token would cross the network \
         in clear; use https:// with --ca-cert (JSAGENT_CA_CERT, `ca_cert`), or for testing pass \
         --insecure-http (JSAGENT_INSECURE_HTTP, `insecure_http = true`)"
    )]
    PlainHttp(String),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads the config file named by the flags (if any), the token, and resolves everything.
    pub fn load(flags: Flags) -> Result<Config, ConfigError> {
        let file = match &flags.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let env_token = std::env::var(TOKEN_ENV).ok();
        Config::resolve(flags, file, env_token, install_root())
    }

    /// Merges flags over the file and validates. `env_token` is `JSAGENT_TOKEN`'s value.
    pub fn resolve(
        flags: Flags,
        file: FileConfig,
        env_token: Option<String>,
        install_root: PathBuf,
    ) -> Result<Config, ConfigError> {
        let controller = flags
            .controller
            .or(file.controller)
            .ok_or(ConfigError::Missing {
                what: "controller URL",
                how: "--controller, JSAGENT_CONTROLLER or `controller` in the config file",
            })?;
        let controller = parse_url(&controller)?;
        let insecure_http = flags.insecure_http || file.insecure_http.unwrap_or(false);
        if controller.scheme() == "http" && !insecure_http && !is_loopback(&controller) {
            return Err(ConfigError::PlainHttp(controller.to_string()));
        }
        let gid = flags.gid.or(file.gid).ok_or(ConfigError::Missing {
            what: "grid id",
            how: "--gid, JSAGENT_GID or `gid` in the config file",
        })?;
        let nid = flags.nid.or(file.nid).ok_or(ConfigError::Missing {
            what: "node id",
            how: "--nid, JSAGENT_NID or `nid` in the config file",
        })?;
        let (token, token_source) = read_token(flags.token_file.or(file.token_file), env_token)?;
        let ca_cert = flags.ca_cert.or(file.ca_cert);
        if controller.scheme() == "https" && ca_cert.is_none() {
            return Err(ConfigError::Missing {
                what: "CA certificate for the https controller",
                how: "--ca-cert, JSAGENT_CA_CERT or `ca_cert` in the config file",
            });
        }
        let trust = match &ca_cert {
            Some(path) if controller.scheme() == "https" => Some(Trust::load(path)?),
            _ => None,
        };
        let data_dir = absolute(
            flags
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| "jsagent-data".into()),
        )?;
        let jumpscripts_dir = absolute(
            file.jumpscripts_dir
                .unwrap_or_else(|| data_dir.join("jumpscripts")),
        )?;
        let max_jobs = flags.max_jobs.or(file.max_jobs);
        let max_jobs = within("max_jobs (--max-jobs)", max_jobs, 16, MAX_JOBS, "")?;
        let output_max_lines = within(
            "output_max_lines",
            file.output_max_lines,
            10_000,
            OUTPUT_MAX_LINES,
            " (`output = false` turns live output off)",
        )?;
        let log_db_max_size = within(
            "log_db_max_size",
            file.log_db_max_size,
            100_000_000,
            LOG_DB_MAX_SIZE,
            " bytes",
        )?;
        let log_db_keep = within("log_db_keep", file.log_db_keep, 5, LOG_DB_KEEP, "")?;
        let log_batch_size = within(
            "log_batch_size",
            file.log_batch_size,
            1000,
            LOG_BATCH_SIZE,
            "",
        )?;
        let max_file_size = within(
            "max_file_size",
            file.max_file_size,
            DEFAULT_MAX_FILE_SIZE,
            MAX_FILE_SIZE,
            " bytes",
        )?;
        let statsd_listen = file
            .statsd_listen
            .map(|s| {
                s.parse()
                    .map_err(|e| ConfigError::Invalid(format!("statsd_listen `{s}`: {e}")))
            })
            .transpose()?;
        let jobs = jobs::parse(&file.job, gid, nid).map_err(ConfigError::Invalid)?;
        Ok(Config {
            controller,
            gid,
            nid,
            token,
            token_source,
            ca_cert,
            trust,
            roles: roles(flags.roles.or(file.roles)),
            data_dir,
            install_root,
            jumpscripts_dir,
            max_jobs,
            restart_backoff_max: seconds("restart_backoff_max", file.restart_backoff_max, 300.0)?,
            interpreters: Interpreters {
                python: file.interpreters.python.unwrap_or_else(|| "python3".into()),
                lua: file.interpreters.lua.unwrap_or_else(|| "lua5.4".into()),
            },
            stats_interval: seconds("stats_interval", file.stats_interval, 30.0)?,
            stats_flush_interval: seconds("stats_flush_interval", file.stats_flush_interval, 10.0)?,
            statsd_listen,
            log_db_max_size,
            log_db_keep,
            loglevels_db: file.loglevels_db.unwrap_or_else(|| "*".into()),
            loglevels_ac: file.loglevels_ac.unwrap_or_else(|| "7,8,9".into()),
            log_batch_size,
            log_flush_interval: seconds("log_flush_interval", file.log_flush_interval, 5.0)?,
            output: flags.output.or(file.output).unwrap_or(true),
            output_max_lines,
            max_file_size,
            jobs,
        })
    }
}

/// Roles without surrounding blanks or empty entries (`--roles ""` means none).
fn roles(raw: Option<Vec<String>>) -> Vec<String> {
    let roles = raw.unwrap_or_default().into_iter();
    roles
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect()
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    parse_file(path, &text)
}

/// Parses the text of a config file; `path` only names it in errors.
pub(crate) fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
}

pub(crate) fn parse_url(raw: &str) -> Result<Url, ConfigError> {
    let bad = |reason: &str| ConfigError::BadUrl {
        url: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be https or http"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("give only scheme, host, port and an optional path"));
    }
    // A base path must end in `/`, or joining `v1/...` onto it would replace its last segment.
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Whether a URL's host is this machine: `localhost`, 127.0.0.0/8 or ::1 (also IPv4-mapped).
pub(crate) fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // The URL parser wrote IPv6 hosts in brackets and IPv4 ones in dotted decimal.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => host
            .strip_suffix('.')
            .unwrap_or(host)
            .eq_ignore_ascii_case("localhost"),
    }
}

fn read_token(
    file: Option<PathBuf>,
    env_token: Option<String>,
) -> Result<(Token, String), ConfigError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::ReadToken {
            path: path.clone(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ConfigError::EmptyToken(path));
        }
        return Ok((
            Token(token.to_owned()),
            format!("token file {}", path.display()),
        ));
    }
    match env_token.as_deref().map(str::trim) {
        Some(token) if !token.is_empty() => Ok((Token(token.to_owned()), TOKEN_ENV.to_owned())),
        _ => Err(ConfigError::Missing {
            what: "agent token",
            how: "--token-file, JSAGENT_TOKEN_FILE, `token_file` in the config file, or JSAGENT_TOKEN",
        }),
    }
}

/// A duration key: positive and at most `schemas::args::MAX_SECONDS` (10 years, as for a
/// command's arguments): a longer one overflowed the clock it is added to (a panic of the
/// stats flush or the process sampler, and a job without a result).
fn seconds(key: &str, value: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    let secs = value.unwrap_or(default);
    let max = schemas::args::MAX_SECONDS;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero() && d.as_secs_f64() <= max as f64)
        .ok_or_else(|| {
            ConfigError::Invalid(format!(
                "{key} must be a positive number of seconds, at most {max} (10 years), not {secs}"
            ))
        })
}

/// A count or size key (`key` names it, and its flag if it has one): `value`, or `default`,
/// within `range`; `note` follows the range in the error.
fn within<T: PartialOrd + Copy + fmt::Display>(
    key: &str,
    value: Option<T>,
    default: T,
    range: RangeInclusive<T>,
    note: &str,
) -> Result<T, ConfigError> {
    let value = value.unwrap_or(default);
    match range.contains(&value) {
        true => Ok(value),
        false => Err(ConfigError::Invalid(format!(
            "{key} must be {} to {}{note}, not {value}",
            range.start(),
            range.end()
        ))),
    }
}

fn absolute(path: PathBuf) -> Result<PathBuf, ConfigError> {
    std::path::absolute(&path)
        .map_err(|e| ConfigError::Invalid(format!("cannot make {} absolute: {e}", path.display())))
}

/// `$root`: the parent of the directory holding the running executable (`/opt/jsagent` for
/// `/opt/jsagent/bin/jsagent`); the executable's own directory when it has no parent.
pub(crate) fn install_root() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let bin_dir = exe.parent().unwrap_or(Path::new("."));
    bin_dir.parent().unwrap_or(bin_dir).to_owned()
}

#[cfg(test)]
mod tests;
