//! What to start for a job: turns an `execute` / `execute_js_py` / `execute_js_lua` command's
//! args into a program, its arguments, working directory and environment — template variables
//! replaced, the executable or interpreter found, the script located or written out. Everything
//! a command can get wrong is found here and explained in a [`LaunchError`], before any spawn.
//!
//! This does a few `stat` calls and writes inline scripts (small) with blocking file I/O; both
//! are brief enough to do on the runtime.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use schemas::{CommandKind, ExecuteArgs};

use crate::config::Config;

/// What kind of program a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Program {
    /// `execute`: `args.cmd` itself.
    Executable,
    /// `execute_js_py`: a Python script.
    Python,
    /// `execute_js_lua`: a Lua script.
    Lua,
}

impl Program {
    /// The args and program of a command that runs a process; an internal command is given
    /// back as the `Err`.
    // The kind is handed back once to the caller's match, never propagated with `?`.
    #[allow(clippy::result_large_err)]
    pub(crate) fn of(kind: CommandKind) -> Result<(ExecuteArgs, Program), CommandKind> {
        match kind {
            CommandKind::Execute(args) => Ok((args, Program::Executable)),
            CommandKind::ExecutePy(args) => Ok((args, Program::Python)),
            CommandKind::ExecuteLua(args) => Ok((args, Program::Lua)),
            internal => Err(internal),
        }
    }
}

/// A job, ready to spawn.
#[derive(Debug)]
pub(crate) struct Launch {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) workingdir: Option<PathBuf>,
    pub(crate) env: BTreeMap<String, String>,
    /// An inline script written out for this run; removed when the launch is dropped.
    #[allow(
        dead_code,
        reason = "never read: held so that dropping the launch removes the file"
    )]
    pub(crate) script: Option<ScriptFile>,
}

/// A script file the agent wrote; deleted on drop.
#[derive(Debug)]
pub(crate) struct ScriptFile(PathBuf);

impl Drop for ScriptFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Why a job cannot start. The text is the `data` of its `ERROR` result.
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum LaunchError {
    #[error("executable not found: {0}")]
    ExecutableNotFound(String),
    #[error("executable `{0}` not found on PATH")]
    NotOnPath(String),
    #[error("working directory not found: {0}")]
    WorkingDirMissing(String),
    #[error(
        "interpreter `{name}` not found (set `{key}` under [interpreters] in the agent config)"
    )]
    InterpreterNotFound { name: String, key: &'static str },
    #[error("script not found: {0}")]
    ScriptNotFound(String),
    #[error("bad script {field} `{value}`: it must be a plain name, without path separators")]
    BadScriptName { field: &'static str, value: String },
    #[error("cannot write the script to {path}: {reason}")]
    WriteScript { path: String, reason: String },
}

/// Values of `$agentroot`, `$root` and `$tmp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Templates {
    pub(crate) agentroot: String,
    pub(crate) root: String,
    pub(crate) tmp: String,
}

impl Templates {
    /// The values of the agent's config (also used by `put_file` and `get_file` paths).
    pub(crate) fn of(config: &Config) -> Templates {
        let text = |p: &Path| p.to_string_lossy().into_owned();
        Templates {
            agentroot: text(&config.data_dir),
            root: text(&config.install_root),
            tmp: text(&std::env::temp_dir()),
        }
    }

    pub(crate) fn apply(&self, s: &str) -> String {
        s.replace("$agentroot", &self.agentroot)
            .replace("$root", &self.root)
            .replace("$tmp", &self.tmp)
    }
}

/// Prepares launches with the agent's settings.
#[derive(Debug, Clone)]
pub(crate) struct Launcher {
    pub(crate) templates: Templates,
    pub(crate) python: String,
    pub(crate) lua: String,
    pub(crate) jumpscripts_dir: PathBuf,
    /// Where inline scripts are written.
    pub(crate) scripts_dir: PathBuf,
}

impl Launcher {
    pub(crate) fn new(config: &Config) -> Launcher {
        Launcher {
            templates: Templates::of(config),
            python: config.interpreters.python.clone(),
            lua: config.interpreters.lua.clone(),
            jumpscripts_dir: config.jumpscripts_dir.clone(),
            scripts_dir: config.data_dir.join("tmp"),
        }
    }

    pub(crate) fn prepare(
        &self,
        job_id: &str,
        program: Program,
        args: &ExecuteArgs,
    ) -> Result<Launch, LaunchError> {
        let workingdir = args
            .workingdir
            .as_deref()
            .map(|w| PathBuf::from(self.templates.apply(w)));
        if let Some(dir) = &workingdir {
            if !dir.is_dir() {
                return Err(LaunchError::WorkingDirMissing(dir.display().to_string()));
            }
        }
        let path_var = args
            .env
            .get("PATH")
            .map(OsString::from)
            .or_else(|| std::env::var_os("PATH"));
        let find = |name: &str| find_executable(name, workingdir.as_deref(), path_var.as_deref());
        let mut argv: Vec<String> = args.args.iter().map(|a| self.templates.apply(a)).collect();
        let (program, script) = match program {
            Program::Executable => {
                let cmd = self
                    .templates
                    .apply(args.cmd.as_deref().unwrap_or_default());
                let exe = find(&cmd).ok_or_else(|| not_found(&cmd))?;
                (exe, None)
            }
            Program::Python | Program::Lua => {
                let (interpreter, key, ext) = match program {
                    Program::Python => (&self.python, "python", "py"),
                    _ => (&self.lua, "lua", "lua"),
                };
                let exe = find(interpreter).ok_or_else(|| LaunchError::InterpreterNotFound {
                    name: interpreter.clone(),
                    key,
                })?;
                let (path, file) = self.script(job_id, args, ext)?;
                argv.insert(0, path.to_string_lossy().into_owned());
                (exe, file)
            }
        };
        Ok(Launch {
            program,
            args: argv,
            workingdir,
            env: args.env.clone(),
            script,
        })
    }

    /// The script to run: written out from `args.script`, or `<jumpscripts_dir>/<domain>/<name>.<ext>`.
    fn script(
        &self,
        job_id: &str,
        args: &ExecuteArgs,
        ext: &str,
    ) -> Result<(PathBuf, Option<ScriptFile>), LaunchError> {
        if let Some(source) = &args.script {
            let safe_id: String = job_id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let path = self
                .scripts_dir
                .join(format!("{safe_id}-{:016x}.{ext}", rand::random::<u64>()));
            let write = std::fs::create_dir_all(&self.scripts_dir)
                .and_then(|()| std::fs::write(&path, source));
            write.map_err(|e| LaunchError::WriteScript {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            return Ok((path.clone(), Some(ScriptFile(path))));
        }
        let domain = plain_name("domain", &args.domain)?;
        let name = plain_name("name", &args.name)?;
        let path = self
            .jumpscripts_dir
            .join(domain)
            .join(format!("{name}.{ext}"));
        if !path.is_file() {
            return Err(LaunchError::ScriptNotFound(path.display().to_string()));
        }
        Ok((path, None))
    }
}

fn not_found(cmd: &str) -> LaunchError {
    if has_separator(cmd) {
        LaunchError::ExecutableNotFound(cmd.to_owned())
    } else {
        LaunchError::NotOnPath(cmd.to_owned())
    }
}

/// A domain or script name must stay inside its directory.
fn plain_name<'a>(field: &'static str, value: &'a str) -> Result<&'a str, LaunchError> {
    if value.is_empty() || value == "." || value == ".." || has_separator(value) {
        return Err(LaunchError::BadScriptName {
            field,
            value: value.to_owned(),
        });
    }
    Ok(value)
}

fn has_separator(s: &str) -> bool {
    s.contains('/') || (cfg!(windows) && s.contains('\\'))
}

/// Finds an executable: a path (relative ones against `workingdir`) or a name looked up on PATH
/// (then, on Windows, in the system directories, as `CreateProcess` does).
pub(crate) fn find_executable(
    cmd: &str,
    workingdir: Option<&Path>,
    path_var: Option<&OsStr>,
) -> Option<PathBuf> {
    if cmd.is_empty() {
        return None;
    }
    if has_separator(cmd) {
        let path = Path::new(cmd);
        let path = match workingdir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_owned(),
        };
        return with_extensions(&path).into_iter().find(|p| p.is_file());
    }
    let mut dirs: Vec<PathBuf> = path_var
        .map(std::env::split_paths)
        .into_iter()
        .flatten()
        .collect();
    dirs.extend(crate::supervisor::platform::system_dirs());
    dirs.iter()
        .flat_map(|dir| with_extensions(&dir.join(cmd)))
        .find(|p| is_executable(p))
}

/// On Windows a command may omit its extension (`cmd` for `cmd.exe`).
fn with_extensions(path: &Path) -> Vec<PathBuf> {
    let mut candidates = vec![path.to_owned()];
    if cfg!(windows) && path.extension().is_none() {
        candidates.extend(
            ["exe", "com", "bat", "cmd"]
                .iter()
                .map(|ext| path.with_extension(ext)),
        );
    }
    candidates
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

#[cfg(test)]
#[cfg(unix)]
mod tests;
