//! Durable, thread-safe appends to one job log.
//!
//! * Opening takes an exclusive `flock` on the log; a second appender, in
//!   this or any process, is refused with an error naming the holder's pid
//!   (read from `/proc/locks`).
//! * Opening cuts a torn tail (a last line without `\n`, left by a crash)
//!   back to the last complete line and syncs, so that the next record can
//!   never be glued onto a fragment.
//! * [`Appender::append`] queues bytes in memory (written once the queue
//!   passes 1 MiB, synced by the next [`Appender::sync`]);
//!   [`Appender::append_durable`] writes the queue plus its own bytes and
//!   returns only once they are on disk. Concurrent durable appends share one
//!   `fdatasync` (group commit): every write gets a ticket, a sync covers
//!   every ticket handed out before it started, and a caller whose ticket is
//!   already covered returns at once; otherwise one caller syncs while the
//!   others wait for it.
//! * The bytes of one call are written with one `write_all` under the lock,
//!   so they are never interleaved with another call's. A failed write is
//!   cut back off the file (so no fragment is left) and the call has no
//!   effect. A failed `fdatasync` is not retried: the kernel may already have
//!   dropped the dirty pages, so the appender refuses all further work rather
//!   than acknowledge data that may be lost.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Queued bytes are written once the queue holds this much.
pub const FLUSH_AT: usize = 1 << 20;

/// The log is locked by another appender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    pub path: PathBuf,
    /// The holder's pid, when `/proc/locks` tells.
    pub pid: Option<u32>,
}

impl fmt::Display for Locked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match self.pid {
            Some(pid) if pid == std::process::id() => {
                write!(
                    f,
                    "job log {path} is already open for appending in this process (pid {pid})"
                )
            }
            Some(pid) => write!(
                f,
                "job log {path} is in use by another iabulk process (pid {pid})"
            ),
            None => write!(f, "job log {path} is in use by another process"),
        }
    }
}

impl std::error::Error for Locked {}

/// The appender was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("I/O operation on closed job log")
    }
}

impl std::error::Error for Closed {}

fn closed() -> io::Error {
    io::Error::other(Closed)
}

/// The appender refuses work after an earlier failure that may have lost
/// data (a failed `fdatasync`, or a failed write that could not be undone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The errno of the original failure.
    pub errno: i32,
    pub message: String,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

struct State {
    /// `None` once closed.
    file: Option<Arc<File>>,
    queue: Vec<u8>,
    /// Tickets handed out: one per completed write.
    written: u64,
    /// Every write with a ticket `<= synced` is on disk.
    synced: u64,
    /// A thread is in `fdatasync` right now.
    syncing: bool,
    /// Why the appender refuses all work (a failed sync or repair).
    broken: Option<(i32, String)>,
    /// `fdatasync` calls made (for tests and statistics).
    syncs: u64,
}

/// Durable, thread-safe appends to one job log. See the module docs.
pub struct Appender {
    path: PathBuf,
    repaired: u64,
    state: Mutex<State>,
    cv: Condvar,
}

impl fmt::Debug for Appender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Appender")
            .field("path", &self.path)
            .field("repaired", &self.repaired)
            .finish()
    }
}

fn flock_exclusive(file: &File) -> io::Result<bool> {
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// The pid holding an `flock` on the file, from `/proc/locks`.
pub fn lock_holder(file: &File) -> Option<u32> {
    let meta = file.metadata().ok()?;
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    let dev = meta.dev();
    parse_lock_holder(&text, libc::major(dev), libc::minor(dev), meta.ino())
}

/// Find the FLOCK holder of `major:minor:inode` in `/proc/locks` text, e.g.
/// `1: FLOCK  ADVISORY  WRITE 12345 fd:01:123456 0 EOF` (device numbers in
/// hex). Blocked waiters (`->`) are skipped. Some file systems (overlayfs)
/// report another device there than `stat` does, so when no line matches
/// the device, a single line matching the inode alone is taken.
pub fn parse_lock_holder(text: &str, major: u32, minor: u32, inode: u64) -> Option<u32> {
    let mut by_inode = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 || fields[1] != "FLOCK" {
            continue; // other lock kinds, or a "->" waiter line
        }
        let Ok(pid) = fields[4].parse::<u32>() else {
            continue;
        };
        let mut id = fields[5].split(':');
        let (Some(ma), Some(mi), Some(ino)) = (id.next(), id.next(), id.next()) else {
            continue;
        };
        let (Ok(ma), Ok(mi), Ok(ino)) = (
            u32::from_str_radix(ma, 16),
            u32::from_str_radix(mi, 16),
            ino.parse::<u64>(),
        ) else {
            continue;
        };
        if ino != inode {
            continue;
        }
        if ma == major && mi == minor {
            return Some(pid);
        }
        by_inode.push(pid);
    }
    by_inode.dedup();
    match by_inode.as_slice() {
        [pid] => Some(*pid),
        _ => None,
    }
}

/// Cut a last line without `\n` off the file; returns the bytes cut.
fn repair_tail(file: &File) -> io::Result<u64> {
    let size = file.metadata()?.len();
    if size == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, size - 1)?;
    if last[0] == b'\n' {
        return Ok(0);
    }
    let mut buf = vec![0u8; 64 << 10];
    let mut end = size - 1; // bytes before `end` are still to be searched
    let mut keep = 0;
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_exact_at(chunk, start)?;
        if let Some(nl) = memchr::memrchr(b'\n', chunk) {
            keep = start + nl as u64 + 1;
            break;
        }
        end = start;
    }
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(size - keep)
}

fn sync_dir_of(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

impl Appender {
    /// Open (creating it, mode 0644) and lock the log at `path`, and cut a
    /// torn tail.
    pub fn open(path: &Path) -> io::Result<Appender> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o644)
            .open(path)?;
        if !flock_exclusive(&file)? {
            let pid = lock_holder(&file);
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                Locked {
                    path: path.to_path_buf(),
                    pid,
                },
            ));
        }
        let repaired = repair_tail(&file)?;
        if !existed {
            // Make the new file's directory entry durable too.
            sync_dir_of(path)?;
        }
        Ok(Appender {
            path: path.to_path_buf(),
            repaired,
            state: Mutex::new(State {
                file: Some(Arc::new(file)),
                queue: Vec::new(),
                written: 0,
                synced: 0,
                syncing: false,
                broken: None,
                syncs: 0,
            }),
            cv: Condvar::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of torn tail cut off when the log was opened.
    pub fn repaired_bytes(&self) -> u64 {
        self.repaired
    }

    /// `fdatasync` calls made so far.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    pub fn is_closed(&self) -> bool {
        self.lock().file.is_none()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (every
        // step below completes or is undone before anything can panic).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn broken_error(&self, errno: i32, why: &str) -> io::Error {
        let kind = io::Error::from_raw_os_error(errno).kind();
        io::Error::new(
            kind,
            Refused {
                errno,
                message: format!(
                    "job log {} refuses appends after an earlier failure: {why}",
                    self.path.display()
                ),
            },
        )
    }

    fn check_usable(&self, st: &State) -> io::Result<()> {
        if st.file.is_none() {
            return Err(closed());
        }
        if let Some((errno, why)) = &st.broken {
            return Err(self.broken_error(*errno, why));
        }
        Ok(())
    }

    /// Write the queue. On failure the file is cut back to where it was and
    /// the queue back to `undo` bytes.
    fn write_queue(&self, st: &mut State, undo: usize) -> io::Result<()> {
        if st.queue.is_empty() {
            return Ok(());
        }
        let file = st.file.clone().ok_or_else(closed)?;
        let before = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                st.queue.truncate(undo);
                return Err(e);
            }
        };
        match (&*file).write_all(&st.queue) {
            Ok(()) => {
                st.queue.clear();
                st.written += 1;
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = file.set_len(before) {
                    st.broken = Some((
                        cut.raw_os_error().unwrap_or(libc::EIO),
                        format!("could not cut back a failed write ({e}): {cut}"),
                    ));
                }
                st.queue.truncate(undo);
                Err(e)
            }
        }
    }

    /// Wait until the write with `ticket` is on disk, syncing if nobody is.
    fn wait_synced<'a>(&'a self, mut st: MutexGuard<'a, State>, ticket: u64) -> io::Result<()> {
        loop {
            if st.synced >= ticket {
                return Ok(());
            }
            if let Some((errno, why)) = &st.broken {
                return Err(self.broken_error(*errno, why));
            }
            if st.syncing {
                st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let file = st.file.clone().ok_or_else(closed)?;
            st.syncing = true;
            st.syncs += 1;
            let target = st.written;
            drop(st);
            let result = file.sync_data();
            drop(file);
            st = self.lock();
            st.syncing = false;
            match result {
                Ok(()) => st.synced = st.synced.max(target),
                Err(e) => {
                    st.broken = Some((
                        e.raw_os_error().unwrap_or(libc::EIO),
                        format!("fdatasync failed: {e}"),
                    ))
                }
            }
            self.cv.notify_all();
        }
    }

    /// Queue whole lines; written in order, synced by the next `sync`.
    pub fn append(&self, data: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        self.check_usable(&st)?;
        let undo = st.queue.len();
        st.queue.extend_from_slice(data);
        if st.queue.len() >= FLUSH_AT {
            self.write_queue(&mut st, undo)?;
        }
        Ok(())
    }

    /// Write the queue and `data`, and return once they are on disk.
    pub fn append_durable(&self, data: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        self.check_usable(&st)?;
        let undo = st.queue.len();
        st.queue.extend_from_slice(data);
        self.write_queue(&mut st, undo)?;
        let ticket = st.written;
        self.wait_synced(st, ticket)
    }

    /// Write everything queued, without syncing: readers of the file see it
    /// at once; it is durable at the next `sync`.
    pub fn flush(&self) -> io::Result<()> {
        let mut st = self.lock();
        self.check_usable(&st)?;
        let keep = st.queue.len();
        self.write_queue(&mut st, keep)
    }

    /// Write everything queued and fdatasync.
    pub fn sync(&self) -> io::Result<()> {
        let mut st = self.lock();
        self.check_usable(&st)?;
        let keep = st.queue.len();
        self.write_queue(&mut st, keep)?;
        let ticket = st.written;
        self.wait_synced(st, ticket)
    }

    /// Sync, release the lock, close. Idempotent: closing a closed appender
    /// does nothing. The file is closed (and the lock released) even when the
    /// final sync fails; the failure is returned.
    pub fn close(&self) -> io::Result<()> {
        let mut st = self.lock();
        while st.syncing {
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let Some(file) = st.file.clone() else {
            return Ok(());
        };
        let result = self.check_usable(&st).and_then(|()| {
            let keep = st.queue.len();
            self.write_queue(&mut st, keep)?;
            if st.synced < st.written {
                st.syncs += 1;
                file.sync_data()?;
                st.synced = st.written;
            }
            Ok(())
        });
        drop(file);
        st.file = None; // the last reference: closes the fd, drops the flock
        st.queue = Vec::new();
        self.cv.notify_all();
        result
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    fn tmp() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        (dir, path)
    }

    #[test]
    fn creates_with_mode_0644_and_appends() {
        let (_d, path) = tmp();
        let a = Appender::open(&path).unwrap();
        assert_eq!(a.repaired_bytes(), 0);
        assert_eq!(
            std::fs::metadata(&path).unwrap().mode() & 0o777,
            0o644 & !umask()
        );
        a.append(b"one\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        a.append_durable(b"two\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\n");
        a.append(b"three\n").unwrap();
        a.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\nthree\n");
        a.sync().unwrap(); // nothing new: no second fdatasync needed
        assert_eq!(a.sync_count(), 2);
        a.append(b"four\n").unwrap();
        a.close().unwrap();
        a.close().unwrap();
        assert!(a.is_closed());
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\nthree\nfour\n");
        let err = a.append(b"x\n").unwrap_err();
        assert!(err.get_ref().unwrap().is::<Closed>());
        assert!(a.append_durable(b"x\n").is_err());
        assert!(a.sync().is_err());
    }

    fn umask() -> u32 {
        // SAFETY: umask only swaps a process-wide integer; restored at once.
        unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m
        }
    }

    #[test]
    fn big_queues_are_written_without_sync() {
        let (_d, path) = tmp();
        let a = Appender::open(&path).unwrap();
        let line = vec![b'x'; 1023];
        for _ in 0..1100 {
            a.append(&line).unwrap();
            a.append(b"\n").unwrap();
        }
        let on_disk = std::fs::metadata(&path).unwrap().len();
        assert!(on_disk >= FLUSH_AT as u64, "{on_disk}");
        assert_eq!(a.sync_count(), 0);
        a.close().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1100 * 1024);
    }

    #[test]
    fn flush_writes_the_queue_without_sync() {
        let (_d, path) = tmp();
        let a = Appender::open(&path).unwrap();
        a.append(b"one\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        a.flush().unwrap();
        a.flush().unwrap(); // nothing queued: nothing written twice
        assert_eq!(std::fs::read(&path).unwrap(), b"one\n");
        assert_eq!(a.sync_count(), 0);
        a.close().unwrap();
    }

    #[test]
    fn torn_tail_is_cut_on_open() {
        let (_d, path) = tmp();
        for (before, after) in [
            (&b""[..], &b""[..]),
            (b"a\n", b"a\n"),
            (b"a\nb\n", b"a\nb\n"),
            (b"a\nb\npartial", b"a\nb\n"),
            (b"partial", b""),
            (b"\n", b"\n"),
            (b"a\n  ", b"a\n"),
        ] {
            std::fs::write(&path, before).unwrap();
            let a = Appender::open(&path).unwrap();
            assert_eq!(a.repaired_bytes(), (before.len() - after.len()) as u64);
            assert_eq!(std::fs::read(&path).unwrap(), after);
            a.append_durable(b"next\n").unwrap();
            drop(a);
            let mut want = after.to_vec();
            want.extend_from_slice(b"next\n");
            assert_eq!(std::fs::read(&path).unwrap(), want);
        }
        // A tail longer than the search chunk, with and without a newline.
        let mut data = b"first\n".to_vec();
        data.extend(std::iter::repeat_n(b'y', 200_000));
        std::fs::write(&path, &data).unwrap();
        let a = Appender::open(&path).unwrap();
        assert_eq!(a.repaired_bytes(), 200_000);
        drop(a);
        assert_eq!(std::fs::read(&path).unwrap(), b"first\n");
        std::fs::write(&path, vec![b'z'; 200_000]).unwrap();
        assert_eq!(Appender::open(&path).unwrap().repaired_bytes(), 200_000);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn second_appender_in_this_process_is_refused() {
        let (_d, path) = tmp();
        let a = Appender::open(&path).unwrap();
        let err = Appender::open(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        let locked = err.get_ref().unwrap().downcast_ref::<Locked>().unwrap();
        assert_eq!(locked.pid, Some(std::process::id()));
        assert!(err
            .to_string()
            .contains(&format!("(pid {})", std::process::id())));
        assert!(err.to_string().contains(&path.display().to_string()));
        a.close().unwrap();
        // Closing released the lock.
        let b = Appender::open(&path).unwrap();
        drop(b);
        // So does dropping.
        Appender::open(&path).unwrap();
    }

    fn wait_for_flock(path: &Path, child: &Child) {
        let ino = std::fs::metadata(path).unwrap().ino();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
            let needle = format!(":{ino} ");
            if locks.lines().any(|l| {
                l.contains(" FLOCK ")
                    && l.contains(&needle)
                    && l.contains(&format!(" {} ", child.id()))
            }) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the child never took the lock");
    }

    #[test]
    fn another_process_holding_the_lock_is_named() {
        let (_d, path) = tmp();
        std::fs::write(&path, b"").unwrap();
        // flock(1) holds the lock (-o: not its shell) until the shell's read
        // sees its stdin closed.
        let Ok(mut child) = Command::new("flock")
            .arg("-o")
            .arg(&path)
            .args(["-c", "read x"])
            .stdin(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("flock(1) not available; skipped");
            return;
        };
        wait_for_flock(&path, &child);
        let err = Appender::open(&path).unwrap_err();
        drop(child.stdin.take());
        child.wait().unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "job log {} is in use by another iabulk process (pid {})",
                path.display(),
                child.id()
            )
        );
        // Once the holder is gone the log opens.
        Appender::open(&path).unwrap();
    }

    #[test]
    fn proc_locks_parsing() {
        let text = "\
1: POSIX  ADVISORY  WRITE 111 fd:01:42 0 EOF
2: FLOCK  ADVISORY  WRITE 222 fd:01:43 0 EOF
2: -> FLOCK  ADVISORY  WRITE 333 fd:01:42 0 EOF
3: FLOCK  ADVISORY  WRITE 444 fd:01:42 0 EOF
4: FLOCK  ADVISORY  WRITE 555 00:2f:42 0 EOF
5: OFDLCK ADVISORY  READ  -1 fd:01:42 0 EOF
garbage
";
        assert_eq!(parse_lock_holder(text, 0xfd, 1, 42), Some(444));
        assert_eq!(parse_lock_holder(text, 0, 0x2f, 42), Some(555));
        assert_eq!(parse_lock_holder(text, 0xfd, 1, 43), Some(222));
        // Device mismatch: the inode alone decides only when unambiguous.
        assert_eq!(parse_lock_holder(text, 9, 9, 43), Some(222));
        assert_eq!(parse_lock_holder(text, 9, 9, 42), None);
        assert_eq!(parse_lock_holder(text, 0xfd, 1, 7), None);
        assert_eq!(parse_lock_holder("", 0xfd, 1, 7), None);
    }

    #[test]
    fn locked_messages() {
        let p = PathBuf::from("/x/y.jsonl");
        let other = Locked {
            path: p.clone(),
            pid: Some(u32::MAX),
        };
        assert_eq!(
            other.to_string(),
            format!(
                "job log /x/y.jsonl is in use by another iabulk process (pid {})",
                u32::MAX
            )
        );
        let unknown = Locked { path: p, pid: None };
        assert_eq!(
            unknown.to_string(),
            "job log /x/y.jsonl is in use by another process"
        );
    }

    #[test]
    fn group_commit_from_many_threads() {
        let (_d, path) = tmp();
        let a = Arc::new(Appender::open(&path).unwrap());
        let threads = 16;
        let per_thread = 200;
        std::thread::scope(|s| {
            for t in 0..threads {
                let a = a.clone();
                s.spawn(move || {
                    for i in 0..per_thread {
                        // Lines of varying length, some bigger than a pipe
                        // buffer, two lines per call.
                        let pad = "p".repeat((i * 37 + t * 11) % 700);
                        let data = format!("{{\"t\":{t},\"i\":{i},\"pad\":\"{pad}\"}}\n{{\"t\":{t},\"i\":{i},\"second\":true}}\n");
                        if i % 5 == 0 {
                            a.append(data.as_bytes()).unwrap();
                        } else {
                            a.append_durable(data.as_bytes()).unwrap();
                        }
                    }
                });
            }
        });
        a.sync().unwrap();
        let syncs = a.sync_count();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), threads * per_thread * 2);
        let mut seen = HashSet::new();
        for pair in lines.chunks(2) {
            // The two lines of one call stay together and intact.
            assert!(
                crate::json::validate_value(pair[0].as_bytes()),
                "{}",
                pair[0]
            );
            assert!(pair[1].ends_with(",\"second\":true}"), "{}", pair[1]);
            let head = pair[1].trim_end_matches(",\"second\":true}");
            assert!(pair[0].starts_with(head), "{} / {}", pair[0], pair[1]);
            assert!(seen.insert(head.to_string()));
        }
        assert_eq!(seen.len(), threads * per_thread);
        // Durable calls: 16 * 160 = 2560; group commit shares syncs.
        assert!(syncs <= 2561, "{syncs}");
        eprintln!(
            "group commit: {} durable appends, {syncs} fdatasyncs",
            threads * 160
        );
    }

    #[test]
    fn a_write_already_covered_returns_without_syncing() {
        let (_d, path) = tmp();
        let a = Appender::open(&path).unwrap();
        a.append_durable(b"a\n").unwrap();
        assert_eq!(a.sync_count(), 1);
        // Nothing queued and nothing unsynced: no new fdatasync.
        a.sync().unwrap();
        assert_eq!(a.sync_count(), 1);
        a.close().unwrap();
        assert_eq!(a.sync_count(), 1);
    }

    #[test]
    fn close_while_others_append() {
        let (_d, path) = tmp();
        let a = Arc::new(Appender::open(&path).unwrap());
        std::thread::scope(|s| {
            for t in 0..8 {
                let a = a.clone();
                s.spawn(move || {
                    for i in 0..500 {
                        match a.append_durable(format!("{t} {i}\n").as_bytes()) {
                            Ok(()) => {}
                            Err(e) => {
                                assert!(e.get_ref().unwrap().is::<Closed>(), "{e}");
                                return;
                            }
                        }
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(5));
            a.close().unwrap();
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'));
        for line in text.lines() {
            assert_eq!(line.split(' ').count(), 2, "{line}");
        }
    }

    #[test]
    fn open_errors() {
        let err = Appender::open(Path::new("/nonexistent-dir/x.jsonl")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let dir = tempfile::tempdir().unwrap();
        assert!(Appender::open(dir.path()).is_err());
    }

    #[test]
    fn relative_paths_sync_the_current_directory() {
        // sync_dir_of must cope with a bare file name.
        sync_dir_of(Path::new("Cargo.toml")).unwrap();
    }
}
