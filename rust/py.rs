//! The Python bindings, `iabulk._native` (see `python/iabulk/_native.pyi`).
//!
//! Conversions and GIL release only: every scan, file read, write and sync
//! runs detached from the interpreter.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use pyo3::exceptions::{PyIndexError, PyOSError, PyOverflowError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyByteArray, PyBytes, PyDict, PyInt, PyList, PySlice, PyString, PyTuple, PyType,
};
use pyo3::PyTypeInfo;

use crate::analytics::{self, format_ts, Figure};
use crate::appender::{self, Closed, Locked, Refused};
use crate::bitmap::{self, MAX_SEQ};
use crate::idset::{self, id_hash};
use crate::pending::{self, Batch, LineReader};
use crate::scan::{scan_path, ByteTotal, ScanOptions};

/// The C library's text for an errno (`io::Error`'s text without its
/// " (os error N)" suffix).
fn strerror(code: i32) -> String {
    let text = io::Error::from_raw_os_error(code).to_string();
    match text.rfind(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// An `io::Error` as the matching `OSError` subclass (`FileNotFoundError`,
/// `BlockingIOError`, ...) with errno, strerror and filename; `ValueError`
/// for an operation on a closed appender.
fn os_error(e: io::Error, path: &Path) -> PyErr {
    if let Some(code) = e.raw_os_error() {
        return PyOSError::new_err((code, strerror(code), path.display().to_string()));
    }
    if let Some(inner) = e.get_ref() {
        if inner.is::<Closed>() {
            return PyValueError::new_err(inner.to_string());
        }
        if let Some(locked) = inner.downcast_ref::<Locked>() {
            return PyOSError::new_err((libc::EWOULDBLOCK, locked.to_string()));
        }
        if let Some(refused) = inner.downcast_ref::<Refused>() {
            return PyOSError::new_err((refused.errno, refused.message.clone()));
        }
    }
    let code = match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => libc::EIO,
        io::ErrorKind::InvalidInput => libc::EINVAL,
        _ => libc::EIO,
    };
    PyOSError::new_err((code, e.to_string(), path.display().to_string()))
}

/// An integer argument as i128: TypeError for non-integers, ValueError for
/// integers too large to be a seq anyway.
fn seq_arg(n: &Bound<'_, PyAny>) -> PyResult<i128> {
    n.extract::<i128>().map_err(|e| {
        if e.is_instance_of::<PyOverflowError>(n.py()) {
            PyValueError::new_err(format!("{n} is out of range 0..={MAX_SEQ}"))
        } else {
            e
        }
    })
}

pyo3::create_exception!(
    _native,
    LogChangedError,
    PyValueError,
    "The job log was rewritten in place after a JobList was read from it."
);

/// The error for a job line that is no longer where a [`JobList`] found it.
fn log_changed(path: &Path) -> PyErr {
    LogChangedError::new_err(format!(
        "{} changed after its job list was read (rewritten in place?): read the log again",
        path.display()
    ))
}

/// An error reading a job line back: a line cut short means the file changed.
fn read_error(e: io::Error, path: &Path) -> PyErr {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        log_changed(path)
    } else {
        os_error(e, path)
    }
}

static JSON_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static SEQUENCE_ABC: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `json.loads(line)`.
fn json_loads<'py>(py: Python<'py>, line: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let loads = JSON_LOADS.import(py, "json", "loads")?;
    loads.call1((PyBytes::new(py, line),))
}

/// Set of non-negative integers up to ``MAX_SEQ``, one bit each.
#[pyclass(module = "iabulk._native", name = "Bitmap")]
struct Bitmap {
    inner: bitmap::Bitmap,
}

#[pymethods]
impl Bitmap {
    #[new]
    #[pyo3(signature = (size = 0))]
    fn new(size: i128) -> PyResult<Self> {
        if size < 0 {
            return Err(PyValueError::new_err("size must be >= 0"));
        }
        Ok(Bitmap {
            inner: bitmap::Bitmap::with_capacity(u64::try_from(size).unwrap_or(u64::MAX)),
        })
    }

    fn set(&mut self, n: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = seq_arg(n)?;
        self.inner
            .set(n)
            .map(|_| ())
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    fn clear(&mut self, n: &Bound<'_, PyAny>) -> PyResult<()> {
        let n = seq_arg(n)?;
        self.inner
            .clear(n)
            .map(|_| ())
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    fn __contains__(&self, n: &Bound<'_, PyAny>) -> bool {
        n.extract::<i128>().is_ok_and(|n| self.inner.contains(n))
    }

    fn __len__(&self) -> usize {
        self.inner.len() as usize
    }

    fn issuperset(&self, other: &Bitmap) -> bool {
        self.inner.is_superset(&other.inner)
    }

    #[getter]
    fn size_bytes(&self) -> usize {
        self.inner.size_bytes()
    }

    /// The members as bytes (bit `j` of byte `i` is member `8 * i + j`).
    fn __getstate__<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.to_bytes())
    }

    fn __setstate__(&mut self, state: &[u8]) -> PyResult<()> {
        self.inner = bitmap::Bitmap::from_bytes(state)
            .map_err(|e| PyValueError::new_err(format!("bitmap state holds {e}")))?;
        Ok(())
    }

    /// Pickled as `Bitmap()` then `__setstate__`, under every pickle protocol
    /// (a process pool sends bitmaps this way).
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> (Bound<'py, PyType>, Bound<'py, PyTuple>, Bound<'py, PyBytes>) {
        let py = slf.py();
        (
            slf.get_type(),
            PyTuple::empty(py),
            slf.borrow().__getstate__(py),
        )
    }

    fn __repr__(&self) -> String {
        format!(
            "<Bitmap len={} size_bytes={}>",
            self.inner.len(),
            self.inner.size_bytes()
        )
    }
}

/// Exact set of identifiers, stored as 128-bit hashes.
#[pyclass(module = "iabulk._native", name = "IdSet")]
struct IdSet {
    inner: idset::IdSet,
}

/// A str's UTF-8 bytes (lone surrogates, which no scanned id can hold, are
/// passed through so that such strings still hash consistently).
fn str_hash(s: &Bound<'_, PyString>) -> PyResult<u128> {
    match s.to_str() {
        Ok(text) => Ok(id_hash(text.as_bytes())),
        Err(_) => {
            let bytes = s.call_method1("encode", ("utf-8", "surrogatepass"))?;
            Ok(id_hash(bytes.cast::<PyBytes>()?.as_bytes()))
        }
    }
}

#[pymethods]
impl IdSet {
    #[new]
    fn new() -> Self {
        IdSet {
            inner: idset::IdSet::new(),
        }
    }

    fn add(&mut self, identifier: &Bound<'_, PyString>) -> PyResult<bool> {
        Ok(self.inner.add_hash(str_hash(identifier)?))
    }

    fn __contains__(&self, identifier: &Bound<'_, PyAny>) -> PyResult<bool> {
        match identifier.cast::<PyString>() {
            Ok(s) => Ok(self.inner.contains_hash(str_hash(s)?)),
            Err(_) => Ok(false),
        }
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!("<IdSet len={}>", self.inner.len())
    }
}

/// Lines read per GIL release while iterating.
const BATCH_LINES: usize = 1024;
const BATCH_BYTES: usize = 1 << 20;

/// Iterator over a [`JobList`]: reads lines in batches with the GIL
/// released, parses each with `json.loads` when it is reached. One iterator
/// may be shared by threads, as a list's is: its state is behind a lock,
/// taken without the GIL whenever it may have to wait.
#[pyclass(module = "iabulk._native", frozen)]
struct PendingIter {
    jobs: pending::PendingJobs,
    path: PathBuf,
    state: Mutex<IterState>,
}

struct IterState {
    reader: LineReader,
    batch: Batch,
    /// Next line to hand out from `batch`.
    pos: usize,
    /// Index of the first pending job not yet in a batch.
    next: usize,
}

impl IterState {
    /// The next line and its index in the list, reading a batch if need be;
    /// None at the end.
    fn take(&mut self, jobs: &pending::PendingJobs) -> io::Result<Option<(usize, Vec<u8>)>> {
        if self.pos >= self.batch.len() {
            if self.next >= jobs.len() {
                return Ok(None);
            }
            let n = jobs.fill(
                &mut self.reader,
                self.next,
                BATCH_LINES,
                BATCH_BYTES,
                &mut self.batch,
            )?;
            self.next += n;
            self.pos = 0;
            if n == 0 {
                return Ok(None);
            }
        }
        let index = self.next - self.batch.len() + self.pos;
        self.pos += 1;
        Ok(Some((index, self.batch.line(self.pos - 1).to_vec())))
    }
}

#[pymethods]
impl PendingIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        // Most lines are already in the batch: no read, so no need to let the GIL go.
        let mut held = self.state.try_lock().ok();
        let in_batch = match held.as_deref_mut() {
            Some(state) if state.pos < state.batch.len() => Some(state.take(&self.jobs)),
            _ => None,
        };
        drop(held); // a lock held across the match's arms would block the read below
        let ready = match in_batch {
            Some(ready) => ready,
            None => {
                let (state, jobs) = (&self.state, &self.jobs);
                py.detach(|| {
                    state
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take(jobs)
                })
            }
        };
        match ready.map_err(|e| read_error(e, &self.path))? {
            Some((index, line)) => parse_job(py, &self.jobs, &self.path, index, &line).map(Some),
            None => Ok(None),
        }
    }
}

/// What one pass over a job log knows.
#[pyclass(module = "iabulk._native", name = "Snapshot", frozen)]
struct Snapshot {
    #[pyo3(get)]
    max_seq: u64,
    #[pyo3(get)]
    total: u64,
    #[pyo3(get)]
    completed: u64,
    #[pyo3(get)]
    failed: u64,
    #[pyo3(get)]
    pending: u64,
    #[pyo3(get)]
    in_flight: u64,
    #[pyo3(get)]
    malformed: u64,
    #[pyo3(get)]
    bytes_completed: Py<PyAny>,
    #[pyo3(get)]
    first_ts: Option<String>,
    #[pyo3(get)]
    last_ts: Option<String>,
    errors: Vec<(String, u64)>,
    #[pyo3(get)]
    source: Option<String>,
    #[pyo3(get)]
    resolved: bool,
    #[pyo3(get)]
    size: u64,
    #[pyo3(get)]
    bitmap: Py<Bitmap>,
    #[pyo3(get)]
    pending_jobs: Py<JobList>,
    #[pyo3(get)]
    ids: Option<Py<IdSet>>,
}

#[pymethods]
impl Snapshot {
    /// (message, count), most frequent first, ties by message.
    #[getter]
    fn errors(&self) -> Vec<(String, u64)> {
        self.errors.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "<Snapshot total={} completed={} failed={} pending={} in_flight={} malformed={} max_seq={}>",
            self.total,
            self.completed,
            self.failed,
            self.pending,
            self.in_flight,
            self.malformed,
            self.max_seq
        )
    }
}

/// The pid of the process holding the job log's lock (a run under way), if any.
#[pyfunction]
fn lock_holder(py: Python<'_>, path: PathBuf) -> PyResult<Option<u32>> {
    py.detach(|| {
        let file = std::fs::File::open(&path)?;
        Ok(appender::lock_holder(&file))
    })
    .map_err(|e: io::Error| os_error(e, &path))
}

/// One pass over the job log at ``path`` (using every core if it pays).
#[pyfunction]
#[pyo3(signature = (path, collect_ids = false))]
fn scan(py: Python<'_>, path: PathBuf, collect_ids: bool) -> PyResult<Snapshot> {
    let opts = ScanOptions {
        collect_ids,
        ..ScanOptions::default()
    };
    let s = py
        .detach(|| scan_path(&path, &opts))
        .map_err(|e| os_error(e, &path))?;
    Ok(Snapshot {
        max_seq: s.max_seq,
        total: s.total,
        completed: s.completed,
        failed: s.failed,
        pending: s.pending,
        in_flight: s.in_flight,
        malformed: s.malformed,
        bytes_completed: match s.bytes_completed {
            ByteTotal::Small(n) => n.into_pyobject(py)?.into_any().unbind(),
            ByteTotal::Decimal(digits) => PyInt::type_object(py).call1((digits,))?.unbind(),
        },
        first_ts: s.first_ts,
        last_ts: s.last_ts,
        errors: s.errors,
        source: s.source,
        resolved: s.resolved,
        size: s.size,
        bitmap: Py::new(py, Bitmap { inner: s.bitmap })?,
        pending_jobs: Py::new(
            py,
            JobList {
                inner: s.pending_jobs,
                path: path.clone(),
            },
        )?,
        ids: s
            .ids
            .map(|inner| Py::new(py, IdSet { inner }))
            .transpose()?,
    })
}

/// Lazy sequence of job lines (dicts), in seq order, read when reached: the
/// pending jobs of a scan, the completed or failed jobs of an analysis.
#[pyclass(module = "iabulk._native", name = "JobList", frozen)]
struct JobList {
    inner: pending::PendingJobs,
    /// The analysed log, for error messages.
    path: PathBuf,
}

#[pymethods]
impl JobList {
    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __iter__(&self) -> PendingIter {
        self.iter_from(0)
    }

    fn __reversed__(&self) -> ReversedJobs {
        ReversedJobs {
            jobs: self.inner.clone(),
            path: self.path.clone(),
            left: AtomicUsize::new(self.inner.len()),
        }
    }

    /// Equal to any sequence of the same jobs, in the same order, as a list
    /// is to a list. Lengths first: a list of another length costs no read.
    fn __eq__<'py>(
        slf: &Bound<'py, Self>,
        other: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let sequence = SEQUENCE_ABC.import(py, "collections.abc", "Sequence")?;
        // Text and bytes are sequences too, but of characters and numbers, never of jobs.
        let text = other.is_instance_of::<PyString>()
            || other.is_instance_of::<PyBytes>()
            || other.is_instance_of::<PyByteArray>();
        if text || !other.is_instance(sequence)? {
            return Ok(py.NotImplemented().into_bound(py));
        }
        let same = slf.is(other) || slf.get().same_jobs(py, other)?;
        Ok(same.into_pyobject(py)?.to_owned().into_any())
    }

    /// Where the first job equal to ``value`` is, between ``start`` and
    /// ``stop`` (as ``list.index``); ValueError if none is.
    #[pyo3(signature = (value, start = 0, stop = None, /))]
    fn index(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        start: isize,
        stop: Option<isize>,
    ) -> PyResult<usize> {
        let len = self.inner.len();
        let bound = |i: isize| {
            if i < 0 {
                len.saturating_sub(i.unsigned_abs())
            } else {
                (i as usize).min(len)
            }
        };
        let (start, stop) = (bound(start), stop.map_or(len, bound));
        let jobs = self.iter_from(start);
        for i in start..stop {
            match jobs.__next__(py)? {
                Some(job) if job.eq(value)? => return Ok(i),
                Some(_) => {}
                None => break,
            }
        }
        Err(PyValueError::new_err(format!(
            "{} is not in the job list",
            value.repr()?
        )))
    }

    /// How many jobs are equal to ``value``.
    #[pyo3(signature = (value, /))]
    fn count(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<usize> {
        let jobs = self.iter_from(0);
        let mut count = 0;
        while let Some(job) = jobs.__next__(py)? {
            count += usize::from(job.eq(value)?);
        }
        Ok(count)
    }

    /// A job by index (negative from the end), or a list of jobs for a slice.
    fn __getitem__<'py>(
        &self,
        py: Python<'py>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let len = self.inner.len() as isize;
        if let Ok(slice) = index.cast::<PySlice>() {
            let picked = slice.indices(len)?;
            let jobs = PyList::empty(py);
            let mut i = picked.start;
            for _ in 0..picked.slicelength {
                jobs.append(self.job(py, i as usize)?)?;
                i += picked.step;
            }
            return Ok(jobs.into_any());
        }
        let index: isize = index.extract()?;
        let i = if index < 0 { index + len } else { index };
        if i < 0 || i >= len {
            return Err(PyIndexError::new_err("job index out of range"));
        }
        self.job(py, i as usize)
    }

    /// The seqs, in order.
    fn seqs(&self) -> Vec<u32> {
        self.inner.seqs()
    }

    fn __repr__(&self) -> String {
        format!("<JobList len={}>", self.inner.len())
    }
}

impl JobList {
    /// The `i`-th job line, read and parsed (`i` in range).
    fn job<'py>(&self, py: Python<'py>, i: usize) -> PyResult<Bound<'py, PyAny>> {
        read_job(py, &self.inner, &self.path, i)
    }

    /// Whether the sequence `other` holds these jobs in this order.
    fn same_jobs(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        if other.len()? != self.inner.len() {
            return Ok(false);
        }
        let mine = self.iter_from(0);
        for item in other.try_iter()? {
            match mine.__next__(py)? {
                Some(job) if job.eq(item?)? => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// An iterator over the jobs from the `start`-th on.
    fn iter_from(&self, start: usize) -> PendingIter {
        PendingIter {
            jobs: self.inner.clone(),
            path: self.path.clone(),
            state: Mutex::new(IterState {
                reader: self.inner.reader(),
                batch: Batch::default(),
                pos: 0,
                next: start,
            }),
        }
    }
}

/// The `i`-th job of `jobs` (in range), read and parsed.
fn read_job<'py>(
    py: Python<'py>,
    jobs: &pending::PendingJobs,
    path: &Path,
    i: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let line = py
        .detach(|| {
            let mut out = Vec::new();
            jobs.line(i, &mut out).map(|()| out)
        })
        .map_err(|e| read_error(e, path))?;
    parse_job(py, jobs, path, i, &line)
}

/// The job dict of the `i`-th job's line; [`LogChangedError`] unless the line
/// still is that job's (a log rewritten in place puts other bytes there).
fn parse_job<'py>(
    py: Python<'py>,
    jobs: &pending::PendingJobs,
    path: &Path,
    i: usize,
    line: &[u8],
) -> PyResult<Bound<'py, PyAny>> {
    let job = match json_loads(py, line) {
        Ok(job) => job,
        // The scan accepted this line, and json.loads reads whatever the scan accepts.
        Err(e) if e.is_instance_of::<PyValueError>(py) => return Err(log_changed(path)),
        Err(e) => return Err(e),
    };
    let seq = jobs.list().get(i).map(|(seq, _)| seq);
    // Interned keys: a new Python string per key per job would cost more than the check.
    let still_there = job.cast::<PyDict>().is_ok_and(|dict| {
        let field = |name: &Bound<'py, PyString>| dict.get_item(name).ok().flatten();
        field(intern!(py, "seq"))
            .is_some_and(|n| n.is_exact_instance_of::<PyInt>() && n.extract::<u32>().ok() == seq)
            && field(intern!(py, "event"))
                .is_some_and(|event| event.eq(intern!(py, "job")).unwrap_or(false))
    });
    if still_there {
        Ok(job)
    } else {
        Err(log_changed(path))
    }
}

/// Iterator over a [`JobList`] from its end, one job read per step.
#[pyclass(module = "iabulk._native", frozen)]
struct ReversedJobs {
    jobs: pending::PendingJobs,
    path: PathBuf,
    /// Jobs not handed out yet: the next one is at `left - 1`.
    left: AtomicUsize,
}

#[pymethods]
impl ReversedJobs {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        {
            Ok(left) => read_job(py, &self.jobs, &self.path, left - 1).map(Some),
            Err(_) => Ok(None),
        }
    }
}

/// A sum of sizes as a Python int (of any size).
fn py_total(py: Python<'_>, total: ByteTotal) -> PyResult<Py<PyAny>> {
    Ok(match total {
        ByteTotal::Small(n) => n.into_pyobject(py)?.into_any().unbind(),
        ByteTotal::Decimal(digits) => PyInt::type_object(py).call1((digits,))?.unbind(),
    })
}

/// `{"completed": n, "bytes": b}`.
fn py_figure<'py>(py: Python<'py>, f: Figure) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "completed"), f.completed)?;
    d.set_item(intern!(py, "bytes"), py_total(py, f.bytes)?)?;
    Ok(d)
}

/// Everything the job log says about a run, in one pass.
#[pyfunction]
#[pyo3(signature = (path, bucket_seconds = 60))]
fn analyze<'py>(
    py: Python<'py>,
    path: PathBuf,
    bucket_seconds: i128,
) -> PyResult<Bound<'py, PyDict>> {
    if bucket_seconds < 1 {
        return Err(PyValueError::new_err("bucket_seconds must be at least 1"));
    }
    let bucket_seconds = u64::try_from(bucket_seconds).unwrap_or(u64::MAX);
    let a = py
        .detach(|| analytics::analyze_path(&path, bucket_seconds, &ScanOptions::default()))
        .map_err(|e| os_error(e, &path))?;
    let (s, f) = (a.snapshot, a.figures);
    let out = PyDict::new(py);
    let counts = PyDict::new(py);
    for (name, n) in [
        ("total", s.total),
        ("completed", s.completed),
        ("failed", s.failed),
        ("pending", s.pending),
        ("in_flight", s.in_flight),
        ("malformed", s.malformed),
    ] {
        counts.set_item(name, n)?;
    }
    out.set_item("counts", counts)?;
    out.set_item("bytes_completed", py_total(py, s.bytes_completed)?)?;
    out.set_item("files_completed", py_total(py, f.files_completed)?)?;
    out.set_item("first_ts", s.first_ts)?;
    out.set_item("last_ts", s.last_ts)?;
    let throughput = PyList::empty(py);
    for b in f.throughput {
        let d = PyDict::new(py);
        d.set_item(intern!(py, "start"), format_ts(b.start))?;
        d.set_item(intern!(py, "items"), b.items)?;
        d.set_item(intern!(py, "bytes"), py_total(py, b.bytes)?)?;
        throughput.append(d)?;
    }
    out.set_item("throughput", throughput)?;
    let durations = PyDict::new(py);
    let dur = f.durations;
    durations.set_item("count", dur.count)?;
    for (name, v) in [
        ("p50", dur.p50),
        ("p90", dur.p90),
        ("p99", dur.p99),
        ("max", dur.max),
    ] {
        durations.set_item(name, v)?;
    }
    out.set_item("durations", durations)?;
    let retries = PyDict::new(py);
    for (n, jobs) in f.retries {
        retries.set_item(n, jobs)?;
    }
    out.set_item("retries", retries)?;
    let workers = PyDict::new(py);
    for (w, fig) in f.workers {
        workers.set_item(w, py_figure(py, fig)?)?;
    }
    out.set_item("workers", workers)?;
    let disks = PyDict::new(py);
    for (name, fig) in f.disks {
        disks.set_item(name, py_figure(py, fig)?)?;
    }
    out.set_item("disks", disks)?;
    let errors = PyList::empty(py);
    for c in f.errors {
        let d = PyDict::new(py);
        d.set_item(intern!(py, "cause"), c.cause)?;
        d.set_item(intern!(py, "count"), c.count)?;
        d.set_item(intern!(py, "examples"), c.examples)?;
        errors.append(d)?;
    }
    out.set_item("errors", errors)?;
    for (name, jobs) in [
        ("failed_jobs", f.failed_jobs),
        ("completed_jobs", f.completed_jobs),
    ] {
        let list = JobList {
            inner: jobs,
            path: path.clone(),
        };
        out.set_item(name, Py::new(py, list)?)?;
    }
    Ok(out)
}

/// Durable, thread-safe appends to one job log.
#[pyclass(module = "iabulk._native", name = "Appender", frozen)]
struct Appender {
    inner: appender::Appender,
}

#[pymethods]
impl Appender {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = py
            .detach(|| appender::Appender::open(&path))
            .map_err(|e| os_error(e, &path))?;
        Ok(Appender { inner })
    }

    /// Bytes of torn tail cut off when the log was opened.
    #[getter]
    fn repaired_bytes(&self) -> u64 {
        self.inner.repaired_bytes()
    }

    fn append(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let a = &self.inner;
        py.detach(|| a.append(data))
            .map_err(|e| os_error(e, a.path()))
    }

    fn append_durable(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        let a = &self.inner;
        py.detach(|| a.append_durable(data))
            .map_err(|e| os_error(e, a.path()))
    }

    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let a = &self.inner;
        py.detach(|| a.flush()).map_err(|e| os_error(e, a.path()))
    }

    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        let a = &self.inner;
        py.detach(|| a.sync()).map_err(|e| os_error(e, a.path()))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let a = &self.inner;
        py.detach(|| a.close()).map_err(|e| os_error(e, a.path()))
    }

    fn __repr__(&self) -> String {
        let state = if self.inner.is_closed() {
            "closed"
        } else {
            "open"
        };
        format!("<Appender {} {state}>", self.inner.path().display())
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("MAX_SEQ", MAX_SEQ)?;
    m.add("MAX_BUCKETS", analytics::MAX_BUCKETS)?;
    m.add_class::<Appender>()?;
    m.add_class::<Bitmap>()?;
    m.add_class::<IdSet>()?;
    m.add_class::<JobList>()?;
    // A read-only sequence in every respect but the base class, which a
    // native class cannot take from Python: isinstance(jobs, Sequence) holds.
    SEQUENCE_ABC
        .import(m.py(), "collections.abc", "Sequence")?
        .call_method1("register", (m.getattr("JobList")?,))?;
    m.add("LogChangedError", m.py().get_type::<LogChangedError>())?;
    // The upstream engine's name for the pending list: the same class.
    m.add("PendingJobs", m.getattr("JobList")?)?;
    m.add_class::<Snapshot>()?;
    m.add_function(wrap_pyfunction!(scan, m)?)?;
    m.add_function(wrap_pyfunction!(analyze, m)?)?;
    m.add_function(wrap_pyfunction!(lock_holder, m)?)?;
    Ok(())
}
