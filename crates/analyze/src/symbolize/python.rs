//! Python frames: named from the capture's code objects, and put where the
//! interpreter's eval loop runs in the native stack, so one stack reads
//! native entry -> `py::module.function (file.py:LINE)` ... -> the native
//! code the Python code called.

use std::collections::HashMap;
use std::sync::Arc;

use profcap_format::python::{PyCode, PyFrame};

use super::{Frame, FrameKind};

/// How Python frames are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PythonFrames {
    /// In place of the eval loop's native frames (the default).
    #[default]
    Merged,
    /// Python frames only, where a stack has any (others stay native).
    Only,
    /// Native frames only, as if no Python frames were recorded.
    Native,
}

/// The native function that runs Python frames (3.8 to 3.13).
pub(super) fn is_eval_loop(name: &str) -> bool {
    name.strip_prefix("_PyEval_EvalFrameDefault").is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The module name of a Python file: `pkg/mod.py` -> `mod`, a package's
/// `pkg/__init__.py` -> `pkg`.
fn module_of(filename: &str) -> &str {
    let mut parts = filename.rsplit('/');
    let base = parts.next().unwrap_or(filename);
    let stem = base.strip_suffix(".py").unwrap_or(base);
    if stem == "__init__" {
        parts.next().unwrap_or(stem)
    } else {
        stem
    }
}

/// The frame of a perf-map symbol of CPython's `-X perf` trampolines
/// (3.12+: `py::QUALNAME:FILE`), as a Python frame named like the walk's
/// (without a line: the trampoline does not know it); `None` for others.
pub(super) fn perf_map_frame(symbol: &str) -> Option<Frame> {
    let rest = symbol.strip_prefix("py::")?;
    let (function, file) = rest.split_once(':')?;
    let base = file.rsplit('/').next().unwrap_or(file);
    Some(Frame {
        name: Arc::from(format!("py::{}.{function} ({base})", module_of(file))),
        module: Arc::from(base),
        kind: FrameKind::Python,
    })
}

/// Names Python frames, caching one frame per code object (and line).
#[derive(Debug, Default)]
pub(super) struct PythonNames {
    cache: HashMap<(u32, u32), Frame>,
}

impl PythonNames {
    /// The frame of `f`: `py::module.function (file.py:LINE)`, with the
    /// function's first line, or with `lines` the line being run.
    pub(super) fn frame(&mut self, codes: &HashMap<u32, PyCode>, f: PyFrame, lines: bool) -> Frame {
        let code = codes.get(&f.code);
        let line_key = if lines { f.offset } else { u32::MAX };
        self.cache
            .entry((f.code, line_key))
            .or_insert_with(|| match code {
                Some(c) => {
                    let line = if lines { c.line_at(f.offset) } else { c.first_line };
                    let file = c.filename.rsplit('/').next().unwrap_or(&c.filename);
                    let name = format!("py::{}.{} ({file}:{line})", module_of(&c.filename), c.display_name());
                    Frame { name: Arc::from(name), module: Arc::from(file), kind: FrameKind::Python }
                }
                None => Frame {
                    name: Arc::from("py::[unknown]"),
                    module: Arc::from("[python]"),
                    kind: FrameKind::Python,
                },
            })
            .clone()
    }
}

/// A stack's Python frames in runs of the eval loop, root first, each run
/// root first (an `entry` frame is the outermost of its run).
pub(super) fn runs(python: &[u64]) -> Vec<Vec<PyFrame>> {
    let mut runs: Vec<Vec<PyFrame>> = Vec::new();
    let mut current = Vec::new();
    for f in python.iter().map(|&v| PyFrame::decode(v)) {
        current.push(f);
        if f.entry {
            runs.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs.reverse();
    for run in &mut runs {
        run.reverse();
    }
    runs
}

/// Merges Python runs (root first) into native frames (root first, one
/// inline expansion per address, root first within). The innermost eval
/// loop frame gets the innermost run, and so on out; runs left over (the
/// native stack was cut) go at the root; eval loops left over stay native.
/// Interpreter frames between two merged eval loops (call machinery) are
/// left out; other native frames (C extensions, libc) stay.
/// `frame` says which frame an item is (items may carry more).
pub(super) fn merge<T: Clone>(
    native: &[Arc<[T]>],
    runs: Vec<Vec<T>>,
    frame: impl Fn(&T) -> &Frame,
) -> Vec<T> {
    let evals: Vec<usize> = native
        .iter()
        .enumerate()
        .filter(|(_, x)| x.iter().any(|f| is_eval_loop(&frame(f).name)))
        .map(|(i, _)| i)
        .collect();
    let (e, g) = (evals.len(), runs.len());
    let mut runs = runs.into_iter();
    let mut out: Vec<T> = Vec::new();
    for _ in e..g {
        out.extend(runs.next().into_iter().flatten());
    }
    // Eval frames that get a run: the innermost min(e, g).
    let merged = &evals[e.saturating_sub(g)..];
    let interpreter = merged
        .first()
        .and_then(|&i| native[i].iter().map(&frame).find(|f| is_eval_loop(&f.name)))
        .map(|f| Arc::clone(&f.module));
    let (first, last) = (merged.first().copied(), merged.last().copied());
    for (i, frames) in native.iter().enumerate() {
        if merged.contains(&i) {
            out.extend(runs.next().into_iter().flatten());
            continue;
        }
        let between = first.is_some_and(|a| a < i) && last.is_some_and(|b| i < b);
        if between && frames.iter().all(|f| Some(&frame(f).module) == interpreter.as_ref()) {
            continue;
        }
        out.extend(frames.iter().cloned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn native(name: &str, module: &str) -> Arc<[Frame]> {
        Arc::from(vec![Frame { name: Arc::from(name), module: Arc::from(module), kind: FrameKind::User }])
    }

    fn py(name: &str) -> Frame {
        Frame { name: Arc::from(name), module: Arc::from("x.py"), kind: FrameKind::Python }
    }

    fn names(v: &[Frame]) -> Vec<&str> {
        v.iter().map(|f| &*f.name).collect()
    }

    #[test]
    fn runs_split_after_entry_frames_and_read_root_first() {
        let f = |code, entry| PyFrame { code, offset: 0, entry }.encode();
        let r = runs(&[f(1, false), f(2, true), f(3, true), f(4, false)]);
        let codes: Vec<Vec<u32>> = r.iter().map(|run| run.iter().map(|p| p.code).collect()).collect();
        assert_eq!(codes, vec![vec![4], vec![3], vec![2, 1]]);
    }

    #[test]
    fn runs_replace_eval_loops_from_the_leaf_out() {
        let nat = [
            native("main", "python3.12"),
            native("_PyEval_EvalFrameDefault", "libpython3.12.so"),
            native("_PyFunction_Vectorcall", "libpython3.12.so"),
            native("ext_call", "ext.so"),
            native("_PyEval_EvalFrameDefault", "libpython3.12.so"),
            native("list_sort", "libpython3.12.so"),
        ];
        let merged = merge(&nat, vec![vec![py("outer"), py("mid")], vec![py("inner")]], |f| f);
        assert_eq!(names(&merged), ["main", "outer", "mid", "ext_call", "inner", "list_sort"]);
        // A run more than the eval loops seen (the native stack was cut): at the root.
        let merged = merge(&nat[3..], vec![vec![py("a")], vec![py("b")]], |f| f);
        assert_eq!(names(&merged), ["a", "ext_call", "b", "list_sort"]);
        // Fewer runs than eval loops: the outer loops stay native.
        let merged = merge(&nat, vec![vec![py("only")]], |f| f);
        assert_eq!(
            names(&merged),
            ["main", "_PyEval_EvalFrameDefault", "_PyFunction_Vectorcall", "ext_call", "only", "list_sort"]
        );
    }

    #[test]
    fn perf_map_trampolines_read_as_python_frames() {
        let f = perf_map_frame("py::Worker.step:/srv/app/pywork.py").unwrap();
        assert_eq!(
            (&*f.name, &*f.module, f.kind),
            ("py::pywork.Worker.step (pywork.py)", "pywork.py", FrameKind::Python)
        );
        assert!(perf_map_frame("LazyCompile:*foo /x.js:1").is_none());
        assert!(perf_map_frame("py::no_file").is_none());
    }

    #[test]
    fn eval_loop_names_and_modules() {
        assert!(is_eval_loop("_PyEval_EvalFrameDefault"));
        assert!(is_eval_loop("_PyEval_EvalFrameDefault.cold"));
        assert!(!is_eval_loop("_PyEval_EvalFrameDefaultX"));
        assert_eq!(module_of("/srv/app/handlers.py"), "handlers");
        assert_eq!(module_of("/srv/app/pkg/__init__.py"), "pkg");
        assert_eq!(module_of("<frozen importlib._bootstrap>"), "<frozen importlib._bootstrap>");
    }
}
