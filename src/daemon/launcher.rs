//! The one way the daemon starts a child process on this machine: `rush train`, `rush infer` and, once they exist,
//! code sessions all start through [`spawn`], so each gets the same guarantees.
//!
//! - **It dies with the daemon**: a parent-death signal (SIGKILL), set between fork and exec, and a check that the
//!   daemon did not die before it was set.
//! - **Its own process group**: a Ctrl-C in the daemon's terminal reaches the daemon, which stops children cleanly, and
//!   a stop reaches the child and everything it started ([`signal_group`]).
//! - **Its slot's device only**: `CUDA_VISIBLE_DEVICES` is the slot's GPU, or empty on a CPU slot.
//! - **Nothing of the home**: the environment loses `RUSH_HOME`, `RUSH_URL` and `RUSH_TOKEN`; a child knows the folders
//!   on its command line, nothing else. It gains `RUSH_PROGRESS_EVENTS=1`: the daemon follows its events live, so it
//!   reports its progress as events too (`core::event::PROGRESS_EVENTS_ENV`).
//! - **Known again after a restart**: its [`ChildId`] (pid and start time) comes back for the caller to record, so a
//!   restarted daemon finds a child that outlived it anyway and kills it ([`kill_stale`]); a recycled pid never
//!   matches, its start time differs.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::Stdio;

use crate::core::queue::SlotKind;

/// How to recognise a child process later: its pid and its start time in clock ticks after boot
/// (`/proc/<pid>/stat` field 22), so a recycled pid is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildId {
    pub pid: u32,
    pub start: Option<u64>,
}

/// A child to start.
#[derive(Debug)]
pub struct ChildSpec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The slot it runs in: its device.
    pub slot: SlotKind,
    /// Its working folder.
    pub dir: PathBuf,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

/// A started child and who it is.
#[derive(Debug)]
pub struct Spawned {
    /// Killed when dropped unreaped (a runner or a submission that is cancelled mid-wait).
    pub child: tokio::process::Child,
    pub id: ChildId,
}

/// Starts `spec` as described in the module's doc.
pub fn spawn(spec: ChildSpec) -> io::Result<Spawned> {
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args);
    match spec.slot {
        SlotKind::Gpu(i) => cmd.env("CUDA_VISIBLE_DEVICES", i.to_string()),
        SlotKind::Cpu(_) => cmd.env("CUDA_VISIBLE_DEVICES", ""),
    };
    cmd.env_remove("RUSH_HOME").env_remove("RUSH_URL").env_remove("RUSH_TOKEN");
    cmd.env(crate::core::event::PROGRESS_EVENTS_ENV, "1");
    cmd.current_dir(&spec.dir).stdin(Stdio::null()).stdout(spec.stdout).stderr(spec.stderr);
    cmd.kill_on_drop(true);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, setpgid, _exit) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Die with the daemon (the signal fires when the spawning thread ends; tokio's worker threads live as long
            // as the runtime, which is as long as the daemon).
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The daemon may have died between fork and prctl: then no signal would ever come.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    let pid = child.id().unwrap_or(0);
    Ok(Spawned { child, id: ChildId { pid, start: process_start(pid) } })
}

/// Sends `signal` to a child's process group (it leads it) and to the child itself, in case it left the group. The
/// caller must not have reaped the child yet, so the pid cannot have been recycled.
pub fn signal_group(pid: u32, signal: libc::c_int) {
    if pid == 0 {
        return;
    }
    // SAFETY: plain syscalls on a pid the caller has not reaped.
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// A process's start time in clock ticks after boot (`/proc/<pid>/stat` field 22), if it exists.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and parentheses, so fields are
/// counted after its last `)`.
fn parse_start(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is still the process recorded as `id` (same start time) and not a zombie.
pub fn is_same_process(id: ChildId) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", id.pid)) else {
        return false;
    };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_string));
    if state.as_deref() == Some("Z") {
        return false;
    }
    match (id.start, parse_start(&stat)) {
        (Some(want), Some(got)) => want == got,
        // Without a recorded start time we cannot be sure it is ours: leave it alone.
        _ => false,
    }
}

/// Kills a child left by an earlier daemon (found by pid and start time), and waits up to `patience` for it to go.
/// Returns whether such a process was found.
pub async fn kill_stale(id: ChildId, patience: std::time::Duration) -> bool {
    if id.pid == 0 || !is_same_process(id) {
        return false;
    }
    // The start time matched, so the pid is the stale child (or its group).
    signal_group(id.pid, libc::SIGKILL);
    let deadline = tokio::time::Instant::now() + patience;
    while is_same_process(id) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    true
}

/// A recorded pid and start time as the store keeps them (`INTEGER` columns), if they make a process identity.
pub fn recorded(pid: Option<i64>, start: Option<i64>) -> Option<ChildId> {
    let pid = u32::try_from(pid?).ok().filter(|&p| p > 0)?;
    Some(ChildId { pid, start: start.and_then(|s| u64::try_from(s).ok()) })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let line = "4242 (rush (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 12 0 987654 1000 200";
        assert_eq!(parse_start(line), Some(987654));
        assert_eq!(parse_start("garbage"), None);
        let me = process_start(std::process::id());
        assert!(me.is_some());
        assert!(is_same_process(ChildId { pid: std::process::id(), start: me }));
        assert!(!is_same_process(ChildId { pid: std::process::id(), start: me.map(|s| s + 1) }));
        assert!(!is_same_process(ChildId { pid: std::process::id(), start: None }));
        assert_eq!(recorded(Some(12), Some(34)), Some(ChildId { pid: 12, start: Some(34) }));
        assert_eq!(recorded(Some(0), Some(34)), None);
        assert_eq!(recorded(None, Some(34)), None);
        assert_eq!(recorded(Some(-3), None), None);
    }

    #[tokio::test]
    async fn a_stale_child_is_found_by_pid_and_start_time_and_killed() {
        let mut sleeper = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let id = ChildId { pid: sleeper.id(), start: process_start(sleeper.id()) };
        // A recycled pid (another start time) is left alone.
        let other = ChildId { pid: id.pid, start: id.start.map(|s| s + 7) };
        assert!(!kill_stale(other, std::time::Duration::from_secs(1)).await);
        assert!(is_same_process(id));
        assert!(kill_stale(id, std::time::Duration::from_secs(5)).await);
        assert!(!is_same_process(id));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(sleeper.wait().unwrap().signal(), Some(libc::SIGKILL));
        assert!(!kill_stale(id, std::time::Duration::from_secs(1)).await, "gone: nothing to kill");
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Runs [`launcher_host`] in a process of its own, playing the daemon: it starts `program` through [`spawn`] in
    /// `slot`, with `RUSH_HOME` and `RUSH_TOKEN` in its own environment, and writes the child's id to `pidfile`.
    fn host(program: &Path, slot: &str, out: &Path, pidfile: &Path) -> std::process::Child {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "daemon::launcher::tests::launcher_host", "--ignored", "--test-threads=1"])
            .env("RUSH_LAUNCHER_PROGRAM", program)
            .env("RUSH_LAUNCHER_SLOT", slot)
            .env("RUSH_LAUNCHER_OUT", out)
            .env("RUSH_LAUNCHER_PIDFILE", pidfile)
            .env("RUSH_HOME", "/home/of/the/daemon")
            .env("RUSH_TOKEN", "secret-token")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// The host side of the tests above; does nothing unless started by [`host`].
    #[tokio::test]
    #[ignore]
    async fn launcher_host() {
        let var = |name| std::env::var_os(name).map(PathBuf::from);
        let (Some(program), Some(out), Some(pidfile)) =
            (var("RUSH_LAUNCHER_PROGRAM"), var("RUSH_LAUNCHER_OUT"), var("RUSH_LAUNCHER_PIDFILE"))
        else {
            return;
        };
        let slot =
            if var("RUSH_LAUNCHER_SLOT") == Some(PathBuf::from("gpu:3")) { SlotKind::Gpu(3) } else { SlotKind::Cpu(0) };
        let dir = out.parent().unwrap().to_path_buf();
        let spawned = spawn(ChildSpec {
            program,
            args: vec!["infer".into(), "x y".into()],
            slot,
            dir,
            stdout: Stdio::from(std::fs::File::create(&out).unwrap()),
            stderr: Stdio::null(),
        })
        .unwrap();
        let line = format!("{} {}", spawned.id.pid, spawned.id.start.unwrap_or(0));
        crate::disk::write_atomic(&pidfile, line.as_bytes()).unwrap();
        let _ = spawned.child.wait_with_output().await;
    }

    fn wait_for_id(pidfile: &Path) -> ChildId {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(pidfile)
                && let Some((pid, start)) = text.trim().split_once(' ')
            {
                return ChildId { pid: pid.parse().unwrap(), start: start.parse().ok() };
            }
            assert!(std::time::Instant::now() < deadline, "the host never started its child");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    #[test]
    fn a_child_gets_its_slot_its_own_group_and_nothing_of_the_home() {
        let dir = tempfile::tempdir().unwrap();
        let reporter = script(
            dir.path(),
            "report",
            "echo \"args=$* cuda=[$CUDA_VISIBLE_DEVICES] home=[$RUSH_HOME] token=[$RUSH_TOKEN] pwd=$(pwd)\"\n\
             echo \"ids $$ $(cut -d' ' -f5 /proc/$$/stat)\"",
        );
        for (slot, cuda) in [("gpu:3", "[3]"), ("cpu", "[]")] {
            let (out, pidfile) = (dir.path().join(format!("{slot}.out")), dir.path().join(format!("{slot}.pid")));
            let status = host(&reporter, slot, &out, &pidfile).wait().unwrap();
            assert!(status.success());
            let id = wait_for_id(&pidfile);
            assert!(id.start.is_some_and(|s| s > 0), "the start time is known at once");
            let text = std::fs::read_to_string(&out).unwrap();
            assert!(text.contains("args=infer x y "), "{text}");
            assert!(text.contains(&format!("cuda={cuda} ")), "{text}");
            assert!(text.contains("home=[] token=[]"), "the home's variables are not passed on: {text}");
            assert!(text.contains(&format!("pwd={}", dir.path().display())), "{text}");
            let ids: Vec<&str> = text.lines().last().unwrap().split_whitespace().collect();
            assert_eq!(ids[1], id.pid.to_string(), "{text}");
            assert_eq!(ids[1], ids[2], "the child leads its own process group: {text}");
        }
    }

    #[test]
    fn a_child_dies_with_the_daemon_that_started_it() {
        let dir = tempfile::tempdir().unwrap();
        let sleeper = script(dir.path(), "sleeper", "exec sleep 60");
        let pidfile = dir.path().join("child.pid");
        let mut daemon = host(&sleeper, "cpu", &dir.path().join("out"), &pidfile);
        let child = wait_for_id(&pidfile);
        assert!(is_same_process(child));
        daemon.kill().unwrap();
        daemon.wait().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while is_same_process(child) {
            assert!(std::time::Instant::now() < deadline, "the child outlived its killed daemon");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
