//! `jsagent enroll --install-service`: registers the enrolled agent with the system's service
//! manager under the name `jsagent` and starts it.
//!
//! - Linux: the unit `/etc/systemd/system/jsagent.service`, modelled on
//!   `deploy/systemd/jsagent.service`, running `<this exe> -c <data-dir>/agent.toml`; then
//!   `systemctl daemon-reload` and `systemctl enable --now jsagent`.
//! - Windows: `sc.exe create jsagent binPath= "<this exe> --service -c <data-dir>\agent.toml"`
//!   with the recovery actions of `deploy/windows/install-jsagent.ps1`, then `sc.exe start`.
//!
//! Returns a line saying what was done; an error says what to do instead.

use std::path::Path;

/// Runs `program args…`; its output on failure.
#[cfg(any(target_os = "linux", windows))]
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    let text = match text.is_empty() {
        true => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        false => text,
    };
    Err(format!(
        "{program} {}: {} ({text})",
        args.join(" "),
        out.status
    ))
}

#[cfg(any(target_os = "linux", windows))]
fn this_exe() -> Result<std::path::PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot tell where this jsagent is: {e}"))
}

#[cfg(target_os = "linux")]
pub(super) fn install(config: &Path, data_dir: &Path) -> Result<String, String> {
    const UNIT: &str = "/etc/systemd/system/jsagent.service";
    if !Path::new("/run/systemd/system").exists() {
        return Err(
            "this machine does not run systemd: start `jsagent -c <config>` with its \
                    service manager"
                .into(),
        );
    }
    let unit = unit(&this_exe()?, config, data_dir);
    std::fs::write(UNIT, unit).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => format!(
            "writing {UNIT} needs root: as root, delete {} and enroll again with a new code, or \
             install deploy/systemd/jsagent.service by hand",
            data_dir.display()
        ),
        _ => format!("cannot write {UNIT}: {e}"),
    })?;
    run("systemctl", &["daemon-reload"])?;
    run("systemctl", &["enable", "--now", "jsagent"])?;
    Ok(format!(
        "installed {UNIT} and started it (journalctl -u jsagent -f)"
    ))
}

/// The systemd unit: `deploy/systemd/jsagent.service`'s settings, for this exe and config.
#[cfg(any(target_os = "linux", test))]
fn unit(exe: &Path, config: &Path, data_dir: &Path) -> String {
    format!(
        "# Written by `jsagent enroll --install-service` (model: deploy/systemd/jsagent.service).
[Unit]
Description=jsacc node agent
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=0

[Service]
Type=simple
EnvironmentFile=-/etc/jsacc/jsagent.env
ExecStart=\"{exe}\" -c \"{config}\"
WorkingDirectory={dir}
Restart=always
RestartSec=3
Environment=NO_COLOR=1
SuccessExitStatus=75
RestartForceExitStatus=75
RestartPreventExitStatus=2
KillMode=mixed
TimeoutStopSec=60
OOMPolicy=continue
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
",
        exe = exe.display(),
        config = config.display(),
        dir = data_dir.display(),
    )
}

#[cfg(windows)]
pub(super) fn install(config: &Path, _data_dir: &Path) -> Result<String, String> {
    const NAME: &str = "jsagent";
    let bin_path = format!(
        "\"{}\" --service -c \"{}\"",
        this_exe()?.display(),
        config.display()
    );
    run(
        "sc.exe",
        &[
            "create",
            NAME,
            "binPath=",
            &bin_path,
            "start=",
            "auto",
            "DisplayName=",
            "jsacc node agent",
        ],
    )
    .map_err(|e| format!("{e}; an administrator must run it, and no service {NAME} may exist"))?;
    // As the install script: restart after 5 s, 5 s, then 30 s; also after a non-zero exit.
    let recovery = [
        "failure",
        NAME,
        "reset=",
        "86400",
        "actions=",
        "restart/5000/restart/5000/restart/30000",
    ];
    if let Err(e) =
        run("sc.exe", &recovery).and_then(|()| run("sc.exe", &["failureflag", NAME, "1"]))
    {
        tracing::warn!("service recovery actions not set: {e}");
    }
    run("sc.exe", &["start", NAME])?;
    Ok(format!("registered the service {NAME} and started it"))
}

#[cfg(not(any(target_os = "linux", windows)))]
pub(super) fn install(_config: &Path, _data_dir: &Path) -> Result<String, String> {
    Err(
        "--install-service knows systemd (Linux) and Windows only: start `jsagent -c <config>` \
         with this system's service manager"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_unit_runs_this_agent_with_the_written_config() {
        let unit = super::unit(
            std::path::Path::new("/opt/jsagent/bin/jsagent"),
            std::path::Path::new("/var/lib/jsagent/agent.toml"),
            std::path::Path::new("/var/lib/jsagent"),
        );
        assert!(unit.contains(
            "ExecStart=\"/opt/jsagent/bin/jsagent\" -c \"/var/lib/jsagent/agent.toml\"\n"
        ));
        assert!(unit.contains("RestartPreventExitStatus=2\n"));
        assert!(unit.contains("WantedBy=multi-user.target"));
    }
}
