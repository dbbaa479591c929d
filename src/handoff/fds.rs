//! The one place Cantila handles file descriptors by number: it takes ownership of the
//! descriptors systemd or the replaced process passed at exec, and keeps the listening
//! sockets open across the exec of the next process in a hand-off.
//!
//! Both need `unsafe` (the crate denies it everywhere else): Rust's I/O safety cannot know
//! that a number in the environment names a descriptor nobody else owns, and clearing
//! close-on-exec in the child only (never in this process, where any other child started
//! meanwhile would inherit the sockets) must run between fork and exec.

#![allow(unsafe_code)]

use std::{
    io,
    os::fd::{FromRawFd, OwnedFd, RawFd},
};

/// Takes ownership of a descriptor this process inherited at exec, and marks it
/// close-on-exec so that no other child inherits it.
///
/// Callers adopt each number once (`passed` refuses a number given twice) and before any
/// other code could have been handed the same number.
pub(super) fn adopt(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is stdin, stdout or stderr"),
        ));
    }
    // SAFETY: F_GETFD only reads the flags of a descriptor number; a closed one answers
    // EBADF, and nothing is changed.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("descriptor {fd} was not passed open: {err}"),
        ));
    }
    // SAFETY: the descriptor is open (checked above) and was passed to this process at
    // exec for exactly this use; no code in this process opened it, so no other owner
    // exists, and the caller adopts each number once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC)?;
    Ok(owned)
}

/// Makes `fds` survive the exec of `command`'s program, in that child only.
pub(super) fn keep_across_exec(command: &mut tokio::process::Command, fds: Vec<RawFd>) {
    let clear_cloexec = move || {
        for &fd in &fds {
            // SAFETY: F_SETFD on a descriptor number changes only its close-on-exec flag,
            // in the child's own copy of the descriptor table.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec; it only calls fcntl, which
    // is async-signal-safe, and neither allocates nor takes a lock (the Vec was built in
    // the parent; `last_os_error` reads errno).
    unsafe {
        command.pre_exec(clear_cloexec);
    }
}
