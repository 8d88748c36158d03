use super::*;

fn launcher(dir: &Path) -> Launcher {
    Launcher {
        templates: Templates {
            agentroot: "/data".into(),
            root: "/opt/js".into(),
            tmp: "/tmp".into(),
        },
        python: "sh".into(),
        lua: "no-such-lua-interpreter".into(),
        jumpscripts_dir: dir.join("jumpscripts"),
        scripts_dir: dir.join("tmp"),
    }
}

fn exec(cmd: &str) -> ExecuteArgs {
    ExecuteArgs {
        cmd: Some(cmd.into()),
        ..Default::default()
    }
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jsagent-launch-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn template_vars_are_replaced() {
    let t = Templates {
        agentroot: "/data".into(),
        root: "/opt/js".into(),
        tmp: "/tmp".into(),
    };
    assert_eq!(
        t.apply("$agentroot/x:$root/y:$tmp/z"),
        "/data/x:/opt/js/y:/tmp/z"
    );
    assert_eq!(t.apply("no vars"), "no vars");
}

#[test]
fn names_are_found_on_path() {
    let l = launcher(Path::new("/nonexistent"));
    let launch = l.prepare("j", Program::Executable, &exec("sh")).unwrap();
    assert!(
        launch.program.is_absolute() && launch.program.ends_with("sh"),
        "{:?}",
        launch.program
    );
}

#[test]
fn missing_executables_are_named() {
    let l = launcher(Path::new("/nonexistent"));
    let err = l
        .prepare("j", Program::Executable, &exec("no-such-program-xyz"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "executable `no-such-program-xyz` not found on PATH"
    );
    let err = l
        .prepare("j", Program::Executable, &exec("/no/such/prog"))
        .unwrap_err();
    assert_eq!(err.to_string(), "executable not found: /no/such/prog");
}

#[test]
fn template_vars_apply_to_cmd_args_and_workingdir() {
    let l = Launcher {
        templates: Templates {
            agentroot: "/bin".into(),
            root: "/".into(),
            tmp: "/tmp".into(),
        },
        ..launcher(Path::new("/nonexistent"))
    };
    let args = ExecuteArgs {
        cmd: Some("$agentroot/sh".into()),
        args: vec!["$tmp/a".into(), "$root".into()],
        workingdir: Some("$tmp".into()),
        ..Default::default()
    };
    let launch = l.prepare("j", Program::Executable, &args).unwrap();
    assert_eq!(launch.program, PathBuf::from("/bin/sh"));
    assert_eq!(launch.args, ["/tmp/a", "/"]);
    assert_eq!(launch.workingdir, Some(PathBuf::from("/tmp")));
}

#[test]
fn a_missing_workingdir_is_named() {
    let args = ExecuteArgs {
        workingdir: Some("/no/such/dir".into()),
        ..exec("sh")
    };
    let err = launcher(Path::new("/x"))
        .prepare("j", Program::Executable, &args)
        .unwrap_err();
    assert_eq!(err.to_string(), "working directory not found: /no/such/dir");
}

#[test]
fn inline_scripts_are_written_and_removed() {
    let dir = temp("inline");
    let args = ExecuteArgs {
        script: Some("print(1)".into()),
        args: vec!["x".into()],
        ..Default::default()
    };
    let launch = launcher(&dir)
        .prepare("a/b", Program::Python, &args)
        .unwrap();
    let script = PathBuf::from(&launch.args[0]);
    assert_eq!(std::fs::read_to_string(&script).unwrap(), "print(1)");
    assert!(script.starts_with(dir.join("tmp")), "{script:?}");
    assert_eq!(launch.args[1], "x");
    drop(launch);
    assert!(!script.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn scripts_by_name_come_from_the_jumpscripts_dir() {
    let dir = temp("named");
    let l = launcher(&dir);
    let args = ExecuteArgs {
        domain: "ops".into(),
        name: "hello".into(),
        ..Default::default()
    };
    let err = l.prepare("j", Program::Python, &args).unwrap_err();
    assert!(
        matches!(err, LaunchError::ScriptNotFound(ref p) if p.ends_with("jumpscripts/ops/hello.py")),
        "{err}"
    );
    std::fs::create_dir_all(dir.join("jumpscripts/ops")).unwrap();
    std::fs::write(dir.join("jumpscripts/ops/hello.py"), "").unwrap();
    let launch = l.prepare("j", Program::Python, &args).unwrap();
    assert!(launch.args[0].ends_with("jumpscripts/ops/hello.py"));
    let sneaky = ExecuteArgs {
        domain: "..".into(),
        ..args
    };
    assert!(matches!(
        l.prepare("j", Program::Python, &sneaky),
        Err(LaunchError::BadScriptName { .. })
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_missing_interpreter_is_named() {
    let args = ExecuteArgs {
        script: Some("print(1)".into()),
        ..Default::default()
    };
    let err = launcher(Path::new("/x"))
        .prepare("j", Program::Lua, &args)
        .unwrap_err();
    assert!(
        err.to_string().contains("no-such-lua-interpreter") && err.to_string().contains("lua"),
        "{err}"
    );
}
