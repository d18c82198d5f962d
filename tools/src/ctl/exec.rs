//! The commands etcdctl runs for the user — `watch … -- cmd` per event, `lock name cmd` under
//! the lock — with the environment it adds, its standard streams shared, and Go's os/exec texts
//! for a failure (`exit status 1`, `signal: killed`, `exec: "x": executable file not found in
//! $PATH`). Run on tokio's process support, so that the runtime's other tasks (a session's
//! keep-alive) go on while the command runs.

/// Runs `argv` with `env` added; `Err` is Go's text of what went wrong.
pub async fn run(argv: &[String], env: &[(&str, String)]) -> Result<(), String> {
    let status = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .status()
        .await;
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(exit_text(s)),
        Err(e) => Err(spawn_text(&argv[0], &e)),
    }
}

/// Go's ExitError text.
fn exit_text(s: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("signal: {}", signal_name(sig)),
        (None, None) => s.to_string(),
    }
}

/// Go's syscall.Signal names for the common signals.
fn signal_name(sig: i32) -> String {
    match sig {
        1 => "hangup".into(),
        2 => "interrupt".into(),
        3 => "quit".into(),
        4 => "illegal instruction".into(),
        6 => "aborted".into(),
        9 => "killed".into(),
        11 => "segmentation fault".into(),
        13 => "broken pipe".into(),
        14 => "alarm clock".into(),
        15 => "terminated".into(),
        n => format!("signal {n}"),
    }
}

/// Go's texts for a command that could not start.
fn spawn_text(program: &str, e: &std::io::Error) -> String {
    let quoted = super::print::go_quote(program.as_bytes());
    match e.kind() {
        std::io::ErrorKind::NotFound if !program.contains('/') => {
            format!("exec: {quoted}: executable file not found in $PATH")
        }
        std::io::ErrorKind::NotFound => format!("fork/exec {program}: no such file or directory"),
        std::io::ErrorKind::PermissionDenied => format!("fork/exec {program}: permission denied"),
        _ => format!("fork/exec {program}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn failures_read_as_go_writes_them() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let run = |argv: &[&str]| {
            let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
            rt.block_on(super::run(&argv, &[]))
        };
        assert_eq!(run(&["true"]), Ok(()));
        assert_eq!(run(&["false"]), Err("exit status 1".into()));
        assert_eq!(
            run(&["sh", "-c", "kill -9 $$"]),
            Err("signal: killed".into())
        );
        assert_eq!(
            run(&["no-such-program-here"]),
            Err("exec: \"no-such-program-here\": executable file not found in $PATH".into())
        );
    }
}
