//! `jsagent enroll CODE --controller URL --ca-fingerprint SHA256` (issue 14): trades a one-time
//! code from `jsacc enroll create` for this machine's identity and token, and writes what
//! `jsagent -c <data-dir>/agent.toml` runs with:
//!
//! - `controller.pem`: the certificate the controller served, accepted only when its SHA-256 is
//!   the fingerprint given ([`pin`]); the agent then trusts exactly it (`ca_cert`);
//! - `token` (mode 0600) and `agent.toml` (0600, written last: its presence means enrolled).
//!
//! With `--install-service` the agent is also registered with the system's service manager
//! ([`service`]: systemd, or the Windows Service Control Manager) and started.
//!
//! Everything that can be checked here is checked before the code is sent (a code is spent by
//! its use): that the machine is not enrolled, that the data dir can be made (or is empty, or
//! already jsagent's) and written, and for `--install-service` that the service can be
//! installed ([`service::check`]).
//!
//! The code is a credential: besides the command line (which other users of the machine can
//! see in the process list) it is read from `$JSAGENT_ENROLL_CODE` or, given as `-`, from the
//! first line of stdin.

pub(crate) mod pin;
mod service;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use pin::{Fingerprint, Pinned, Seen};

/// How long the whole exchange with the controller may take.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read from the controller.
const MAX_ANSWER: usize = 64 << 10;

/// `jsagent enroll --help`'s examples.
pub const EXAMPLES: &str = "Examples:
  jsagent enroll jse_… --controller https://ctl.example:4000 --ca-fingerprint AB:CD:…:EF
  echo jse_… | jsagent enroll - --controller https://ctl.example:4000 --ca-fingerprint AB…EF
  JSAGENT_ENROLL_CODE=jse_… jsagent enroll --controller https://ctl.example:4000 --ca-fingerprint AB…EF
  sudo jsagent enroll jse_… --controller https://ctl.example:4000 --ca-fingerprint ABCD…EF --install-service
Then: jsagent -c /var/lib/jsagent/agent.toml (or the service runs it).";

/// `jsagent enroll`'s flags.
#[derive(Debug, Clone, clap::Args)]
pub struct EnrollFlags {
    /// The code `jsacc enroll create` printed (jse_…); `-` reads it from stdin. Without it, the
    /// code is read from $JSAGENT_ENROLL_CODE (the command line is visible to every user of
    /// the machine).
    #[arg(value_name = "CODE")]
    pub code: Option<String>,
    /// Base URL of the controller, e.g. https://ctl.example:4000.
    #[arg(long, value_name = "URL")]
    pub controller: String,
    /// SHA-256 fingerprint of the controller's certificate, as jsacc prints it at start
    /// (`AB:CD:…`; colons and case optional). Only that certificate is accepted, and it becomes
    /// the agent's ca_cert. Needed for https.
    #[arg(long, value_name = "SHA256")]
    pub ca_fingerprint: Option<String>,
    /// Directory for agent.toml, token, controller.pem and the agent's data
    /// [default: /var/lib/jsagent; on Windows %ProgramData%\jsagent].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The node id to ask for, when the code does not name one.
    #[arg(long, value_name = "N")]
    pub nid: Option<u64>,
    /// Allow a plain http:// controller URL on another machine (the token crosses the network
    /// in clear, and there is no certificate to check the fingerprint of).
    #[arg(long)]
    pub insecure_http: bool,
    /// Also register the agent with the service manager and start it: a systemd unit `jsagent`
    /// on Linux (needs root), the service `jsagent` on Windows (needs an administrator).
    #[arg(long)]
    pub install_service: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error("{0}")]
    Usage(String),
    #[error("already enrolled as {agent}; delete {dir} to enroll again")]
    Enrolled { agent: String, dir: String },
    #[error("the controller's certificate has fingerprint {got}, not {want}")]
    Fingerprint { got: String, want: String },
    #[error(
        "the controller's certificate (fingerprint as given) does not name `{0}`, the host of \
         the controller URL, so the agent would refuse it later: use a host name it lists"
    )]
    Name(String),
    #[error("cannot reach the controller at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the controller refused the enrollment: {0}")]
    Refused(String),
    #[error(
        "cannot write {path}: {source} (the enrollment code was not used: enroll again as a \
         user who may write there, e.g. with sudo, or with another --data-dir)"
    )]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("enrolled, but the service was not installed: {0}")]
    Service(String),
}

/// The environment variable the code is read from when it is not on the command line.
pub const CODE_ENV: &str = "JSAGENT_ENROLL_CODE";

/// What a data dir of jsagent may hold (its files and the agent's own): an existing data dir
/// holding anything else is not taken (nor restricted to its owner).
const DATA_DIR_ENTRIES: &[&str] = &[
    "agent.toml",
    "agent.toml.partial",
    "token",
    "controller.pem",
    "agent.db",
    "agent.db-wal",
    "agent.db-shm",
    "agent.db-journal",
    "tmp",
    "logs",
    "uploads",
    "jumpscripts",
    "jsagent.log",
    "jsagent.log.1",
    PROBE,
];

/// The file that tells the data dir is writable before the code is spent.
const PROBE: &str = ".jsagent-enroll-probe";

/// The body of `POST /v1/enroll`.
#[derive(Serialize)]
struct Ask<'a> {
    code: &'a str,
    hostname: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    nid: Option<u64>,
}

/// The controller's answer.
#[derive(Deserialize)]
struct Granted {
    gid: u64,
    nid: u64,
    roles: Vec<String>,
    token: String,
}

/// The written `agent.toml`.
#[derive(Serialize, Deserialize)]
struct Written {
    controller: String,
    gid: u64,
    nid: u64,
    roles: Vec<String>,
    token_file: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    insecure_http: Option<bool>,
    data_dir: PathBuf,
}

/// What an enrollment did, for the message `main` prints.
#[derive(Debug)]
pub struct Enrolled {
    pub agent: String,
    pub roles: Vec<String>,
    pub config: PathBuf,
    pub service: Option<String>,
}

/// `jsagent enroll`: enrolls, and prints what it did or why not. Exit code 0; 2 for bad flags
/// or a machine already enrolled; 1 otherwise.
pub fn main(flags: EnrollFlags) -> std::process::ExitCode {
    // reqwest's rustls has no default crypto provider; an error means one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| EnrollError::Usage(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| runtime.block_on(run(flags)));
    match outcome {
        Ok(done) => {
            let roles = match done.roles.is_empty() {
                true => "no roles".to_owned(),
                false => format!("roles {}", done.roles.join(",")),
            };
            println!("enrolled as agent {} with {roles}", done.agent);
            match done.service {
                Some(service) => println!("{service}"),
                None => println!("run it with: jsagent -c {}", done.config.display()),
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("jsagent enroll: {e}");
            let code = match e {
                EnrollError::Usage(_)
                | EnrollError::Enrolled { .. }
                | EnrollError::NotWritable { .. } => 2,
                _ => 1,
            };
            std::process::ExitCode::from(code)
        }
    }
}

/// Enrolls this machine (see the module docs).
pub async fn run(flags: EnrollFlags) -> Result<Enrolled, EnrollError> {
    let code = enroll_code(
        flags.code.as_deref(),
        std::env::var(CODE_ENV).ok(),
        read_stdin_line,
    )?;
    let dir = data_dir(flags.data_dir.clone())?;
    let config_path = dir.join("agent.toml");
    refuse_enrolled(&config_path, &dir)?;
    let url = controller_url(&flags)?;
    let pin = match (url.scheme(), &flags.ca_fingerprint) {
        ("https", Some(text)) => Some(Fingerprint::parse(text).map_err(EnrollError::Usage)?),
        ("https", None) => {
            return Err(EnrollError::Usage(
                "--ca-fingerprint is needed for an https controller: the fingerprint jsacc \
                 printed at start (\"certificate SHA-256 fingerprint AB:CD:…\")"
                    .into(),
            ))
        }
        _ => {
            if flags.ca_fingerprint.is_some() {
                tracing::warn!("plain http controller: there is no certificate, so --ca-fingerprint is not checked");
            }
            None
        }
    };
    // What can be checked is checked before the code is spent.
    let exe = match flags.install_service {
        true => Some(service::check(&config_path, &dir).map_err(|e| {
            EnrollError::Usage(format!(
                "--install-service: {e} (the enrollment code was not used)"
            ))
        })?),
        false => None,
    };
    prepare_dir(&dir)?;
    let (granted, cert) = ask(&url, pin, &code, flags.nid).await?;
    let agent = format!("{}:{}", granted.gid, granted.nid);
    write_files(&dir, &url, &granted, cert.as_deref(), flags.insecure_http)?;
    let service = match exe {
        Some(exe) => {
            Some(service::install(&exe, &config_path, &dir).map_err(EnrollError::Service)?)
        }
        None => None,
    };
    Ok(Enrolled {
        agent,
        roles: granted.roles,
        config: config_path,
        service,
    })
}

/// The code: the argument (`-`: the first line of stdin), else `env` ($JSAGENT_ENROLL_CODE).
fn enroll_code(
    arg: Option<&str>,
    env: Option<String>,
    stdin: impl FnOnce() -> std::io::Result<String>,
) -> Result<String, EnrollError> {
    let code = match arg {
        Some("-") => stdin()
            .map_err(|e| EnrollError::Usage(format!("cannot read the code from stdin: {e}")))?,
        Some(code) => code.to_owned(),
        None => env.unwrap_or_default(),
    };
    let code = code.trim();
    if code.is_empty() {
        return Err(EnrollError::Usage(format!(
            "no enrollment code: give it as the argument, as `-` to read it from stdin, or in \
             ${CODE_ENV}"
        )));
    }
    Ok(code.to_owned())
}

/// The first line of stdin.
fn read_stdin_line() -> std::io::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line)
}

/// Makes the data dir ready before the code is spent: a missing one is created (and only then
/// restricted to its owner); an existing one must be empty or hold only jsagent's files (it is
/// then restricted, when not empty); and a file must be writable in it.
fn prepare_dir(dir: &Path) -> Result<(), EnrollError> {
    let not_writable = |path: &Path| {
        let path = path.to_owned();
        move |source| EnrollError::NotWritable { path, source }
    };
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut names = Vec::new();
            for entry in entries {
                names.push(entry.map_err(not_writable(dir))?.file_name());
            }
            let foreign: Vec<String> = names
                .iter()
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|n| !DATA_DIR_ENTRIES.contains(&n.as_str()))
                .collect();
            if !foreign.is_empty() {
                return Err(EnrollError::Usage(format!(
                    "--data-dir {}: the directory exists and holds other things ({}): give a \
                     new or empty directory for jsagent alone (it keeps its token there, \
                     readable by its owner only)",
                    dir.display(),
                    foreign.join(", ")
                )));
            }
            if !names.is_empty() {
                crate::supervisor::platform::restrict_dir(dir).map_err(not_writable(dir))?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(not_writable(dir))?;
            crate::supervisor::platform::restrict_dir(dir).map_err(not_writable(dir))?;
        }
        Err(e) => return Err(not_writable(dir)(e)),
    }
    let probe = dir.join(PROBE);
    let _ = std::fs::remove_file(&probe);
    write_private(&probe, "").map_err(not_writable(&probe))?;
    std::fs::remove_file(&probe).map_err(not_writable(&probe))
}

/// The data dir: the flag's, else the platform's usual one; absolute.
fn data_dir(flag: Option<PathBuf>) -> Result<PathBuf, EnrollError> {
    let dir = flag.unwrap_or_else(default_data_dir);
    std::path::absolute(&dir)
        .map_err(|e| EnrollError::Usage(format!("--data-dir {}: {e}", dir.display())))
}

#[cfg(windows)]
fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("ProgramData").unwrap_or_else(|| r"C:\ProgramData".into());
    PathBuf::from(base).join("jsagent")
}

#[cfg(not(windows))]
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/jsagent")
}

/// Refuses to enroll over an existing `agent.toml`.
fn refuse_enrolled(config: &Path, dir: &Path) -> Result<(), EnrollError> {
    let Ok(text) = std::fs::read_to_string(config) else {
        return Ok(());
    };
    #[derive(Deserialize)]
    struct Ids {
        gid: Option<u64>,
        nid: Option<u64>,
    }
    let agent = match toml::from_str::<Ids>(&text) {
        Ok(Ids {
            gid: Some(g),
            nid: Some(n),
        }) => format!("{g}:{n}"),
        _ => format!("the agent of {}", config.display()),
    };
    Err(EnrollError::Enrolled {
        agent,
        dir: dir.display().to_string(),
    })
}

/// The controller URL, with the agent's rule for plain http.
fn controller_url(flags: &EnrollFlags) -> Result<Url, EnrollError> {
    let url = crate::config::parse_url(&flags.controller)
        .map_err(|e| EnrollError::Usage(e.to_string()))?;
    if url.scheme() == "http" && !flags.insecure_http && !crate::config::is_loopback(&url) {
        return Err(EnrollError::Usage(format!(
            "refusing the plain-http controller URL `{url}`: the code and the token would cross \
             the network in clear, and there is no certificate to check; use https:// with \
             --ca-fingerprint, or for testing pass --insecure-http"
        )));
    }
    Ok(url)
}

/// Posts the code; returns the grant and, over https, the pinned certificate the controller
/// served (DER).
async fn ask(
    url: &Url,
    pin: Option<Fingerprint>,
    code: &str,
    nid: Option<u64>,
) -> Result<(Granted, Option<Vec<u8>>), EnrollError> {
    // A redirect would carry the code to another server, unpinned.
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(Duration::from_secs(10));
    let mut seen = None;
    if let Some(pin) = pin {
        let (tls, s) = Pinned::client_config(pin).map_err(EnrollError::Usage)?;
        builder = builder.use_preconfigured_tls(tls);
        seen = Some((pin, s));
    }
    let client = builder
        .build()
        .map_err(|e| EnrollError::Usage(format!("cannot set up the HTTP client: {e}")))?;
    let endpoint = url
        .join("v1/enroll")
        .map_err(|e| EnrollError::Usage(format!("bad controller URL: {e}")))?;
    let body = Ask {
        code,
        hostname: hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        nid,
    };
    let sent = client.post(endpoint).json(&body).send().await;
    let cert = match &seen {
        Some((pin, s)) => match std::mem::take(&mut *s.lock().unwrap_or_else(|e| e.into_inner())) {
            Seen::Mismatch(got) => {
                return Err(EnrollError::Fingerprint {
                    got: got.to_string(),
                    want: pin.to_string(),
                })
            }
            Seen::WrongName(host) => return Err(EnrollError::Name(host)),
            Seen::Pinned(cert) => Some(cert),
            Seen::Nothing => None,
        },
        None => None,
    };
    let response = sent.map_err(|e| EnrollError::Unreachable {
        url: url.to_string(),
        reason: chain_text(&e),
    })?;
    let status = response.status();
    let bytes = read_bounded(response)
        .await
        .map_err(|e| EnrollError::Unreachable {
            url: url.to_string(),
            reason: chain_text(&e),
        })?;
    if !status.is_success() {
        return Err(EnrollError::Refused(refusal(status, &bytes)));
    }
    let granted: Granted = serde_json::from_slice(&bytes)
        .map_err(|e| EnrollError::Refused(format!("an answer that is not an enrollment ({e})")))?;
    if pin.is_some() && cert.is_none() {
        return Err(EnrollError::Usage(
            "no certificate seen from the controller".into(),
        ));
    }
    Ok((granted, cert))
}

/// The answer's body, up to [`MAX_ANSWER`] bytes (the rest is not read).
async fn read_bounded(mut response: reqwest::Response) -> reqwest::Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_ANSWER - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == MAX_ANSWER {
            break;
        }
    }
    Ok(body)
}

/// The controller's `message`, or what it answered.
fn refusal(status: reqwest::StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.message,
        Err(_) => format!("{status}: {}", String::from_utf8_lossy(body).trim()),
    }
}

/// An error with its causes, `a: b: c`.
fn chain_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// Writes controller.pem (https: the pinned certificate only), token and, last, agent.toml into
/// `dir` (made ready by [`prepare_dir`]).
fn write_files(
    dir: &Path,
    url: &Url,
    granted: &Granted,
    cert: Option<&[u8]>,
    insecure_http: bool,
) -> Result<(), EnrollError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| EnrollError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let ca_cert = match cert {
        Some(cert) => {
            let path = dir.join("controller.pem");
            std::fs::write(&path, pin::pem(cert)).map_err(io(&path))?;
            Some(path)
        }
        None => None,
    };
    let token_file = dir.join("token");
    write_private(&token_file, &granted.token).map_err(io(&token_file))?;
    let written = Written {
        controller: url.to_string(),
        gid: granted.gid,
        nid: granted.nid,
        roles: granted.roles.clone(),
        token_file,
        ca_cert,
        insecure_http: insecure_http.then_some(true),
        data_dir: dir.to_owned(),
    };
    let text = format!(
        "# Written by `jsagent enroll`: the agent {}:{}. Run it with `jsagent -c <this file>`;\n\
         # every key of deploy/config/agent.toml may be added.\n{}",
        granted.gid,
        granted.nid,
        toml::to_string(&written).unwrap_or_default()
    );
    let config = dir.join("agent.toml");
    let partial = dir.join("agent.toml.partial");
    write_private(&partial, &text).map_err(io(&partial))?;
    std::fs::rename(&partial, &config).map_err(io(&config))
}

/// Writes `text` to a new file only its owner may read (0600 on Unix).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests;
