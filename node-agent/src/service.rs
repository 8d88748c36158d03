//! Service mode (`jsagent --service`, Windows): the agent as a service of the Service Control
//! Manager, as `deploy/windows/install-jsagent.ps1` registers it.
//!
//! - The SCM starts the process; `main` hands over to [`service_dispatcher::start`], which calls
//!   [`service_main`] on a thread of its own and returns when the service has stopped.
//! - A stop request or a system shutdown cancels the agent's shutdown token: the agent stops as it
//!   does on SIGTERM (jobs killed and reported, remembered jobs kept, outbox flushed), reporting
//!   `STOP_PENDING` meanwhile.
//! - The agent's exit code becomes the service's: 0 a clean stop; any other code (75: the
//!   `restart` command; 2: a bad configuration) is a service-specific error, so the recovery
//!   actions the install script sets start it again.
//! - There is no console: the log goes to `<data_dir>/jsagent.log`. A configuration so broken
//!   that the data dir is unknown is reported only as exit code 2 (`sc query` shows it).

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use node_agent::config::{Config, Flags};
use tokio_util::sync::CancellationToken;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{
    self, ServiceControlHandlerResult, ServiceStatusHandle,
};
use windows_service::{define_windows_service, service_dispatcher};

/// The name given to the SCM. A service of its own process (`SERVICE_WIN32_OWN_PROCESS`) is not
/// looked up by it, so the service may be registered under any name.
const NAME: &str = "jsagent";

/// How long a stop may take, told to the SCM: the agent's grace for its jobs and its final
/// upload fit well within it.
const STOP_WAIT_HINT: Duration = Duration::from_secs(30);

/// The log file, in the data dir.
const LOG_FILE: &str = "jsagent.log";
/// A log file larger than this at start is renamed `jsagent.log.1` (replacing the older one).
const LOG_FILE_MAX: u64 = 10 * 1024 * 1024;

/// Stack of the thread the agent runs on.
const AGENT_STACK: usize = 8 * 1024 * 1024;

/// The flags, from `main` to [`service_main`] (which the SCM calls with its own arguments).
static FLAGS: Mutex<Option<Flags>> = Mutex::new(None);
/// The agent's exit code, from [`service_main`] back to `main`.
static EXIT: AtomicU8 = AtomicU8::new(0);

define_windows_service!(ffi_service_main, service_main);

/// Runs the agent as a service; returns once the service has stopped.
pub fn run(flags: Flags) -> ExitCode {
    *FLAGS.lock().unwrap_or_else(|e| e.into_inner()) = Some(flags);
    match service_dispatcher::start(NAME, ffi_service_main) {
        Ok(()) => ExitCode::from(EXIT.load(Ordering::SeqCst)),
        Err(e) => {
            eprintln!(
                "jsagent: --service: cannot reach the Service Control Manager ({e}). --service is \
                 for jsagent started as a Windows service (deploy/windows/install-jsagent.ps1); \
                 from a console, run jsagent without it"
            );
            ExitCode::from(2)
        }
    }
}

fn service_main(_arguments: Vec<OsString>) {
    let flags = FLAGS.lock().unwrap_or_else(|e| e.into_inner()).take();
    let code = flags.map_or(1, serve);
    EXIT.store(code, Ordering::SeqCst);
}

/// Registers with the SCM, runs the agent until it stops, reports the stop; returns the code.
fn serve(flags: Flags) -> u8 {
    let shutdown = CancellationToken::new();
    // The handler reports STOP_PENDING with the handle it is registered under.
    let handle: Arc<OnceLock<ServiceStatusHandle>> = Arc::default();
    let (on_stop, stopping) = (shutdown.clone(), handle.clone());
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            if let Some(h) = stopping.get() {
                let _ = h.set_service_status(status(ServiceState::StopPending, 0));
            }
            on_stop.cancel();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let Ok(registered) = service_control_handler::register(NAME, handler) else {
        return 1;
    };
    let _ = handle.set(registered);
    // The SCM calls us on a thread of its own, with whatever stack the executable's header
    // gives it; the agent's outermost future (large in a debug build) gets a stack set here.
    let agent = std::thread::Builder::new()
        .name("jsagent-service".into())
        .stack_size(AGENT_STACK)
        .spawn(move || run_agent(flags, shutdown, registered));
    let code = match agent.map(std::thread::JoinHandle::join) {
        Ok(Ok(code)) => code,
        _ => 1,
    };
    let _ = registered.set_service_status(status(ServiceState::Stopped, code));
    code
}

fn run_agent(flags: Flags, shutdown: CancellationToken, handle: ServiceStatusHandle) -> u8 {
    // Where to log a configuration error: the data dir flag, else beside the executable.
    let fallback = flags.data_dir.clone().or_else(|| {
        let exe = std::env::current_exe().ok()?;
        exe.parent().map(std::path::Path::to_path_buf)
    });
    let config = match Config::load(flags) {
        Ok(config) => config,
        Err(e) => {
            if fallback.is_some_and(|dir| init_file_logging(&dir).is_ok()) {
                tracing::error!("{e}");
            }
            return 2;
        }
    };
    if init_file_logging(&config.data_dir).is_err() {
        return 1;
    }
    // Without a console a panic's message would go nowhere: into the log with it.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!("{info}");
        default_hook(info);
    }));
    tracing::info!("running as a Windows service");
    let _ = handle.set_service_status(status(ServiceState::Running, 0));
    match crate::start(config, shutdown, false) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            1
        }
    }
}

/// Logs to `<data_dir>/jsagent.log` (appended; a file over [`LOG_FILE_MAX`] is moved to
/// `jsagent.log.1` first): there is no console.
fn init_file_logging(data_dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let path = data_dir.join(LOG_FILE);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > LOG_FILE_MAX) {
        std::fs::rename(&path, data_dir.join(format!("{LOG_FILE}.1")))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    crate::init_logging(Mutex::new(file), false);
    Ok(())
}

/// The status to report: `state`, and the exit code once stopped.
fn status(state: ServiceState, code: u8) -> ServiceStatus {
    let (controls_accepted, wait_hint) = match state {
        ServiceState::Running => (
            ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN,
            Duration::ZERO,
        ),
        ServiceState::StopPending => (ServiceControlAccept::empty(), STOP_WAIT_HINT),
        _ => (ServiceControlAccept::empty(), Duration::ZERO),
    };
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
        current_state: state,
        controls_accepted,
        exit_code: match code {
            0 => ServiceExitCode::NO_ERROR,
            code => ServiceExitCode::ServiceSpecific(code.into()),
        },
        checkpoint: 0,
        wait_hint,
        process_id: None,
    }
}
