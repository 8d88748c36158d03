//! `jsagent enroll --install-service`: registers the enrolled agent with the system's service
//! manager under the name `jsagent` and starts it.
//!
//! - Linux: the unit `/etc/systemd/system/jsagent.service`, modelled on
//!   `deploy/systemd/jsagent.service`, running `<this exe> -c <data-dir>/agent.toml`; then
//!   `systemctl daemon-reload` and `systemctl enable --now jsagent`.
//! - Windows: `sc.exe create jsagent binPath= "<this exe> --service -c <data-dir>\agent.toml"`
//!   with the recovery actions of `deploy/windows/install-jsagent.ps1`, then `sc.exe start`.
//!
//! [`check`] runs before the enrollment code is spent: it refuses when the service could not be
//! installed (not root or not an administrator, no systemd, a unit that cannot be written), and
//! on Unix when the binary that would run as root could be replaced by someone else than root
//! (it or a directory above it not owned by root, or writable by its group or others).
//! [`install`] then returns a line saying what was done; an error says what to do instead.

use std::path::{Path, PathBuf};

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
fn this_exe() -> Result<PathBuf, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot tell where this jsagent is: {e}"))?;
    std::fs::canonicalize(&exe).map_err(|e| format!("cannot resolve {}: {e}", exe.display()))
}

/// The systemd unit written.
#[cfg(target_os = "linux")]
const UNIT: &str = "/etc/systemd/system/jsagent.service";

/// Whether the service can be installed, before the code is spent; the binary the service
/// will run.
#[cfg(target_os = "linux")]
pub(super) fn check(config: &Path, data_dir: &Path) -> Result<PathBuf, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("installing the service needs root: run it with sudo".into());
    }
    if !Path::new("/run/systemd/system").exists() {
        return Err(
            "this machine does not run systemd: enroll without --install-service and start \
             `jsagent -c <config>` with its service manager"
                .into(),
        );
    }
    let exe = this_exe()?;
    root_owned(&ownership(&exe)?, &exe)?;
    // The unit can be made (from the paths given) and written.
    unit(&exe, config, data_dir)?;
    let probe = Path::new(UNIT).with_extension("service.probe");
    std::fs::write(&probe, "")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| format!("cannot write in {}: {e}", probe.display()))?;
    Ok(exe)
}

/// The owner and mode of `path` and of each directory above it.
#[cfg(target_os = "linux")]
fn ownership(path: &Path) -> Result<Vec<Owned>, String> {
    use std::os::unix::fs::MetadataExt;
    path.ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| {
            let meta =
                std::fs::metadata(p).map_err(|e| format!("cannot stat {}: {e}", p.display()))?;
            Ok(Owned {
                path: p.to_owned(),
                uid: meta.uid(),
                mode: meta.mode(),
            })
        })
        .collect()
}

/// A path's owner and mode bits.
#[cfg(any(target_os = "linux", test))]
#[derive(Debug, Clone)]
struct Owned {
    path: PathBuf,
    uid: u32,
    mode: u32,
}

/// Refuses a binary (`exe`, whose chain of paths is `chain`) that someone other than root could
/// replace: the service runs it as root.
#[cfg(any(target_os = "linux", test))]
fn root_owned(chain: &[Owned], exe: &Path) -> Result<(), String> {
    for link in chain {
        let why = match (link.uid, link.mode & 0o022) {
            (0, 0) => continue,
            (0, _) => "is writable by its group or others",
            _ => "is not owned by root",
        };
        return Err(format!(
            "{} {why}, and the service would run {} as root: install jsagent where only root \
             may change it (e.g. `sudo install -o root -g root -m 0755 {} /usr/local/bin/jsagent`) \
             and run that one",
            link.path.display(),
            exe.display(),
            exe.display()
        ));
    }
    Ok(())
}

/// Installs the unit running `exe` (from [`check`]) and starts it.
#[cfg(target_os = "linux")]
pub(super) fn install(exe: &Path, config: &Path, data_dir: &Path) -> Result<String, String> {
    let unit = unit(exe, config, data_dir)?;
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

/// A path as one argument of `ExecStart=`: quoted, with `\` and `"` escaped, and `%` and `$`
/// doubled (systemd expands specifiers and variables in command lines).
#[cfg(any(target_os = "linux", test))]
fn exec_arg(path: &Path) -> Result<String, String> {
    let text = unit_path(path)?;
    let mut quoted = String::from('"');
    for c in text.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '"' => quoted.push_str("\\\""),
            '%' => quoted.push_str("%%"),
            '$' => quoted.push_str("$$"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    Ok(quoted)
}

/// A path as a unit setting's value (`WorkingDirectory=`): `%` doubled.
#[cfg(any(target_os = "linux", test))]
fn unit_text(path: &Path) -> Result<String, String> {
    Ok(unit_path(path)?.replace('%', "%%"))
}

/// A path a unit can hold: refused when it is not UTF-8, spans lines or has spaces at an end.
#[cfg(any(target_os = "linux", test))]
fn unit_path(path: &Path) -> Result<&str, String> {
    path.to_str()
        .filter(|t| !t.contains(['\n', '\r']) && t.trim() == *t)
        .ok_or_else(|| {
            format!(
                "{}: a path a systemd unit cannot hold (not UTF-8, a line break, or spaces at \
                 an end)",
                path.display()
            )
        })
}

/// The systemd unit: `deploy/systemd/jsagent.service`'s settings, for this exe and config.
#[cfg(any(target_os = "linux", test))]
fn unit(exe: &Path, config: &Path, data_dir: &Path) -> Result<String, String> {
    Ok(format!(
        "# Written by `jsagent enroll --install-service` (model: deploy/systemd/jsagent.service).
[Unit]
Description=jsacc node agent
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=0

[Service]
Type=simple
EnvironmentFile=-/etc/jsacc/jsagent.env
ExecStart={exe} -c {config}
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
        exe = exec_arg(exe)?,
        config = exec_arg(config)?,
        dir = unit_text(data_dir)?,
    ))
}

/// Whether the service can be registered, before the code is spent: `sc.exe` runs, this is an
/// administrator (`net session` answers only to one), and no service `jsagent` exists. The
/// binary the service will run.
#[cfg(windows)]
pub(super) fn check(_config: &Path, _data_dir: &Path) -> Result<PathBuf, String> {
    let status = |program: &str, args: &[&str]| {
        std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {program}: {e}"))
    };
    if !status("net", &["session"])?.success() {
        return Err("registering the service needs an administrator: run it elevated".into());
    }
    if status("sc.exe", &["query", "jsagent"])?.success() {
        return Err(
            "a service jsagent exists already: remove it first (sc.exe stop jsagent; sc.exe \
             delete jsagent)"
                .into(),
        );
    }
    this_exe()
}

#[cfg(windows)]
pub(super) fn install(exe: &Path, config: &Path, _data_dir: &Path) -> Result<String, String> {
    const NAME: &str = "jsagent";
    let bin_path = format!(
        "\"{}\" --service -c \"{}\"",
        exe.display(),
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
pub(super) fn check(_config: &Path, _data_dir: &Path) -> Result<PathBuf, String> {
    Err(
        "--install-service knows systemd (Linux) and Windows only: start `jsagent -c <config>` \
         with this system's service manager"
            .into(),
    )
}

#[cfg(not(any(target_os = "linux", windows)))]
pub(super) fn install(_exe: &Path, _config: &Path, _data_dir: &Path) -> Result<String, String> {
    check(_config, _data_dir).map(|_| String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_this_agent_with_the_written_config() {
        let unit = unit(
            Path::new("/opt/jsagent/bin/jsagent"),
            Path::new("/var/lib/jsagent/agent.toml"),
            Path::new("/var/lib/jsagent"),
        )
        .unwrap();
        assert!(unit.contains(
            "ExecStart=\"/opt/jsagent/bin/jsagent\" -c \"/var/lib/jsagent/agent.toml\"\n"
        ));
        assert!(unit.contains("WorkingDirectory=/var/lib/jsagent\n"));
        assert!(unit.contains("RestartPreventExitStatus=2\n"));
        assert!(unit.contains("WantedBy=multi-user.target"));
    }

    #[test]
    fn unit_paths_are_quoted_and_escaped() {
        let unit = unit(
            Path::new("/opt/my agent/100%/jsagent"),
            Path::new("/srv/a \"b\" $HOME\\c/agent.toml"),
            Path::new("/srv/100% data"),
        )
        .unwrap();
        assert!(
            unit.contains(
                "ExecStart=\"/opt/my agent/100%%/jsagent\" -c \"/srv/a \\\"b\\\" $$HOME\\\\c/agent.toml\"\n"
            ),
            "{unit}"
        );
        assert!(
            unit.contains("WorkingDirectory=/srv/100%% data\n"),
            "{unit}"
        );
        for bad in ["/srv/a\nExecStartPre=/bin/evil", "/srv/trailing "] {
            assert!(unit_text(Path::new(bad)).is_err(), "{bad}");
        }
    }

    fn owned(path: &str, uid: u32, mode: u32) -> Owned {
        Owned {
            path: PathBuf::from(path),
            uid,
            mode,
        }
    }

    #[test]
    fn only_a_binary_that_only_root_can_change_is_run_as_root() {
        let exe = Path::new("/usr/local/bin/jsagent");
        let safe = [
            owned("/usr/local/bin/jsagent", 0, 0o100755),
            owned("/usr/local/bin", 0, 0o40755),
            owned("/usr/local", 0, 0o40755),
            owned("/usr", 0, 0o40755),
            owned("/", 0, 0o40755),
        ];
        assert!(root_owned(&safe, exe).is_ok());
        // The binary a user built or downloaded.
        let mut mine = safe.clone();
        mine[0].uid = 1000;
        let e = root_owned(&mine, exe).unwrap_err();
        assert!(
            e.contains("/usr/local/bin/jsagent is not owned by root"),
            "{e}"
        );
        assert!(e.contains("install -o root"), "{e}");
        // A directory above it that a user owns, or that its group may write.
        let mut home = safe.clone();
        home[2].uid = 1000;
        assert!(root_owned(&home, exe)
            .unwrap_err()
            .contains("/usr/local is not owned"));
        let mut group = safe.clone();
        group[1].mode = 0o40775;
        assert!(root_owned(&group, exe)
            .unwrap_err()
            .contains("/usr/local/bin is writable by its group or others"));
        // /tmp: root's, but everyone may write there.
        let tmp = [
            owned("/tmp/jsagent", 0, 0o100755),
            owned("/tmp", 0, 0o41777),
        ];
        assert!(root_owned(&tmp, Path::new("/tmp/jsagent")).is_err());
    }

    /// The real metadata: a file the test made in a temp dir is refused unless the test runs
    /// as root (and then /tmp itself, writable by all, is).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_binary_in_a_temp_dir_is_refused() {
        let dir = std::env::temp_dir().join(format!("jsagent-owned-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("jsagent");
        std::fs::write(&exe, "").unwrap();
        let exe = std::fs::canonicalize(&exe).unwrap();
        let e = root_owned(&ownership(&exe).unwrap(), &exe).unwrap_err();
        assert!(e.contains("run that one"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
