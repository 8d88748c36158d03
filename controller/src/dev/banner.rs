//! What `jsacc dev` prints once its agent is online: where everything is, the `export` line that
//! points `jsctl` at the private Redis, a sample command, and [`super::READY`].
//!
//! The Redis URL holds the password, so it is never printed: the `export` line reads it from
//! `<data-dir>/redis.url` (0600) when it is pasted, and a log of `jsacc dev` holds no secret.

use std::path::Path;

/// What the banner names.
pub struct Facts<'a> {
    pub dir: &'a Path,
    pub port: u16,
    pub gid: u64,
    pub nid: u64,
    pub cert: &'a Path,
    pub agent_pid: Option<u32>,
    pub agent_log: &'a Path,
}

pub fn print(f: &Facts<'_>) {
    println!("{}", text(f));
}

fn text(f: &Facts<'_>) -> String {
    let pid = f
        .agent_pid
        .map_or_else(String::new, |p| format!(", pid {p}"));
    let me = std::process::id();
    format!(
        "\n\
         jsacc dev: a local cluster runs (data in {dir})\n\
         \x20 controller  https://127.0.0.1:{port}  (certificate {cert})\n\
         \x20 agent       gid {gid} nid {nid}{pid}  (log {log})\n\
         \x20 redis       private; its URL, with the password, is in {url_file}\n\
         \n\
         Use it from another shell (jsctl comes with the Python client: pip install -e client-py,\n\
         or .venv/bin/jsctl after `bash deploy/quickstart.sh`):\n\
         \x20 export JSACC_REDIS=\"$(cat {url_q})\"\n\
         \x20 jsctl exec --gid {gid} --nid {nid} -- echo hello\n\
         \n\
         Ctrl-C (or kill {me}) stops the agent, the controller and the Redis.\n\
         {ready}",
        dir = f.dir.display(),
        port = f.port,
        cert = f.cert.display(),
        gid = f.gid,
        nid = f.nid,
        log = f.agent_log.display(),
        url_file = f.dir.join("redis.url").display(),
        url_q = shell_quote(&f.dir.join("redis.url").to_string_lossy()),
        ready = super::READY,
    )
}

/// `s` as one POSIX shell word: as it is when it needs no quoting, else in single quotes.
fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@,=%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_plain_paths_alone() {
        assert_eq!(shell_quote("/tmp/jsacc-data/dev"), "/tmp/jsacc-data/dev");
    }

    #[test]
    fn shell_quote_quotes_spaces_and_quotes() {
        assert_eq!(shell_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(shell_quote("/tmp/it's"), r"'/tmp/it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn the_banner_never_holds_the_redis_password_and_ends_ready() {
        let f = Facts {
            dir: Path::new("/d"),
            port: 4000,
            gid: 1,
            nid: 2,
            cert: Path::new("/d/tls/cert.pem"),
            agent_pid: Some(7),
            agent_log: Path::new("/d/agent-1-2.log"),
        };
        let t = text(&f);
        assert!(
            t.contains("export JSACC_REDIS=\"$(cat /d/redis.url)\""),
            "{t}"
        );
        assert!(
            t.contains("jsctl exec --gid 1 --nid 2 -- echo hello"),
            "{t}"
        );
        assert!(!t.contains("redis://"), "{t}");
        assert!(t.ends_with(super::super::READY), "{t}");
    }
}
