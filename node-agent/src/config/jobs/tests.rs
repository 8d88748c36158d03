use super::*;

fn tables(text: &str) -> Vec<toml::Table> {
    #[derive(serde::Deserialize)]
    struct File {
        job: Vec<toml::Table>,
    }
    toml::from_str::<File>(text).expect("valid TOML").job
}

fn jobs(text: &str) -> Result<Vec<ConfigJob>, String> {
    parse(&tables(text), 1, 5)
}

fn command(job: &ConfigJob) -> Value {
    serde_json::from_str(&job.raw).expect("JSON")
}

#[test]
fn a_recurring_table_becomes_an_execute_command_of_this_agent() {
    let jobs = jobs(
        r#"
        [[job]]
        id = "backup"
        cmd = "/usr/bin/rsync"
        args = ["-a", "/srv", "/backup"]
        every = 3600
        domain = "ops"
        name = "backup"
        max_time = 600
        max_restart = 2
        env = { RSYNC_RSH = "ssh" }
        workingdir = "$tmp"
        loglevels = "*"
        loglevels_db = "1-9"
        loglevels_ac = "8,9"
        queue = "disk"
        stats_interval = 5
        output = false
        data = "stdin text"
        "#,
    )
    .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].name.as_str(), jobs[0].id.as_str()),
        ("backup", "cfg:1:5:backup")
    );
    let c = command(&jobs[0]);
    assert_eq!((c["gid"].as_u64(), c["nid"].as_u64()), (Some(1), Some(5)));
    assert_eq!(
        (c["cmd"].as_str(), c["data"].as_str()),
        (Some("execute"), Some("stdin text"))
    );
    let a = &c["args"];
    assert_eq!(a["cmd"], "/usr/bin/rsync");
    assert_eq!(a["args"], serde_json::json!(["-a", "/srv", "/backup"]));
    assert_eq!(
        (a["recurring_period"].as_u64(), a["max_time"].as_i64()),
        (Some(3600), Some(600))
    );
    assert_eq!(a["env"]["RSYNC_RSH"], "ssh");
    assert_eq!(
        (a["queue"].as_str(), a["output"].as_bool()),
        (Some("disk"), Some(false))
    );
}

#[test]
fn a_table_without_a_schedule_is_a_daemon() {
    let jobs = jobs("[[job]]\nid = \"web\"\ncmd = \"/usr/bin/httpd\"\n").unwrap();
    let c = command(&jobs[0]);
    assert_eq!(c["args"]["max_time"], -1);
    assert!(c["args"].get("recurring_period").is_none());
    assert!(c.get("data").is_none());
}

#[test]
fn scripts_take_type_or_kind() {
    let jobs = jobs(
        r#"
        [[job]]
        id = "py"
        type = "execute_js_py"
        script = "print(1)"
        every = 60
        [[job]]
        id = "lua"
        kind = "execute_js_lua"
        script = "print(1)"
        every = 60
        "#,
    )
    .unwrap();
    assert_eq!(command(&jobs[0])["cmd"], "execute_js_py");
    assert_eq!(command(&jobs[1])["cmd"], "execute_js_lua");
}

#[test]
fn the_same_table_always_makes_the_same_command() {
    let text = "[[job]]\nid = \"a\"\ncmd = \"x\"\nenv = { B = \"2\", A = \"1\" }\nevery = 5\n";
    assert_eq!(jobs(text).unwrap(), jobs(text).unwrap());
}

fn error(text: &str) -> String {
    jobs(text).unwrap_err()
}

#[test]
fn an_unknown_key_names_the_table_and_the_key() {
    let err = error(
        "[[job]]\nid = \"a\"\ncmd = \"x\"\n[[job]]\nid = \"backup\"\ncmd = \"x\"\nevry = 5\n",
    );
    assert!(
        err.starts_with("job[2] (id \"backup\"): unknown key `evry`"),
        "{err}"
    );
}

#[test]
fn a_missing_or_bad_id_is_named() {
    let err = error("[[job]]\ncmd = \"x\"\n");
    assert!(err.starts_with("job[1]: missing key `id`"), "{err}");
    for bad in ["", "a b", "a:b", "é", &"x".repeat(65)] {
        let err = error(&format!("[[job]]\nid = {bad:?}\ncmd = \"x\"\n"));
        assert!(
            err.contains("`id`") && err.contains("1 to 64"),
            "{bad}: {err}"
        );
    }
    let err = error("[[job]]\nid = 3\ncmd = \"x\"\n");
    assert!(err.contains("`id`: invalid type"), "{err}");
}

#[test]
fn a_duplicate_id_names_both_tables() {
    let err = error("[[job]]\nid = \"a\"\ncmd = \"x\"\n[[job]]\nid = \"a\"\ncmd = \"y\"\n");
    assert_eq!(err, "job[2] (id \"a\"): duplicate id (job[1] has it too)");
}

#[test]
fn every_with_cron_is_refused() {
    let err = error("[[job]]\nid = \"a\"\ncmd = \"x\"\nevery = 5\ncron = \"* * * * *\"\n");
    assert_eq!(err, "job[1] (id \"a\"): give `every` or `cron`, not both");
}

#[test]
fn schedules_and_max_time_must_agree() {
    let err = error("[[job]]\nid = \"a\"\ncmd = \"x\"\nevery = 0\n");
    assert!(err.contains("`every` must be at least 1 second"), "{err}");
    let err = error("[[job]]\nid = \"a\"\ncmd = \"x\"\nmax_time = 10\n");
    assert!(
        err.contains("`max_time` 10") && err.contains("daemon"),
        "{err}"
    );
    let err = error("[[job]]\nid = \"a\"\ncmd = \"x\"\nevery = 5\nmax_time = -1\n");
    assert!(err.contains("`max_time` -1"), "{err}");
    let err = error("[[job]]\nid = \"a\"\ncmd = \"x\"\nevery = -5\n");
    assert!(err.contains("`every`"), "{err}");
}

#[test]
fn wrong_types_name_the_key() {
    for (key, value) in [
        ("args", "\"-l\""),
        ("env", "[1]"),
        ("max_restart", "\"x\""),
        ("output", "1"),
        ("data", "3"),
    ] {
        let err = error(&format!(
            "[[job]]\nid = \"a\"\ncmd = \"x\"\n{key} = {value}\n"
        ));
        assert!(
            err.starts_with(&format!("job[1] (id \"a\"): `{key}`:")),
            "{err}"
        );
    }
}

#[test]
fn the_command_checks_of_routed_commands_apply() {
    let err = error("[[job]]\nid = \"a\"\nevery = 5\n");
    assert!(err.contains("missing `cmd`"), "{err}");
    let err = error("[[job]]\nid = \"a\"\ntype = \"execute_js_py\"\ncmd = \"x\"\n");
    assert!(err.contains("`cmd` is for execute"), "{err}");
    let err = error("[[job]]\nid = \"a\"\ncmd = \"x\"\nqueue = \"\"\n");
    assert!(
        err.starts_with("job[1] (id \"a\"):") && err.contains("`queue` is empty"),
        "{err}"
    );
    let err = error("[[job]]\nid = \"a\"\ncmd = \"x\"\ndomain = \"a{b}\"\n");
    assert!(err.contains("args.domain"), "{err}");
    let err = error("[[job]]\nid = \"a\"\ntype = \"shell\"\ncmd = \"x\"\n");
    assert!(err.contains("`type` \"shell\" is not one of"), "{err}");
    let err = error("[[job]]\nid = \"a\"\ntype = \"execute\"\nkind = \"execute\"\ncmd = \"x\"\n");
    assert!(err.contains("not both"), "{err}");
}

#[test]
fn a_bad_cron_expression_is_refused_by_the_command_check() {
    let err = error("[[job]]\nid = \"a\"\ncmd = \"x\"\ncron = \"every monday\"\n");
    assert!(
        err.starts_with("job[1] (id \"a\"):") && err.contains("cron"),
        "{err}"
    );
}

#[test]
fn sizes_are_bounded() {
    let big = "x".repeat(MAX_COMMAND);
    let err = error(&format!(
        "[[job]]\nid = \"a\"\ncmd = \"x\"\ndata = {big:?}\n"
    ));
    assert!(err.contains("at most 65536"), "{err}");
    let domain = "d".repeat(schemas::config_job::MAX_KEY_PART + 1);
    let err = error(&format!(
        "[[job]]\nid = \"a\"\ncmd = \"x\"\ndomain = {domain:?}\n"
    ));
    assert!(
        err.contains("`domain` takes 201 bytes (at most 200)"),
        "{err}"
    );
    let many = "[[job]]\nid = \"a\"\ncmd = \"x\"\n".repeat(MAX_JOBS + 1);
    let err = error(&many);
    assert!(err.contains("at most 256"), "{err}");
}

#[test]
fn config_job_ids_are_told_apart() {
    assert_eq!(job_id(3, 14, "x"), "cfg:3:14:x");
    assert!(is_config_job("cfg:3:14:x") && !is_config_job("6f1c"));
    // The controller reads the owner back from every id the agent builds.
    assert_eq!(
        schemas::config_job::owner(&job_id(3, 14, "a.b_c-9")),
        Some((3, 14))
    );
}
