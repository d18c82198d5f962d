//! Call stacks as the profilers record them (return addresses, innermost first) and their
//! symbols.
//!
//! Recording ([`record`]) runs inside a SIGPROF handler and inside the global allocator: it
//! neither allocates nor locks (backtrace's unsynchronized walk over libgcc's unwinder, which on
//! glibc ≥ 2.35 finds unwind tables through `_dl_find_object`, without the loader's lock; on an
//! older glibc it would take that lock, so [`unwinding_is_signal_safe`] refuses profiling there).
//! Symbolizing ([`Symbols`]) allocates and locks, and runs only when a profile is encoded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Deepest stack recorded; deeper ones keep their innermost frames.
pub const MAX_FRAMES: usize = 64;

/// One recorded stack: `ips[..len]`, innermost first.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stack {
    pub len: usize,
    pub ips: [usize; MAX_FRAMES],
    /// `ips[0]` is the interrupted instruction itself (a signal's stack whose walk met it), not
    /// a return address; the recorder's own frames are then already left out.
    pub exact: bool,
}

impl Stack {
    pub const EMPTY: Stack = Stack {
        len: 0,
        ips: [0; MAX_FRAMES],
        exact: false,
    };

    pub fn frames(&self) -> &[usize] {
        &self.ips[..self.len]
    }

    /// A hash that is never 0 (0 marks a free slot in the profilers' tables).
    pub fn hash(&self, seed: u64) -> u64 {
        let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
        for &ip in self.frames() {
            h = (h ^ ip as u64)
                .wrapping_mul(0x0100_0000_01b3)
                .rotate_left(29);
        }
        h | 1
    }
}

/// Records the calling thread's stack. `from`: the address of the interrupted instruction when
/// called from a signal handler; the frames inside (the handler's, the kernel's trampoline) are
/// then left out. Without it (or when the walk never meets it) every frame is kept.
#[inline(never)]
pub fn record(from: Option<usize>) -> Stack {
    // Room for the handler's own frames on top of MAX_FRAMES of the interrupted code.
    const ROOM: usize = MAX_FRAMES + 16;
    let mut all = [0usize; ROOM];
    let mut n = 0;
    // SAFETY: the unsynchronized walk is safe on Linux (libgcc's unwinder is thread-safe); it
    // is "unsynchronized" only because it skips backtrace's own lock, which a signal handler
    // must not take.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize;
            if ip == 0 {
                return false;
            }
            all[n] = ip;
            n += 1;
            n < ROOM
        });
    }
    let found = from.and_then(|pc| all[..n].iter().position(|&ip| ip == pc));
    let start = found.unwrap_or(0);
    let mut s = Stack::EMPTY;
    s.exact = found.is_some();
    s.len = (n - start).min(MAX_FRAMES);
    s.ips[..s.len].copy_from_slice(&all[start..start + s.len]);
    s
}

/// Whether [`record`] may run in a signal handler and in the allocator here: glibc ≥ 2.35
/// (libgcc's unwinder then finds unwind tables without the loader's lock). Also runs one walk,
/// so that the unwinder's one-time set-up never happens inside a signal handler.
pub fn unwinding_is_signal_safe() -> bool {
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
    let mut parts = version
        .to_str()
        .unwrap_or("")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    let safe = (major, minor) >= (2, 35);
    if safe {
        let _ = record(None);
    }
    safe
}

/// A stack stored in a table that signal handlers and allocating threads write while readers
/// copy it out: every word is an atomic (relaxed; the table's slot protocol orders them).
pub struct AtomicStack {
    len: AtomicUsize,
    exact: AtomicBool,
    ips: [AtomicUsize; MAX_FRAMES],
}

impl Default for AtomicStack {
    fn default() -> Self {
        AtomicStack {
            len: AtomicUsize::new(0),
            exact: AtomicBool::new(false),
            ips: std::array::from_fn(|_| AtomicUsize::new(0)),
        }
    }
}

impl AtomicStack {
    pub fn store(&self, s: &Stack) {
        for (slot, &ip) in self.ips.iter().zip(s.frames()) {
            slot.store(ip, Ordering::Relaxed);
        }
        self.len.store(s.len, Ordering::Relaxed);
        self.exact.store(s.exact, Ordering::Relaxed);
    }

    pub fn clear(&self) {
        self.len.store(0, Ordering::Relaxed);
    }

    pub fn load(&self) -> Stack {
        let mut s = Stack::EMPTY;
        s.len = self.len.load(Ordering::Relaxed).min(MAX_FRAMES);
        s.exact = self.exact.load(Ordering::Relaxed);
        for (ip, slot) in s.ips.iter_mut().zip(&self.ips[..s.len]) {
            *ip = slot.load(Ordering::Relaxed);
        }
        s
    }

    pub fn equals(&self, s: &Stack) -> bool {
        self.len.load(Ordering::Relaxed) == s.len
            && self.exact.load(Ordering::Relaxed) == s.exact
            && self
                .ips
                .iter()
                .zip(s.frames())
                .all(|(a, &b)| a.load(Ordering::Relaxed) == b)
    }
}

/// One source line of a frame: a function, possibly inlined into the next line's.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Line {
    /// The function's name for display ([`display_name`]).
    pub function: String,
    /// Its full demangled name.
    pub system: String,
    pub file: String,
    pub line: i64,
}

/// A Rust trait method's name as pprof's tools can show it: `<T as Trait>::m` becomes `T::m`,
/// and `<T>::m` (an inherent method of a qualified type) too.
/// Their name shortening strips everything between `<` and `>` (C++ template arguments), which
/// would leave only `::m` of every trait method (`poll`, `call`, `alloc`…).
pub fn display_name(full: &str) -> String {
    let mut name = full.to_string();
    // Bounded: each round removes one leading `<` (nested `<<A as B>::C as D>::e`).
    for _ in 0..8 {
        let Some(inner) = name.strip_prefix('<') else {
            break;
        };
        let (mut depth, mut as_at, mut close) = (1usize, None, None);
        for (i, c) in inner.char_indices() {
            match c {
                '<' => depth += 1,
                '>' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(i);
                        break;
                    }
                }
                ' ' if depth == 1 && as_at.is_none() && inner[i..].starts_with(" as ") => {
                    as_at = Some(i)
                }
                _ => {}
            }
        }
        match (as_at, close) {
            (Some(a), Some(c)) => name = format!("{}{}", &inner[..a], &inner[c + 1..]),
            (None, Some(c)) if inner[c + 1..].starts_with("::") => {
                name = format!("{}{}", &inner[..c], &inner[c + 1..])
            }
            _ => break,
        }
    }
    name
}

/// One line of a symbolized stack: the frame's address, whether that is an interrupted
/// instruction (else a return address), the line's place among the frame's inlined lines
/// (0: innermost), the line.
pub struct Frame {
    pub ip: usize,
    pub exact: bool,
    pub inlined: usize,
    pub line: Line,
}

/// Symbolizes stacks, each address once. Dropping it releases the debug information that
/// symbolizing loaded (tens of MiB for a binary with line tables).
#[derive(Default)]
pub struct Symbols {
    cache: HashMap<(usize, bool), Vec<Line>>,
}

impl Symbols {
    /// The lines of `stack`, innermost first. Unless the stack is [`Stack::exact`], frames
    /// from the outermost one that `is_internal` accepts inwards (where recording began: the
    /// allocator, the profiler) are left out.
    pub fn lines(&mut self, stack: &Stack, is_internal: fn(&str) -> bool) -> Vec<Frame> {
        let mut flat = Vec::new();
        for (i, &ip) in stack.frames().iter().enumerate() {
            let exact = stack.exact && i == 0;
            let lines = self
                .cache
                .entry((ip, exact))
                .or_insert_with(|| symbolize(ip, exact));
            for (inlined, line) in lines.iter().enumerate() {
                flat.push(Frame {
                    ip,
                    exact,
                    inlined,
                    line: line.clone(),
                });
            }
        }
        if !stack.exact
            && let Some(cut) = flat.iter().rposition(|f| is_internal(&f.line.function))
        {
            flat.drain(..=cut);
        }
        flat
    }
}

impl Drop for Symbols {
    fn drop(&mut self) {
        backtrace::clear_symbol_cache();
    }
}

/// The lines at `ip`, innermost (most inlined) first; at least one (the address in hex when
/// there is no symbol).
fn symbolize(ip: usize, exact: bool) -> Vec<Line> {
    let mut lines = Vec::new();
    // backtrace's `resolve` looks up `at - 1`, the call instruction of a return address; an
    // interrupted instruction is looked up as itself.
    let at = if exact { ip + 1 } else { ip };
    backtrace::resolve(at as *mut std::ffi::c_void, |sym| {
        let system = sym
            .name()
            .map(|n| format!("{n:#}"))
            .unwrap_or_else(|| format!("{ip:#x}"));
        lines.push(Line {
            function: display_name(&system),
            system,
            file: sym
                .filename()
                .map(|f| f.display().to_string())
                .unwrap_or_default(),
            line: sym.lineno().map_or(0, i64::from),
        });
    });
    if lines.is_empty() {
        lines.push(Line {
            function: format!("{ip:#x}"),
            system: format!("{ip:#x}"),
            file: String::new(),
            line: 0,
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::display_name;

    #[test]
    fn trait_methods_keep_their_type_for_pprof() {
        assert_eq!(
            display_name("<hyper::H2Stream<F,B> as core::future::Future>::poll"),
            "hyper::H2Stream<F,B>::poll"
        );
        assert_eq!(display_name("<<A as B>::C as D>::e"), "A::C::e");
        assert_eq!(
            display_name("retcd::run::{{closure}}"),
            "retcd::run::{{closure}}"
        );
        assert_eq!(display_name("<unbalanced"), "<unbalanced");
        assert_eq!(display_name("<T>::new"), "T::new");
        assert_eq!(display_name("<[u8]>::to_vec"), "[u8]::to_vec");
        assert_eq!(display_name("<T>"), "<T>");
    }
}
