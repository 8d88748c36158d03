//! Redis targets (DESIGN §11): the one parser of `-r` / `--redis` / `JSACC_REDIS`.
//!
//! - `host:port`, `redis://[user:pass@]host:port[/db]`, `rediss://…`: one server;
//! - `redis+sentinel://[user:pass@]h:p[,h:p…]/<master>[/db]`, `rediss+sentinel://…`: the primary
//!   of `<master>` as the sentinels name it, followed across failovers;
//! - `redis+cluster://[user:pass@]h:p[,h:p…]`, `rediss+cluster://…`: a Redis Cluster, any nodes
//!   of it as seeds.
//!
//! Credentials apply to the data nodes and, for sentinel targets, to the sentinels too.
//! Parsing is a pure function; [`crate::redis_conn`] opens connections from the result.

use std::fmt;

/// Which kind of Redis deployment a target names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Standalone,
    Sentinel,
    Cluster,
}

impl Topology {
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Standalone => "standalone",
            Topology::Sentinel => "sentinel",
            Topology::Cluster => "cluster",
        }
    }
}

/// A parsed `-r` value.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub topology: Topology,
    pub tls: bool,
    /// Standalone: the server; sentinel: the sentinels; cluster: the seed nodes.
    pub nodes: Vec<(String, u16)>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Sentinel only: the name the sentinels monitor the primary under.
    pub master: Option<String>,
    /// Database number (always 0 on a cluster).
    pub db: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("redis target is empty")]
    Empty,
    #[error("unknown redis URL scheme `{0}://` (use redis, rediss, redis+sentinel, rediss+sentinel, redis+cluster or rediss+cluster)")]
    Scheme(String),
    #[error("redis target `{0}` names no host")]
    NoHost(String),
    #[error("bad port in `{0}` (expected host:port with a port from 1 to 65535)")]
    Port(String),
    #[error("`{0}` names several hosts; only redis+sentinel:// and redis+cluster:// take a list")]
    SeveralHosts(String),
    #[error("a sentinel target needs the master's name: redis+sentinel://host:port[,host:port…]/<master>[/db]")]
    NoMaster,
    #[error("bad database number `{0}` (expected an integer from 0)")]
    Db(String),
    #[error("a cluster has only database 0; drop `/{0}` from the URL")]
    ClusterDb(String),
    #[error("bad percent-encoding in the credentials of the redis URL")]
    Encoding,
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, TargetError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(TargetError::Empty);
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            // `host:port`
            let node = parse_node(text)?;
            return Ok(Target::single(Topology::Standalone, false, node));
        };
        let (topology, tls) = match scheme.to_ascii_lowercase().as_str() {
            "redis" => (Topology::Standalone, false),
            "rediss" => (Topology::Standalone, true),
            "redis+sentinel" => (Topology::Sentinel, false),
            "rediss+sentinel" => (Topology::Sentinel, true),
            "redis+cluster" => (Topology::Cluster, false),
            "rediss+cluster" => (Topology::Cluster, true),
            other => return Err(TargetError::Scheme(other.to_owned())),
        };
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        // Credentials end at the last `@` (a password may hold one, percent-encoded or not).
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, rest),
        };
        let (hosts, path) = match rest.split_once('/') {
            Some((h, p)) => (h, p),
            None => (rest, ""),
        };
        if hosts.is_empty() {
            return Err(TargetError::NoHost(text.to_owned()));
        }
        let nodes = hosts
            .split(',')
            .map(parse_node)
            .collect::<Result<Vec<_>, _>>()?;
        if topology == Topology::Standalone && nodes.len() > 1 {
            return Err(TargetError::SeveralHosts(mask(text)));
        }
        let (username, password) = match userinfo {
            Some(u) => parse_userinfo(u)?,
            None => (None, None),
        };
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let master = match topology {
            Topology::Sentinel => Some(segments.next().ok_or(TargetError::NoMaster)?.to_owned()),
            _ => None,
        };
        let db = match segments.next() {
            None => 0,
            Some(d) if topology == Topology::Cluster && d != "0" => {
                return Err(TargetError::ClusterDb(d.to_owned()))
            }
            Some(d) => d
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| TargetError::Db(d.to_owned()))?,
        };
        if let Some(extra) = segments.next() {
            return Err(TargetError::Db(extra.to_owned()));
        }
        Ok(Target {
            topology,
            tls,
            nodes,
            username,
            password,
            master,
            db,
        })
    }

    fn single(topology: Topology, tls: bool, node: (String, u16)) -> Target {
        Target {
            topology,
            tls,
            nodes: vec![node],
            username: None,
            password: None,
            master: None,
            db: 0,
        }
    }

    /// The `redis://` or `rediss://` URL of one node, with this target's credentials and db.
    pub fn node_url(&self, (host, port): &(String, u16)) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = match (&self.username, &self.password) {
            (None, None) => String::new(),
            (u, p) => format!(
                "{}:{}@",
                encode(u.as_deref().unwrap_or("")),
                encode(p.as_deref().unwrap_or(""))
            ),
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.clone()
        };
        format!("{scheme}://{auth}{host}:{port}/{}", self.db)
    }

    /// Whether writes are confirmed by replicas unless told otherwise: a sentinel or cluster
    /// deployment has replicas to fail over to; a standalone server usually has none.
    pub fn default_wait_replicas(&self) -> usize {
        match self.topology {
            Topology::Standalone => 0,
            Topology::Sentinel | Topology::Cluster => 1,
        }
    }
}

/// Shown in logs and errors: never the password.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match (self.topology, self.tls) {
            (Topology::Standalone, false) => "redis",
            (Topology::Standalone, true) => "rediss",
            (Topology::Sentinel, false) => "redis+sentinel",
            (Topology::Sentinel, true) => "rediss+sentinel",
            (Topology::Cluster, false) => "redis+cluster",
            (Topology::Cluster, true) => "rediss+cluster",
        };
        write!(f, "{scheme}://")?;
        if let Some(u) = &self.username {
            write!(f, "{u}")?;
        }
        if self.password.is_some() {
            write!(f, ":***")?;
        }
        if self.username.is_some() || self.password.is_some() {
            write!(f, "@")?;
        }
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|(h, p)| {
                if h.contains(':') {
                    format!("[{h}]:{p}")
                } else {
                    format!("{h}:{p}")
                }
            })
            .collect();
        write!(f, "{}", hosts.join(","))?;
        if let Some(m) = &self.master {
            write!(f, "/{m}")?;
        }
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({self})")
    }
}

/// `host:port` or `[v6]:port`.
fn parse_node(text: &str) -> Result<(String, u16), TargetError> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, p) = rest
            .split_once(']')
            .ok_or_else(|| TargetError::Port(text.to_owned()))?;
        (h, p.strip_prefix(':').unwrap_or(""))
    } else {
        text.rsplit_once(':').unwrap_or((text, ""))
    };
    if host.is_empty() {
        return Err(TargetError::NoHost(text.to_owned()));
    }
    if port.is_empty() {
        return Ok((host.to_owned(), 6379));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host.to_owned(), p)),
        _ => Err(TargetError::Port(text.to_owned())),
    }
}

fn parse_userinfo(text: &str) -> Result<(Option<String>, Option<String>), TargetError> {
    let (user, pass) = match text.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (text, None),
    };
    let user = Some(decode(user)?).filter(|u| !u.is_empty());
    let pass = pass.map(decode).transpose()?;
    Ok((user, pass))
}

fn decode(text: &str) -> Result<String, TargetError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or(TargetError::Encoding)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| TargetError::Encoding)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| TargetError::Encoding)
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A URL as it may be shown: the password replaced, when it cannot be parsed.
fn mask(text: &str) -> String {
    match text.rsplit_once('@') {
        Some((before, after)) => match before.rsplit_once(':') {
            Some((scheme_user, _)) if scheme_user.contains("://") || !before.contains("://") => {
                format!("{scheme_user}:***@{after}")
            }
            _ => format!("{before}@{after}"),
        },
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Target {
        Target::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn host_and_port_is_a_standalone_server() {
        let t = parse("redis.example:6380");
        assert_eq!(t.topology, Topology::Standalone);
        assert_eq!(t.nodes, vec![("redis.example".into(), 6380)]);
        assert!(!t.tls);
        assert_eq!(t.node_url(&t.nodes[0]), "redis://redis.example:6380/0");
    }

    #[test]
    fn a_url_keeps_its_credentials_and_db() {
        let t = parse("rediss://app:s%40cret@r1:6390/3");
        assert!(t.tls);
        assert_eq!(t.username.as_deref(), Some("app"));
        assert_eq!(t.password.as_deref(), Some("s@cret"));
        assert_eq!(t.db, 3);
        assert_eq!(t.node_url(&t.nodes[0]), "rediss://app:s%40cret@r1:6390/3");
        assert_eq!(t.to_string(), "rediss://app:***@r1:6390/3");
    }

    #[test]
    fn a_password_alone_is_allowed() {
        let t = parse("redis://:pw@h:1");
        assert_eq!(t.username, None);
        assert_eq!(t.password.as_deref(), Some("pw"));
        assert_eq!(t.node_url(&t.nodes[0]), "redis://:pw@h:1/0");
    }

    #[test]
    fn a_sentinel_url_lists_sentinels_and_names_the_master() {
        let t = parse("redis+sentinel://s1:26379,s2:26380,[::1]:26381/jsacc/2");
        assert_eq!(t.topology, Topology::Sentinel);
        assert_eq!(t.nodes.len(), 3);
        assert_eq!(t.nodes[2], ("::1".into(), 26381));
        assert_eq!(t.master.as_deref(), Some("jsacc"));
        assert_eq!(t.db, 2);
        assert_eq!(t.default_wait_replicas(), 1);
        assert_eq!(
            t.to_string(),
            "redis+sentinel://s1:26379,s2:26380,[::1]:26381/jsacc/2"
        );
    }

    #[test]
    fn a_sentinel_url_without_a_master_is_refused() {
        assert_eq!(
            Target::parse("redis+sentinel://s1:26379"),
            Err(TargetError::NoMaster)
        );
        assert_eq!(
            Target::parse("redis+sentinel://s1:26379/"),
            Err(TargetError::NoMaster)
        );
    }

    #[test]
    fn a_cluster_url_lists_seeds_and_has_only_db_0() {
        let t = parse("rediss+cluster://u:p@n1:7000,n2:7001");
        assert_eq!(t.topology, Topology::Cluster);
        assert!(t.tls);
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(
            Target::parse("redis+cluster://n1:7000/1"),
            Err(TargetError::ClusterDb("1".into()))
        );
        assert_eq!(parse("redis+cluster://n1:7000/0").db, 0);
    }

    #[test]
    fn a_port_is_optional_and_defaults_to_6379() {
        assert_eq!(parse("redis://h").nodes, vec![("h".into(), 6379)]);
    }

    #[test]
    fn bad_targets_say_what_is_wrong() {
        assert_eq!(Target::parse("  "), Err(TargetError::Empty));
        assert!(matches!(
            Target::parse("http://h:1"),
            Err(TargetError::Scheme(s)) if s == "http"
        ));
        assert!(matches!(
            Target::parse("h:99999"),
            Err(TargetError::Port(_))
        ));
        assert!(matches!(Target::parse("h:0"), Err(TargetError::Port(_))));
        assert!(matches!(
            Target::parse("redis://"),
            Err(TargetError::NoHost(_))
        ));
        assert!(matches!(
            Target::parse("redis://a:1,b:2"),
            Err(TargetError::SeveralHosts(_))
        ));
        assert!(matches!(
            Target::parse("redis://h:1/x"),
            Err(TargetError::Db(_))
        ));
        assert_eq!(
            Target::parse("redis://u:%zz@h:1"),
            Err(TargetError::Encoding)
        );
        assert!(matches!(
            Target::parse("redis+cluster://a:1,,b:2"),
            Err(TargetError::NoHost(_))
        ));
    }

    #[test]
    fn errors_never_show_a_password() {
        let e = Target::parse("redis://u:hunter2@a:1,b:2").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn standalone_urls_wait_for_no_replica_by_default() {
        assert_eq!(parse("h:1").default_wait_replicas(), 0);
        assert_eq!(parse("redis+cluster://h:1").default_wait_replicas(), 1);
    }
}
