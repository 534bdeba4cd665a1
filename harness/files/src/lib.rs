//! Writing output files so that nothing is lost: every file (and folder) the
//! `tollgate` command writes goes through here.
//!
//! [`AtomicFile`] writes a temporary file beside its target (same folder, so
//! the same file system) named `.<name>.tollgate-<pid>-<n>.tmp`, and
//! [`AtomicFile::commit`] flushes it to disk and renames it over the target.
//! Until then the target is untouched: a run that fails, or is interrupted,
//! leaves the earlier file as it was, never a half-written one. Reading a file
//! and writing the same path works: the reader keeps the original open while
//! the new content goes to the temporary file. Dropping an [`AtomicFile`]
//! without committing removes the temporary file. [`AtomicDir`] does the same
//! for a folder (the OCI image layouts of `tollgate package`).
//!
//! Signals: by default SIGINT (Ctrl-C) and SIGTERM end the process without
//! running destructors, which leaves the target untouched but the temporary
//! file behind. [`cleanup_on_signals`] (the `tollgate` binary calls it first
//! thing) installs a handler that removes the temporary files still pending
//! and then ends the process by the same signal with its default action, so
//! the exit status is what it was without the handler. A command that stops
//! on Ctrl-C by design (`tollgate record`) asks for the first signal with
//! [`stop_on_signal`] and polls [`stop_requested`]; a second signal ends the
//! process as above. Only SIGKILL (or a power loss before the rename) can
//! leave a `.tollgate-*.tmp` file behind; it is never mistaken for output.
//! Child processes that must not outlive the command (the Envoys of
//! `tollgate envoy` and `record`) are named with [`kill_child_on_signal`]:
//! the handler kills them before the process ends, since their owners'
//! `Drop` does not run then.
//!
//! Reading what the user hands the harness is the other half ([`input`]):
//! regular files only, every read capped, YAML nesting bounded before it is
//! parsed; shared by the readers of recordings and suites (`tollgate-traffic`)
//! and of manifests (`tollgate-ship`).
//!
//! Architecture invariant: this crate holds the only process-wide state of
//! the harness (the lists of pending temporary files and of children to
//! kill, read by the signal thread, and the input cap the `tollgate` command sets from
//! `--max-input-bytes`); guests never see it.

pub mod input;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Temporary files and folders not yet committed nor dropped.
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// Child processes to kill when a signal ends this one.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// Distinguishes the temporary files of one process.
static COUNTER: AtomicU64 = AtomicU64::new(0);
/// Set by the first SIGINT/SIGTERM when [`stop_on_signal`] asked for it.
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);
/// Whether the first signal only requests a stop.
static STOP_ON_SIGNAL: AtomicBool = AtomicBool::new(false);

fn pending() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

fn register(p: &Path) {
    pending().push(p.to_path_buf());
}

fn unregister(p: &Path) {
    pending().retain(|x| x != p);
}

/// The path to write when the user names `target`: the file a symbolic link
/// points to (the link stays a link), else `target` itself.
fn resolve(target: &Path) -> PathBuf {
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf())
        }
        _ => target.to_path_buf(),
    }
}

/// A temporary name beside `target`: `.<name>.tollgate-<pid>-<n>.tmp`.
fn temp_beside(target: &Path) -> io::Result<PathBuf> {
    let name = target.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file name", target.display()),
        )
    })?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let temp = format!(
        ".{}.tollgate-{}-{n}.tmp",
        name.to_string_lossy(),
        std::process::id()
    );
    Ok(match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(temp),
        _ => PathBuf::from(temp),
    })
}

/// Makes the rename durable (best effort: not every file system syncs folders).
fn sync_parent(target: &Path) {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A file written beside its target and renamed over it by [`commit`](Self::commit).
#[derive(Debug)]
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    file: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `target` (the file a symbolic link points to, when it is one).
    pub fn create(target: impl AsRef<Path>) -> io::Result<AtomicFile> {
        let target = resolve(target.as_ref());
        let temp = temp_beside(&target)?;
        // Registered before it exists, so a signal never misses it.
        register(&temp);
        let file = match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(f) => f,
            Err(e) => {
                unregister(&temp);
                return Err(e);
            }
        };
        // The new file keeps the permissions of the one it replaces.
        if let Ok(m) = std::fs::metadata(&target) {
            let _ = file.set_permissions(m.permissions());
        }
        Ok(AtomicFile {
            target,
            temp,
            file: Some(BufWriter::new(file)),
        })
    }

    /// The file being replaced.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes everything to disk and renames the temporary file over the target.
    pub fn commit(self) -> io::Result<()> {
        let target = self.target.clone();
        self.commit_as(&target)
    }

    /// As [`commit`](Self::commit), to another path in the same folder (what
    /// `tollgate record` does with a recording it could not finish).
    pub fn commit_as(mut self, path: &Path) -> io::Result<()> {
        let result = self.finish_to(path);
        if result.is_err() {
            let _ = std::fs::remove_file(&self.temp);
        }
        unregister(&self.temp);
        result
    }

    fn finish_to(&mut self, path: &Path) -> io::Result<()> {
        let Some(w) = self.file.take() else {
            return Err(io::Error::other("already committed"));
        };
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.temp, path)?;
        sync_parent(path);
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("already committed")),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.write_all(buf),
            None => Err(io::Error::other("already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
            unregister(&self.temp);
        }
    }
}

/// Writes `bytes` to `target` atomically (see the module docs).
pub fn write(target: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> io::Result<()> {
    let mut f = AtomicFile::create(target)?;
    f.write_all(bytes.as_ref())?;
    f.commit()
}

/// A folder filled beside its target and swapped in by [`commit`](Self::commit).
#[derive(Debug)]
pub struct AtomicDir {
    target: PathBuf,
    temp: PathBuf,
    done: bool,
}

impl AtomicDir {
    /// Creates the (empty) temporary folder for `target`.
    pub fn create(target: impl AsRef<Path>) -> io::Result<AtomicDir> {
        let target = target.as_ref().to_path_buf();
        let temp = temp_beside(&target)?;
        register(&temp);
        if let Err(e) = std::fs::create_dir(&temp) {
            unregister(&temp);
            return Err(e);
        }
        Ok(AtomicDir {
            target,
            temp,
            done: false,
        })
    }

    /// Where to write the folder's content.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// Replaces the target folder (if any) with the new one. A folder cannot
    /// be renamed over a non-empty one, so the old folder is first renamed
    /// aside and removed after the swap (put back if the swap fails).
    pub fn commit(mut self) -> io::Result<()> {
        self.done = true;
        let result = self.swap();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&self.temp);
        }
        unregister(&self.temp);
        result
    }

    fn swap(&self) -> io::Result<()> {
        let old = match std::fs::symlink_metadata(&self.target) {
            Ok(_) => {
                let old = temp_beside(&self.target)?;
                std::fs::rename(&self.target, &old)?;
                Some(old)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Err(e) = std::fs::rename(&self.temp, &self.target) {
            if let Some(old) = &old {
                let _ = std::fs::rename(old, &self.target);
            }
            return Err(e);
        }
        sync_parent(&self.target);
        if let Some(old) = old {
            let m = std::fs::symlink_metadata(&old)?;
            if m.is_dir() {
                std::fs::remove_dir_all(&old)?;
            } else {
                std::fs::remove_file(&old)?;
            }
        }
        Ok(())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.temp);
            unregister(&self.temp);
        }
    }
}

/// Removes every temporary file and folder not yet committed (the signal
/// thread calls it before the process ends).
fn remove_pending() {
    for p in pending().drain(..) {
        let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir_all(&p));
    }
}

fn children() -> std::sync::MutexGuard<'static, Vec<u32>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Asks that the child process `pid` be killed when a signal ends this
/// process (its owner's `Drop`, which stops it otherwise, does not run then).
pub fn kill_child_on_signal(pid: u32) {
    children().push(pid);
}

/// Asks that the scratch file or folder `path` be removed when a signal ends
/// this process (for folders a command removes itself on success).
pub fn remove_on_signal(path: &Path) {
    register(path);
}

/// Forgets `path` (see [`remove_on_signal`]): its owner removed it, or keeps it.
pub fn keep_on_signal(path: &Path) {
    unregister(path);
}

/// Forgets the child `pid`: its owner stops it now. Call it before reaping
/// the child, so that a reused pid is never killed.
pub fn forget_child(pid: u32) {
    children().retain(|&c| c != pid);
}

/// Ends the process now with `code`, as tidily as a signal would (the
/// handler's work): kills the children named by [`kill_child_on_signal`] and
/// removes the pending temporary files, whose owners' `Drop` does not run.
/// For the `tollgate` command when its standard output is closed under it.
pub fn exit(code: i32) -> ! {
    for pid in children().drain(..) {
        signals::kill(pid);
    }
    remove_pending();
    std::process::exit(code)
}

/// Makes the first SIGINT or SIGTERM set [`stop_requested`] instead of ending
/// the process (for commands that stop on Ctrl-C by design).
pub fn stop_on_signal() {
    STOP_ON_SIGNAL.store(true, Ordering::SeqCst);
}

/// Whether a stop was requested by a signal (see [`stop_on_signal`]).
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// What the signal thread does with a signal.
fn on_signal(signal: i32) {
    if STOP_ON_SIGNAL.load(Ordering::SeqCst) && !STOP_REQUESTED.swap(true, Ordering::SeqCst) {
        return;
    }
    for pid in children().drain(..) {
        signals::kill(pid);
    }
    remove_pending();
    signals::die_by(signal);
}

/// Installs the SIGINT / SIGTERM handler described in the module docs. Once
/// per process; later calls do nothing.
pub fn cleanup_on_signals() -> io::Result<()> {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    signals::install(on_signal)?;
    let _ = INSTALLED.set(());
    Ok(())
}

#[cfg(unix)]
mod signals {
    //! The self-pipe: the handler only writes the signal number to a pipe
    //! (async-signal-safe); a thread reads it and does the real work.

    use std::io;
    use std::sync::atomic::{AtomicI32, Ordering};

    static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

    extern "C" fn handler(signal: libc::c_int) {
        let fd = PIPE_WRITE.load(Ordering::Relaxed);
        let byte = signal as u8;
        // SAFETY: `write` is async-signal-safe; `byte` lives for the call and
        // the length is 1. A full pipe or a closed fd only makes it fail,
        // which loses nothing that matters (a signal is already on its way).
        unsafe {
            libc::write(fd, (&byte as *const u8).cast(), 1);
        }
    }

    pub(super) fn install(on_signal: fn(i32)) -> io::Result<()> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two ints for `pipe2` to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let [read_fd, write_fd] = fds;
        PIPE_WRITE.store(write_fd, Ordering::SeqCst);
        std::thread::Builder::new()
            .name("tollgate-signals".into())
            .spawn(move || {
                loop {
                    let mut byte = 0u8;
                    // SAFETY: reads at most one byte into `byte`, which is
                    // valid for writes; `read_fd` is the pipe's read end,
                    // owned by this thread for the life of the process.
                    let n = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
                    if n == 1 {
                        on_signal(i32::from(byte));
                    } else if n < 0
                        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
                    {
                        continue;
                    } else {
                        return;
                    }
                }
            })?;
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: a zeroed `sigaction` is a valid empty one; the handler
            // is an `extern "C" fn(c_int)` that only calls `write`. SA_RESTART
            // keeps interrupted reads and writes of the main thread going.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = handler as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }

    /// Kills the child `pid` (SIGKILL, as `Child::kill`).
    pub(super) fn kill(pid: u32) {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: `kill` has no memory-safety preconditions; `pid` is a
            // child registered by its owner and not yet reaped, so the id
            // still names that child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }

    /// Ends the process by `signal` with its default action (the status a
    /// parent sees is "killed by SIGINT", as without the handler).
    pub(super) fn die_by(signal: i32) -> ! {
        // SAFETY: restoring the default action and raising a signal have no
        // memory-safety preconditions.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
        // Not reached for SIGINT/SIGTERM; the shell's convention otherwise.
        std::process::exit(128 + signal)
    }
}

#[cfg(not(unix))]
mod signals {
    //! No handler: the default action (temporary files may stay behind).
    pub(super) fn install(_: fn(i32)) -> std::io::Result<()> {
        Ok(())
    }
    pub(super) fn kill(_: u32) {}
    pub(super) fn die_by(signal: i32) -> ! {
        std::process::exit(128 + signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tollgate-atomic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_target_changes_only_on_commit_and_a_dropped_write_leaves_nothing() {
        let d = dir("file");
        let target = d.join("out.jsonl");
        std::fs::write(&target, b"earlier").expect("seed");
        let mut f = AtomicFile::create(&target).expect("create");
        f.write_all(b"new content").expect("write");
        f.flush().expect("flush");
        assert_eq!(std::fs::read(&target).expect("read"), b"earlier");
        assert_eq!(names(&d).len(), 2, "temp file beside the target");
        drop(f);
        assert_eq!(std::fs::read(&target).expect("read"), b"earlier");
        assert_eq!(names(&d), ["out.jsonl"]);

        let mut f = AtomicFile::create(&target).expect("create");
        f.write_all(b"new content").expect("write");
        f.commit().expect("commit");
        assert_eq!(std::fs::read(&target).expect("read"), b"new content");
        assert_eq!(names(&d), ["out.jsonl"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_symbolic_link_stays_a_link_and_permissions_are_kept() {
        use std::os::unix::fs::PermissionsExt;
        let d = dir("link");
        let real = d.join("real.har");
        std::fs::write(&real, b"old").expect("seed");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let link = d.join("link.har");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        write(&link, b"new").expect("write");
        assert!(
            std::fs::symlink_metadata(&link)
                .expect("meta")
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&real).expect("read"), b"new");
        let mode = std::fs::metadata(&real).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_folder_is_swapped_whole() {
        let d = dir("dir");
        let target = d.join("oci");
        std::fs::create_dir_all(target.join("blobs")).expect("seed");
        std::fs::write(target.join("blobs/old"), b"x").expect("seed");
        let new = AtomicDir::create(&target).expect("create");
        std::fs::write(new.path().join("index.json"), b"{}").expect("write");
        assert!(target.join("blobs/old").exists(), "untouched until commit");
        new.commit().expect("commit");
        assert_eq!(names(&target), ["index.json"]);
        assert_eq!(names(&d), ["oci"]);

        let dropped = AtomicDir::create(&target).expect("create");
        std::fs::write(dropped.path().join("half"), b"x").expect("write");
        drop(dropped);
        assert_eq!(names(&d), ["oci"]);
        assert_eq!(names(&target), ["index.json"]);
    }
}
