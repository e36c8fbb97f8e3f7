//! Starting the command to record, held before exec until probes are ready,
//! so that not a single sample of its start is missed.
//!
//! `std::process::Command::spawn` waits for the exec, so it cannot hold a
//! child before exec; this uses fork/execvp directly.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::{Error, Result};

/// A child process waiting, before exec, for [`HeldChild::release`].
#[derive(Debug)]
pub struct HeldChild {
    pid: u32,
    command: String,
    gate: OwnedFd,
    exec_status: OwnedFd,
}

fn pipe(command: &str) -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        let source = std::io::Error::last_os_error();
        return Err(Error::Spawn { command: command.to_owned(), source });
    }
    // SAFETY: pipe2 succeeded, so both are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The environment for the child: ours with `extra` set; `LD_PRELOAD` is
/// prepended to an existing value rather than replacing it.
fn child_env(extra: &[(String, String)]) -> Vec<CString> {
    let mut vars: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os().collect();
    for (k, v) in extra {
        match vars.iter_mut().find(|(name, _)| name == k.as_str()) {
            Some((_, old)) if k == "LD_PRELOAD" && !old.is_empty() => {
                let mut joined = std::ffi::OsString::from(v);
                joined.push(":");
                joined.push(&*old);
                *old = joined;
            }
            Some((_, old)) => *old = v.into(),
            None => vars.push((k.into(), v.into())),
        }
    }
    vars.into_iter()
        .filter_map(|(k, v)| {
            use std::os::unix::ffi::OsStrExt;
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect()
}

/// Starts `argv` with `env` added to the environment, stopped just before exec.
pub fn spawn_held(argv: &[String], env: &[(String, String)]) -> Result<HeldChild> {
    let command = argv.join(" ");
    let invalid = |msg: &str| Error::Spawn {
        command: command.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, msg.to_owned()),
    };
    if argv.is_empty() {
        return Err(invalid("empty command"));
    }
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| invalid("argument contains a NUL byte")))
        .collect::<Result<_>>()?;
    let mut argp: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argp.push(std::ptr::null());
    let envs = child_env(env);
    let mut envp: Vec<*const libc::c_char> = envs.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let (gate_read, gate_write) = pipe(&command)?;
    let (status_read, status_write) = pipe(&command)?;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: after fork the child only calls async-signal-safe functions
    // (close, sigaction, sigprocmask, prctl, getppid, read, execvpe's execve,
    // write, _exit) on memory prepared before the fork; it never returns into
    // Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        let source = std::io::Error::last_os_error();
        return Err(Error::Spawn { command, source });
    }
    if pid == 0 {
        // SAFETY: see above; all pointers stay valid until execvpe or _exit.
        unsafe {
            held_child_waits(parent, gate_read.as_raw_fd(), gate_write.as_raw_fd());
            libc::execvpe(argp[0], argp.as_ptr(), envp.as_ptr());
            let errno = *libc::__errno_location();
            libc::write(status_write.as_raw_fd(), (&errno as *const i32).cast(), 4);
            libc::_exit(127);
        }
    }
    drop((gate_read, status_write));
    Ok(HeldChild { pid: pid as u32, command, gate: gate_write, exec_status: status_read })
}

/// In the forked child: waits for the gate, dying with profrec if profrec
/// dies first. The child drops its copy of the gate's write end (so profrec's
/// death closes the gate), asks for SIGKILL at profrec's death, and takes the
/// default action for every signal (not profrec's handlers, which a signal
/// would otherwise run in the child and leave it waiting).
///
/// # Safety
/// Only in the child of a fork, with descriptors of that fork's gate pipe.
unsafe fn held_child_waits(parent: libc::pid_t, gate_read: i32, gate_write: i32) {
    // SAFETY: async-signal-safe calls on our own descriptors and signal state.
    unsafe {
        libc::close(gate_write);
        for sig in 1..libc::SIGRTMIN() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != parent {
            libc::_exit(127); // profrec died before the death signal was set
        }
        let mut byte = 0u8;
        if libc::read(gate_read, (&mut byte as *mut u8).cast(), 1) != 1 {
            libc::_exit(127); // the gate closed without a release: profrec is gone
        }
        // Released: the command outlives profrec as it would have without it.
        libc::prctl(libc::PR_SET_PDEATHSIG, 0 as libc::c_ulong);
    }
}

impl HeldChild {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Kills the child without letting it exec (recording could not start).
    pub fn abort(self) {
        // SAFETY: signalling and reaping our own child.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGKILL);
            libc::waitpid(self.pid as i32, std::ptr::null_mut(), 0);
        }
    }

    /// Lets the child exec; fails if the exec failed (e.g. no such program).
    pub fn release(self) -> Result<RunningChild> {
        let one = 1u8;
        // SAFETY: writing one byte from a live local to a descriptor we own.
        unsafe { libc::write(self.gate.as_raw_fd(), (&one as *const u8).cast(), 1) };
        drop(self.gate);
        let mut errno = 0i32;
        // SAFETY: reading at most 4 bytes into a live local; the write end is
        // closed by exec (CLOEXEC), so this returns 0 once the exec succeeded.
        let n = unsafe { libc::read(self.exec_status.as_raw_fd(), (&mut errno as *mut i32).cast(), 4) };
        let child = RunningChild { pid: self.pid, status: None };
        if n == 4 {
            let mut child = child;
            let _ = child.try_wait();
            return Err(Error::Spawn {
                command: self.command,
                source: std::io::Error::from_raw_os_error(errno),
            });
        }
        Ok(child)
    }
}

/// A started child.
#[derive(Debug)]
pub struct RunningChild {
    pid: u32,
    status: Option<i32>,
}

impl RunningChild {
    /// Ends the child if it still runs: SIGTERM, then SIGKILL after `grace`;
    /// reaps it, so its status is known.
    pub fn terminate(&mut self, grace: std::time::Duration) {
        if self.try_wait().is_some() {
            return;
        }
        // SAFETY: signalling our own child, which has not been reaped.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let until = std::time::Instant::now() + grace;
        while std::time::Instant::now() < until {
            if self.try_wait().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut status = 0;
        // SAFETY: as above; waitpid with a valid status pointer.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGKILL);
            libc::waitpid(self.pid as i32, &mut status, 0);
        }
        self.status = Some(128 + libc::SIGKILL);
    }

    /// The exit code (128+signal when killed) once the child has ended.
    pub fn try_wait(&mut self) -> Option<i32> {
        if self.status.is_none() {
            let mut status = 0;
            // SAFETY: waitpid on our own child with a valid status pointer.
            let r = unsafe { libc::waitpid(self.pid as i32, &mut status, libc::WNOHANG) };
            if r == self.pid as i32 {
                self.status = Some(if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                });
            }
        }
        self.status
    }
}
