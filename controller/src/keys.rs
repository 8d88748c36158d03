//! Every Redis key and channel name the controller uses (DESIGN §4), built in this one place.
//!
//! Keys of one agent share the hash tag `{<gid>:<nid>}` and each routing list the tag of
//! `cmds_queue`, so the multi-key scripts stay within one Redis Cluster slot. Every script
//! touches the keys of one slot only (docs/protocol.md lists each key's slot); `job:<id>` and
//! `cmds_queue_<id>` are in different slots and never written by one script.

/// Incoming commands, pushed by clients with `LPUSH`.
pub const CMDS_QUEUE: &str = "cmds_queue";
/// Inputs that could not be routed, as `{"raw", "reason"}`.
pub const DEAD: &str = "cmds_queue:dead";
/// Sorted set of agents, score = last seen (ms).
pub const AGENTS: &str = "agents";
/// `"gid:nid"` → SHA-256 of the agent's token.
pub const AUTH_AGENTS: &str = "auth:agents";
/// Hash `"gid:nid"` → JSON list of the roles that agent's token grants (`jsacc token add --roles`).
pub const AUTH_ROLES: &str = "auth:roles";
/// Counter bumped by every `jsacc token add|revoke`: a controller that does not know a token
/// reads the tokens again only when it moved.
pub const AUTH_VERSION: &str = "auth:version";

/// Enrollment codes (`jsacc enroll create`): SHA-256 of a code → `{"uses", "gid", "nid",
/// "roles", "expires", "created"}`; kept until it expires, used up or not.
pub const AUTH_ENROLL: &str = "auth:enroll";

/// Hash gid → the highest node id enrollment has handed out in that grid (`HINCRBY`): it never
/// goes back, so a revoked node's identity (and the commands still queued for it) is never
/// given to a new machine.
pub const AUTH_ENROLL_NIDS: &str = "auth:enroll_nids";

/// Operator accounts: name → `{"role", "hash", "created"}`.
pub const AUTH_USERS: &str = "auth:users";

/// Operator token hash → account name.
pub const AUTH_USER_TOKENS: &str = "auth:user_tokens";

/// The audit trail: who changed what, when, from where.
pub const AUDIT: &str = "audit";
/// Pub/sub channel of job state changes.
pub const EVENTS: &str = "jsacc:events";
/// Set of controller instances that may own a routing list (recovery looks only at these).
pub const INSTANCES: &str = "{cmds_queue}:instances";

/// The `"gid:nid"` string that names an agent.
pub fn agent_id(gid: u64, nid: u64) -> String {
    format!("{gid}:{nid}")
}

/// `"gid:nid"` → (gid, nid); (0, 0) for what is not an agent id.
pub fn split_agent(agent: &str) -> (u64, u64) {
    let (g, n) = agent.split_once(':').unwrap_or(("0", "0"));
    (g.parse().unwrap_or(0), n.parse().unwrap_or(0))
}

pub fn results(job: &str) -> String {
    format!("cmds_queue_{job}")
}

/// The marks of the results appended to `cmds_queue_<id>`, in its slot: `{cmds_queue_<id>}`
/// hashes like `cmds_queue_<id>` itself. `None` for an id with a brace (refused at routing, but
/// answered): no key shares that list's slot by construction, so its answer is appended unmarked.
pub fn appended(job: &str) -> Option<String> {
    (!schemas::command::has_hash_tag_char(job)).then(|| format!("{{cmds_queue_{job}}}:appended"))
}

pub fn job(job: &str) -> String {
    format!("job:{job}")
}

/// The history of every job: a sorted set of job ids by creation time (ms).
pub const JOBS_ALL: &str = "jobs:all";

/// The history of the jobs sent to one agent ("gid:nid").
pub fn jobs_of_agent(agent_id: &str) -> String {
    format!("jobs:agent:{agent_id}")
}

/// The history of the jobs of one `args.domain`/`args.name`.
pub fn jobs_named(domain: &str, name: &str) -> String {
    format!("jobs:name:{domain}/{name}")
}

/// The live output of a job: a stream of the lines its processes print.
pub fn output(job: &str) -> String {
    format!("output:{job}")
}

/// Per agent, the last output batch appended to [`output`] (its `seq`), and the number of lines
/// kept; in the stream's cluster slot (its name is the hash tag).
pub fn output_marks(job: &str) -> String {
    format!("{{output:{job}}}:seq")
}

pub fn agent(agent_id: &str) -> String {
    format!("agent:{{{agent_id}}}")
}

pub fn agent_queue(agent_id: &str) -> String {
    format!("agent:{{{agent_id}}}:queue")
}

pub fn agent_delivered(agent_id: &str) -> String {
    format!("agent:{{{agent_id}}}:delivered")
}

/// The config-file jobs of an agent (`cfg:<gid>:<nid>:…`): sorted set of job ids, score = when
/// last seen (ms); it bounds how many one agent has (`admit_config_job.lua`).
pub fn agent_config_jobs(agent_id: &str) -> String {
    format!("agent:{{{agent_id}}}:config_jobs")
}

/// Lease deadlines of delivered, unacknowledged commands: sorted set of job ids, score = deadline (ms).
pub fn agent_leases(agent_id: &str) -> String {
    format!("agent:{{{agent_id}}}:leases")
}

/// Delivered, unacknowledged commands by job id (so an ack needs no scan of `delivered`).
pub fn agent_inflight(agent_id: &str) -> String {
    format!("agent:{{{agent_id}}}:inflight")
}

/// Commands whose `max_wait` ran out while they waited in the agent's queue: sorted set of job
/// ids, score = the queue position (see [`agent_popped`]) past which no copy of the command can
/// be left; `poll.lua` drops such a command instead of delivering it.
pub fn agent_expired(agent_id: &str) -> String {
    format!("agent:{{{agent_id}}}:expired")
}

/// Commands with a `max_wait` handed to the agent: sorted set of job ids, score = when handed
/// out plus the `max_wait` (ms, at least the deadline); trimmed a `result_ttl` after that.
pub fn agent_taken(agent_id: &str) -> String {
    format!("agent:{{{agent_id}}}:taken")
}

/// The position of the agent queue's consuming end: commands taken from it, less those put
/// back (a counter; reset when the queue is found empty).
pub fn agent_popped(agent_id: &str) -> String {
    format!("agent:{{{agent_id}}}:popped")
}

/// Stream of an agent's flushed stats batches (field `batch`: the batch JSON).
pub fn stats(agent_id: &str) -> String {
    format!("stats:{{{agent_id}}}")
}

/// Hash of an agent's latest aggregated values: metric key → JSON of its values.
pub fn stats_latest(agent_id: &str) -> String {
    format!("stats:{{{agent_id}}}:latest")
}

/// Sorted set of the SHA-1 of an agent's latest appended stats batches (score: the batch's
/// epoch), so a batch posted again after a lost answer is appended once.
pub fn stats_seen(agent_id: &str) -> String {
    format!("stats:{{{agent_id}}}:seen")
}

pub fn controller(instance: &str) -> String {
    format!("controller:{instance}")
}

pub fn routing(instance: &str) -> String {
    format!("{{cmds_queue}}:routing:{instance}")
}

/// Lock held while one instance recovers a dead instance's routing list.
pub fn recovering(instance: &str) -> String {
    format!("{{cmds_queue}}:recovering:{instance}")
}

/// Level ≥ 8 log messages and supervisor alerts of every agent (a stream).
pub const ALERTS: &str = "alerts";

/// The stream of a job's forwarded log messages.
pub fn log_stream(domain: &str, name: &str) -> String {
    format!("log.{domain}.{name}")
}

/// The high-water marks of a log stream (or `alerts`): field `"gid:nid"` → the largest message
/// id of that agent appended. Tagged with the stream's own name, so it shares the stream's slot.
pub fn stream_seq(stream: &str) -> String {
    format!("{{{stream}}}:seq")
}

/// Rollouts being driven (`rollout.rs`): member job id, score = when to look at it next (ms).
pub const ROLLOUTS: &str = "{cmds_queue}:rollouts";

/// Rollouts an instance is driving now (`lua/rollout_claim.lua`): member job id, score = when
/// the lease ends (ms), so another instance takes the rollout over if that one died.
pub const ROLLOUT_LEASES: &str = "{cmds_queue}:rollouts:leases";

/// Commands with `max_wait`: member `"<gid>:<nid>|<job id>"`, score = deadline (ms).
pub const DEADLINES: &str = "{cmds_queue}:deadlines";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_keys_share_a_hash_tag() {
        let a = agent_id(1, 5);
        assert_eq!(agent_queue(&a), "agent:{1:5}:queue");
        assert_eq!(agent_delivered(&a), "agent:{1:5}:delivered");
        assert_eq!(agent(&a), "agent:{1:5}");
        assert_eq!(stats(&a), "stats:{1:5}");
        assert_eq!(stats_latest(&a), "stats:{1:5}:latest");
        assert_eq!(stats_seen(&a), "stats:{1:5}:seen");
    }

    #[test]
    fn log_streams_and_their_marks() {
        let stream = log_stream("ops", "backup");
        assert_eq!(stream, "log.ops.backup");
        assert_eq!(stream_seq(&stream), "{log.ops.backup}:seq");
        assert_eq!(stream_seq(ALERTS), "{alerts}:seq");
    }

    #[test]
    fn a_result_list_and_its_marks_share_a_slot() {
        use redis::cluster_routing::Slot;
        let marks = appended("6f1c").expect("no brace");
        assert_eq!(marks, "{cmds_queue_6f1c}:appended");
        assert_eq!(Slot::for_key(&marks), Slot::for_key(results("6f1c")));
        assert_eq!(appended("a{b}"), None);
    }

    #[test]
    fn script_keys_share_their_slots() {
        use redis::cluster_routing::Slot;
        let a = agent_id(3, 14);
        for key in [
            agent_delivered(&a),
            agent_leases(&a),
            agent_inflight(&a),
            agent_expired(&a),
            agent_taken(&a),
            agent_popped(&a),
            agent(&a),
        ] {
            assert_eq!(Slot::for_key(&key), Slot::for_key(agent_queue(&a)), "{key}");
        }
        for key in [stats_latest(&a), stats_seen(&a)] {
            assert_eq!(Slot::for_key(&key), Slot::for_key(stats(&a)), "{key}");
        }
        for key in [
            routing("i"),
            recovering("i"),
            INSTANCES.into(),
            DEADLINES.into(),
            ROLLOUTS.into(),
            ROLLOUT_LEASES.into(),
        ] {
            assert_eq!(Slot::for_key(&key), Slot::for_key(CMDS_QUEUE), "{key}");
        }
        let stream = log_stream("ops", "backup");
        assert_eq!(Slot::for_key(stream_seq(&stream)), Slot::for_key(&stream));
        assert_eq!(Slot::for_key(stream_seq(ALERTS)), Slot::for_key(ALERTS));
    }

    #[test]
    fn routing_keys_share_the_queue_slot() {
        assert_eq!(routing("abc"), "{cmds_queue}:routing:abc");
        assert!(INSTANCES.starts_with("{cmds_queue}"));
    }
}
