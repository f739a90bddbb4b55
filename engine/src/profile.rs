//! Where a backward pass spends its time: when switched on, `backward` times every op's
//! gradient and every gradient accumulation, keyed by op name and output shape. For studying
//! and tuning kernels (`spark bench step --profile`); off by default, and then it costs one
//! atomic load per op.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static TABLE: Mutex<Option<HashMap<String, Entry>>> = Mutex::new(None);

/// Accumulated time of one key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    pub calls: usize,
    pub seconds: f64,
}

/// Starts (clearing earlier records) or stops recording.
pub fn set_backward_profiling(on: bool) {
    if on {
        *TABLE.lock().unwrap_or_else(|e| e.into_inner()) = Some(HashMap::new());
    }
    ON.store(on, Ordering::Relaxed);
}

/// The records so far, slowest first.
pub fn backward_profile() -> Vec<(String, Entry)> {
    let table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<(String, Entry)> = table.iter().flatten().map(|(k, e)| (k.clone(), e.clone())).collect();
    v.sort_by(|a, b| b.1.seconds.total_cmp(&a.1.seconds));
    v
}

/// Runs `f`, recording its time under the key `key()` when profiling is on.
pub(crate) fn timed<R>(key: impl FnOnce() -> String, f: impl FnOnce() -> R) -> R {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    let t = Instant::now();
    let r = f();
    let secs = t.elapsed().as_secs_f64();
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    let e = table.get_or_insert_with(HashMap::new).entry(key()).or_default();
    e.calls += 1;
    e.seconds += secs;
    r
}
