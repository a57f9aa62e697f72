//! Static checks of generated backtesting.py code, parsed by a real Python
//! parser (`rustpython-parser`), never run:
//! - it parses as Python 3;
//! - it defines a `backtesting.Strategy` subclass with `init` and `next`;
//! - its imports come from [`ALLOWED_MODULES`];
//! - it uses none of `open`, `eval`, `exec`, `compile`, `__import__`, no
//!   `getattr`/`setattr`/`delattr` on a dunder or a computed name, and no
//!   dunder attribute access.
//!
//! This is a lint that catches what a model gets wrong and what a prompt
//! injection would try first; it is not a sandbox. Code only ever runs in
//! the sandbox a later issue brings.
//!
//! Each problem's message reads like the Python exception the code would
//! raise (`SyntaxError: …`, `ImportError: …`), so [`error_type`] classifies
//! a checker's message and a real traceback the same way.
//!
//! Code comes from users and from model answers a prompt can steer, so the
//! checker is hardened against it: at most [`MAX_CODE_BYTES`], nesting
//! refused past [`MAX_NESTING`] levels (CPython's own limit for brackets),
//! and the parse, the walk and the tree's recursive drop all run on a
//! thread whose stack is sized for the deepest tree that size allows, never
//! on an async worker.

use std::collections::{HashMap, HashSet};

use rustpython_parser::ast::{self, Constant, Expr, Ranged, Stmt, Visitor};
use rustpython_parser::text_size::TextRange;
use rustpython_parser::{lexer, Mode, Parse, Tok};
use serde::Serialize;

/// The largest code checked, in bytes; request fields carrying code share it.
pub const MAX_CODE_BYTES: usize = 64 * 1024;
/// Nesting levels (brackets, and statements and expressions in the tree)
/// past which code is refused, as CPython refuses 200 nested brackets.
pub const MAX_NESTING: usize = 200;
/// At most this many problems are reported; the rest add nothing a fixer needs.
const MAX_PROBLEMS: usize = 50;
/// The check thread's stack. [`MAX_CODE_BYTES`] of `-` spell a tree 64 Ki
/// levels deep, which is walked only [`MAX_NESTING`] deep but dropped
/// whole, one recursive frame per level; this leaves room for that in
/// unoptimised builds. Only the pages a check touches are ever committed.
const CHECK_STACK_BYTES: usize = 256 << 20;

/// Modules generated code may import (and their submodules).
pub const ALLOWED_MODULES: [&str; 15] = [
    "backtesting",
    "numpy",
    "pandas",
    "math",
    "statistics",
    "datetime",
    "typing",
    "dataclasses",
    "functools",
    "itertools",
    "collections",
    "enum",
    "decimal",
    "warnings",
    "__future__",
];

/// Builtins that reach the file system or run code from a string.
const FORBIDDEN_BUILTINS: [&str; 5] = ["open", "eval", "exec", "compile", "__import__"];
/// Builtins whose attribute name must be a plain, non-dunder literal.
const ATTRIBUTE_BUILTINS: [&str; 4] = ["getattr", "setattr", "delattr", "hasattr"];
/// The only dunder name code may read.
const ALLOWED_DUNDER_NAMES: [&str; 1] = ["__name__"];

/// The checks, in the order they are reported.
pub const CHECKS: [&str; 4] = ["parses", "strategy_class", "imports", "forbidden_calls"];

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Problem {
    /// One of [`CHECKS`].
    pub check: &'static str,
    pub message: String,
    /// 1-based.
    pub line: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub passed: bool,
    /// Each of [`CHECKS`] with whether it passed; checks after a parse
    /// failure did not run and say so.
    pub checks: Vec<CheckResult>,
    pub problems: Vec<Problem>,
    /// The strategy class found, if any.
    pub strategy_class: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    /// `passed`, `failed` or `not_run`.
    pub status: &'static str,
}

impl Report {
    /// An answer without a code block: nothing to parse.
    pub fn no_code() -> Self {
        let problem = Problem {
            check: "parses",
            message: "SyntaxError: the answer contained no Python code; answer with one ```python block".into(),
            line: None,
        };
        Self::unparsed(problem)
    }

    /// The checker itself could not run (no thread to be had).
    fn not_checked() -> Self {
        Self::unparsed(Problem {
            check: "parses",
            message: "RuntimeError: the code could not be checked right now; try again".into(),
            line: None,
        })
    }

    /// Code that did not parse: the other checks could not run.
    fn unparsed(problem: Problem) -> Self {
        let checks = CHECKS
            .iter()
            .map(|&name| CheckResult { name, status: if name == "parses" { "failed" } else { "not_run" } })
            .collect();
        Self { passed: false, checks, problems: vec![problem], strategy_class: None }
    }

    /// The error type of the first problem: the one a fix should start with.
    pub fn error_type(&self) -> &'static str {
        self.problems.first().map_or("unknown_error", |p| error_type(&p.message))
    }

    /// The problems as one error text, as the fixer and clients read it.
    pub fn error_text(&self) -> String {
        self.problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("\n")
    }
}

/// Byte offsets to 1-based lines.
struct Lines(Vec<usize>);

impl Lines {
    fn new(code: &str) -> Self {
        Self(std::iter::once(0).chain(code.match_indices('\n').map(|(at, _)| at + 1)).collect())
    }

    fn of(&self, offset: usize) -> usize {
        self.0.partition_point(|start| *start <= offset)
    }

    fn of_range(&self, range: TextRange) -> usize {
        self.of(usize::from(range.start()))
    }
}

/// Checks `code` on a thread of its own (see [`CHECK_STACK_BYTES`]), so
/// no input can overflow an async worker's stack.
pub async fn check(code: &str) -> Report {
    let code = code.to_owned();
    let (answer, answered) = tokio::sync::oneshot::channel();
    let spawned =
        std::thread::Builder::new().name("python-check".into()).stack_size(CHECK_STACK_BYTES).spawn(move || {
            let _ = answer.send(check_here(&code));
        });
    if let Err(err) = spawned {
        tracing::error!(error = %err, "could not start a check thread");
        return Report::not_checked();
    }
    answered.await.unwrap_or_else(|_| Report::not_checked())
}

/// [`check`] for callers outside async code.
pub fn check_blocking(code: &str) -> Report {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("python-check".into())
            .stack_size(CHECK_STACK_BYTES)
            .spawn_scoped(scope, || check_here(code))
            .ok()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_else(Report::not_checked)
    })
}

/// The deepest bracket nesting, and where it first passed [`MAX_NESTING`].
/// The lexer is iterative, so this is safe on any input.
fn bracket_overflow(code: &str) -> Option<usize> {
    let mut depth = 0usize;
    for token in lexer::lex(code, Mode::Module) {
        let Ok((token, range)) = token else { return None };
        match token {
            Tok::Lpar | Tok::Lsqb | Tok::Lbrace => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Some(usize::from(range.start()));
                }
            }
            Tok::Rpar | Tok::Rsqb | Tok::Rbrace => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

fn check_here(code: &str) -> Report {
    if code.len() > MAX_CODE_BYTES {
        return Report::unparsed(Problem {
            check: "parses",
            message: format!(
                "SyntaxError: the code is {} bytes long; at most {MAX_CODE_BYTES} bytes are accepted",
                code.len()
            ),
            line: None,
        });
    }
    let lines = Lines::new(code);
    if let Some(offset) = bracket_overflow(code) {
        let line = lines.of(offset);
        return Report::unparsed(Problem {
            check: "parses",
            message: format!("SyntaxError: too many nested parentheses (more than {MAX_NESTING}) (line {line})"),
            line: Some(line),
        });
    }
    let suite = match ast::Suite::parse(code, "<strategy>") {
        Ok(suite) => suite,
        Err(err) => {
            let offset = usize::from(err.offset);
            let line = lines.of(offset);
            let column = offset - lines.0.get(line - 1).copied().unwrap_or(0) + 1;
            let problem = Problem {
                check: "parses",
                message: format!("SyntaxError: {} (line {line}, column {column})", err.error),
                line: Some(line),
            };
            return Report::unparsed(problem);
        }
    };

    // Read before the walk, which consumes the tree (a clone would recurse).
    let classes = top_level_classes(&suite, &lines);
    let mut walker =
        Walker { lines: &lines, problems: Vec::new(), strategy_bases: HashSet::new(), depth: 0, too_deep: None };
    for statement in suite {
        walker.visit_stmt(statement);
    }
    if let Some(too_deep) = walker.too_deep {
        return Report::unparsed(too_deep);
    }
    let (strategy_class, class_problem) = strategy_class(&classes, &walker.strategy_bases);
    let mut problems = walker.problems;
    problems.extend(class_problem);
    problems.sort_by_key(|p| (CHECKS.iter().position(|c| *c == p.check), p.line));
    problems.truncate(MAX_PROBLEMS);
    let checks = CHECKS
        .iter()
        .map(|&name| CheckResult {
            name,
            status: if problems.iter().any(|p| p.check == name) { "failed" } else { "passed" },
        })
        .collect();
    Report { passed: problems.is_empty(), checks, problems, strategy_class }
}

fn is_dunder(name: &str) -> bool {
    name.len() > 4 && name.starts_with("__") && name.ends_with("__")
}

fn module_allowed(module: &str) -> bool {
    let root = module.split('.').next().unwrap_or_default();
    ALLOWED_MODULES.contains(&root)
}

/// Walks every statement and expression, wherever nested.
struct Walker<'a> {
    lines: &'a Lines,
    problems: Vec<Problem>,
    /// Expressions naming `backtesting.Strategy` here: `Strategy` (or its
    /// alias) after `from backtesting import Strategy`, `bt.Strategy`
    /// after `import backtesting as bt`.
    strategy_bases: HashSet<String>,
    /// Statements, expressions and patterns open around the current node.
    depth: usize,
    /// Set when the tree nests past [`MAX_NESTING`]: the code is refused as
    /// CPython would refuse it, and nothing deeper is walked.
    too_deep: Option<Problem>,
}

impl Walker<'_> {
    /// Enters one level; false (and the refusal recorded) past the limit.
    fn descend(&mut self, range: TextRange) -> bool {
        self.depth += 1;
        if self.depth <= MAX_NESTING {
            return true;
        }
        if self.too_deep.is_none() {
            let line = self.lines.of_range(range);
            self.too_deep = Some(Problem {
                check: "parses",
                message: format!(
                    "SyntaxError: too many nested statements and expressions (more than {MAX_NESTING}) (line {line})"
                ),
                line: Some(line),
            });
        }
        false
    }

    fn report(&mut self, check: &'static str, range: TextRange, message: &str) {
        let line = self.lines.of_range(range);
        self.problems.push(Problem { check, message: format!("{message} (line {line})"), line: Some(line) });
    }

    fn refuse_import(&mut self, module: &str, range: TextRange) {
        self.report(
            "imports",
            range,
            &format!(
                "ImportError: import of '{module}' is not allowed; strategies may import only {}",
                ALLOWED_MODULES.join(", ")
            ),
        );
    }
}

impl Visitor for Walker<'_> {
    fn visit_stmt(&mut self, node: Stmt) {
        if self.descend(node.range()) {
            self.generic_visit_stmt(node);
        }
        self.depth -= 1;
    }

    fn visit_expr(&mut self, node: Expr) {
        if self.descend(node.range()) {
            self.generic_visit_expr(node);
        }
        self.depth -= 1;
    }

    fn visit_pattern(&mut self, node: ast::Pattern) {
        if self.descend(node.range()) {
            self.generic_visit_pattern(node);
        }
        self.depth -= 1;
    }

    fn visit_stmt_import(&mut self, node: ast::StmtImport) {
        for alias in &node.names {
            if !module_allowed(&alias.name) {
                self.refuse_import(&alias.name, alias.range);
            } else if alias.name.as_str() == "backtesting" {
                let bound = alias.asname.as_ref().unwrap_or(&alias.name);
                self.strategy_bases.insert(format!("{}.Strategy", bound.as_str()));
            }
        }
    }

    fn visit_stmt_import_from(&mut self, node: ast::StmtImportFrom) {
        let level = node.level.as_ref().map_or(0, ast::Int::to_u32);
        let module = node.module.as_ref().map(|m| m.as_str().to_string()).unwrap_or_default();
        if level > 0 {
            self.refuse_import(&format!("{}{module}", ".".repeat(level as usize)), node.range);
            return;
        }
        if !module_allowed(&module) {
            self.refuse_import(&module, node.range);
            return;
        }
        for alias in &node.names {
            if module == "backtesting" && alias.name.as_str() == "Strategy" {
                self.strategy_bases.insert(alias.asname.as_ref().unwrap_or(&alias.name).to_string());
            }
        }
    }

    fn visit_expr_name(&mut self, node: ast::ExprName) {
        let name = node.id.as_str();
        if FORBIDDEN_BUILTINS.contains(&name) {
            let error = if name == "open" { "PermissionError" } else { "RuntimeError" };
            self.report(
                "forbidden_calls",
                node.range,
                &format!("{error}: {name}() is not allowed in a strategy: it reaches files or runs code from text"),
            );
        } else if is_dunder(name) && !ALLOWED_DUNDER_NAMES.contains(&name) {
            self.report("forbidden_calls", node.range, &format!("RuntimeError: the name {name} is not allowed"));
        }
    }

    fn visit_expr_attribute(&mut self, node: ast::ExprAttribute) {
        if is_dunder(node.attr.as_str()) {
            let attr = node.attr.to_string();
            self.report(
                "forbidden_calls",
                node.range,
                &format!("AttributeError: access to the dunder attribute .{attr} is not allowed"),
            );
        }
        self.generic_visit_expr_attribute(node);
    }

    fn visit_expr_call(&mut self, node: ast::ExprCall) {
        if let Expr::Name(function) = node.func.as_ref() {
            let function = function.id.as_str();
            if ATTRIBUTE_BUILTINS.contains(&function) {
                match node.args.get(1) {
                    Some(Expr::Constant(ast::ExprConstant { value: Constant::Str(attr), .. })) if is_dunder(attr) => {
                        let message =
                            format!("AttributeError: {function}() on the dunder attribute '{attr}' is not allowed");
                        self.report("forbidden_calls", node.range, &message);
                    }
                    Some(Expr::Constant(ast::ExprConstant { value: Constant::Str(_), .. })) => {}
                    _ => {
                        let message = format!(
                            "AttributeError: {function}() needs a literal attribute name here; a computed one \
                             cannot be checked"
                        );
                        self.report("forbidden_calls", node.range, &message);
                    }
                }
            }
        }
        self.generic_visit_expr_call(node);
    }
}

/// The source text of a base-class expression: `Strategy`, `bt.Strategy`.
/// Iterative: a base may be an attribute chain of any length.
fn dotted(mut expr: &Expr) -> Option<String> {
    let mut parts = Vec::new();
    loop {
        match expr {
            Expr::Name(name) => {
                parts.push(name.id.as_str());
                break;
            }
            Expr::Attribute(attribute) => {
                parts.push(attribute.attr.as_str());
                expr = &attribute.value;
            }
            _ => return None,
        }
    }
    parts.reverse();
    Some(parts.join("."))
}

/// What the strategy-class check needs of a top-level class.
struct ClassInfo {
    name: String,
    line: usize,
    bases: Vec<String>,
    methods: HashSet<String>,
}

fn top_level_classes(suite: &[Stmt], lines: &Lines) -> Vec<ClassInfo> {
    suite
        .iter()
        .filter_map(|statement| match statement {
            Stmt::ClassDef(class) => Some(ClassInfo {
                name: class.name.to_string(),
                line: lines.of_range(class.range),
                bases: class.bases.iter().filter_map(dotted).collect(),
                methods: class
                    .body
                    .iter()
                    .filter_map(|item| match item {
                        Stmt::FunctionDef(function) => Some(function.name.to_string()),
                        Stmt::AsyncFunctionDef(function) => Some(function.name.to_string()),
                        _ => None,
                    })
                    .collect(),
            }),
            _ => None,
        })
        .collect()
}

/// The first top-level class deriving from `backtesting.Strategy` (directly
/// or through classes defined before it) that has `init` and `next`, its
/// own or inherited from those classes.
fn strategy_class(classes: &[ClassInfo], strategy_bases: &HashSet<String>) -> (Option<String>, Option<Problem>) {
    // Class name → the methods it has, for the module's Strategy subclasses.
    let mut strategies: HashMap<&str, HashSet<String>> = HashMap::new();
    let mut incomplete: Option<(&str, usize, Vec<&str>)> = None;
    for class in classes {
        let mut methods = class.methods.clone();
        let mut derives = false;
        for base in &class.bases {
            if strategy_bases.contains(base) {
                derives = true;
            } else if let Some(inherited) = strategies.get(base.as_str()) {
                derives = true;
                methods.extend(inherited.iter().cloned());
            }
        }
        if !derives {
            continue;
        }
        let missing: Vec<&str> = ["init", "next"].into_iter().filter(|m| !methods.contains(*m)).collect();
        if missing.is_empty() {
            return (Some(class.name.clone()), None);
        }
        if incomplete.is_none() {
            incomplete = Some((&class.name, class.line, missing));
        }
        strategies.insert(&class.name, methods);
    }
    let problem = match incomplete {
        Some((name, line, missing)) => Problem {
            check: "strategy_class",
            message: format!(
                "TypeError: class {name}(Strategy) does not define {}; backtesting.py needs both init() and next() \
                 (line {line})",
                missing.iter().map(|m| format!("{m}()")).collect::<Vec<_>>().join(" or ")
            ),
            line: Some(line),
        },
        None => Problem {
            check: "strategy_class",
            message: "RuntimeError: no class derives from backtesting.Strategy; write `from backtesting import \
                      Strategy` and `class MyStrategy(Strategy):` with init() and next()"
                .into(),
            line: None,
        },
    };
    (None, Some(problem))
}

/// The Python code in a model's answer: the first ```python block (or the
/// first fenced block), else the whole answer when it looks like code.
pub fn extract_python(answer: &str) -> Option<String> {
    let fenced = |fence: &str| -> Option<String> {
        let start = answer.find(fence)? + fence.len();
        let body = answer[start..].trim_start_matches(|c: char| c != '\n').strip_prefix('\n')?;
        let end = body.find("```").unwrap_or(body.len());
        Some(body[..end].trim_end().to_string() + "\n")
    };
    let code = fenced("```python").or_else(|| fenced("```py")).or_else(|| fenced("```")).or_else(|| {
        let trimmed = answer.trim();
        (trimmed.contains("class ") || trimmed.starts_with("import ") || trimmed.starts_with("from "))
            .then(|| trimmed.to_string() + "\n")
    })?;
    (!code.trim().is_empty()).then_some(code)
}

/// API_COMPAT.md's error types, read from an error text (a checker's
/// message or a real traceback): the last exception named wins, as in a
/// traceback the final line is the one raised.
pub fn error_type(text: &str) -> &'static str {
    const BY_EXCEPTION: [(&str, &str); 16] = [
        ("ModuleNotFoundError", "import_error"),
        ("ImportError", "import_error"),
        ("IndentationError", "syntax_error"),
        ("TabError", "syntax_error"),
        ("SyntaxError", "syntax_error"),
        ("AttributeError", "attribute_error"),
        ("TypeError", "type_error"),
        ("ValueError", "value_error"),
        ("IndexError", "index_error"),
        ("KeyError", "key_error"),
        ("TimeoutError", "timeout_error"),
        ("FileNotFoundError", "file_error"),
        ("PermissionError", "file_error"),
        ("UnicodeDecodeError", "encoding_error"),
        ("UnicodeEncodeError", "encoding_error"),
        ("RuntimeError", "runtime_error"),
    ];
    let found = BY_EXCEPTION
        .iter()
        .filter_map(|(exception, kind)| text.rfind(exception).map(|at| (at + exception.len(), *kind)))
        // The latest-ending match; at one end, the longer (more specific) name.
        .max_by_key(|(end, _)| *end);
    if let Some((_, kind)) = found {
        return kind;
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("timed out") || lower.contains("timeout") {
        "timeout_error"
    } else if lower.contains("invalid syntax") {
        "syntax_error"
    } else if lower.contains("no such file") || lower.contains("ioerror") || lower.contains("oserror") {
        "file_error"
    } else if lower.contains("codec") || lower.contains("encoding") {
        "encoding_error"
    } else if lower.contains("error") || lower.contains("exception") {
        "runtime_error"
    } else {
        "unknown_error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "import pandas as pd\nfrom backtesting import Strategy\nfrom backtesting.lib import crossover\n\n\
def SMA(values, n):\n    return pd.Series(values).rolling(n).mean()\n\n\
class SmaCross(Strategy):\n    n1 = 10\n\n    def init(self):\n        self.fast = self.I(SMA, self.data.Close, self.n1)\n\n    def next(self):\n        if crossover(self.fast, self.data.Close):\n            self.buy()\n\nif __name__ == '__main__':\n    pass\n";

    fn failed(code: &str) -> Vec<(&'static str, String)> {
        check_blocking(code).problems.into_iter().map(|p| (p.check, p.message)).collect()
    }

    #[test]
    fn a_proper_strategy_passes_every_check_blocking() {
        let report = check_blocking(GOOD);
        assert!(report.passed, "{:?}", report.problems);
        assert_eq!(report.strategy_class.as_deref(), Some("SmaCross"));
        assert!(report.checks.iter().all(|c| c.status == "passed"));
    }

    #[test]
    fn a_syntax_error_names_its_line_and_stops_the_other_checks() {
        let report = check_blocking(
            "from backtesting import Strategy\n\nclass Broken(Strategy)\n    def init(self):\n        pass\n",
        );
        assert!(!report.passed);
        assert_eq!(report.problems.len(), 1);
        assert!(report.problems[0].message.starts_with("SyntaxError: "), "{:?}", report.problems);
        assert_eq!(report.problems[0].line, Some(3));
        assert_eq!(report.checks[1].status, "not_run");
        assert_eq!(error_type(&report.error_text()), "syntax_error");
    }

    #[test]
    fn imports_outside_the_allow_list_are_refused_wherever_they_are() {
        for code in [
            "import os\n",
            "import subprocess as sp\n",
            "from os import path\n",
            "from . import secrets\n",
            "def f():\n    import socket\n",
            "import numpy, requests\n",
        ] {
            let problems = failed(&format!("{code}{}", GOOD));
            assert!(
                problems.iter().any(|(check, m)| *check == "imports" && m.starts_with("ImportError")),
                "{code}: {problems:?}"
            );
        }
        assert!(
            check_blocking(&format!("import numpy as np\nimport backtesting.lib\nfrom math import sqrt\n{GOOD}"))
                .passed
        );
    }

    #[test]
    fn forbidden_builtins_and_dunders_are_refused() {
        for (line, expected) in [
            ("data = open('/etc/passwd').read()", "PermissionError: open()"),
            ("eval('1 + 1')", "RuntimeError: eval()"),
            ("exec('x = 1')", "RuntimeError: exec()"),
            ("compile('1', 'f', 'eval')", "RuntimeError: compile()"),
            ("__import__('os')", "RuntimeError: __import__()"),
            ("runner = eval", "RuntimeError: eval()"),
            ("x = getattr(self, '__class__')", "AttributeError: getattr() on the dunder"),
            ("x = getattr(self, name)", "AttributeError: getattr() needs a literal"),
            ("x = self.__class__.__bases__", "AttributeError: access to the dunder attribute .__class__"),
            ("x = ().__class__", "AttributeError: access to the dunder attribute"),
            ("x = __builtins__", "RuntimeError: the name __builtins__"),
        ] {
            let code = GOOD.replace("        self.buy()\n", &format!("        self.buy()\n        {line}\n"));
            let problems = failed(&code);
            assert!(problems.iter().any(|(_, m)| m.starts_with(expected)), "{line}: {problems:?}");
        }
        let literal =
            GOOD.replace("        self.buy()\n", "        self.buy()\n        size = getattr(self, 'size', 1)\n");
        assert!(check_blocking(&literal).passed, "{:?}", check_blocking(&literal).problems);
    }

    #[test]
    fn the_strategy_class_must_derive_from_backtesting_and_define_init_and_next() {
        let no_class = "import pandas as pd\n\ndef f():\n    return 1\n";
        assert!(failed(no_class).iter().any(|(c, m)| *c == "strategy_class" && m.starts_with("RuntimeError")));

        let wrong_base = GOOD.replace("class SmaCross(Strategy):", "class SmaCross(object):");
        assert!(failed(&wrong_base).iter().any(|(c, _)| *c == "strategy_class"));

        let no_next = "from backtesting import Strategy\n\nclass Half(Strategy):\n    def init(self):\n        pass\n";
        let problems = failed(no_next);
        assert!(
            problems.iter().any(|(_, m)| m.starts_with("TypeError: class Half(Strategy) does not define next()")),
            "{problems:?}"
        );
        assert_eq!(error_type(&check_blocking(no_next).error_text()), "type_error");

        let aliased = "import backtesting as bt\n\nclass Base(bt.Strategy):\n    def init(self):\n        pass\n\nclass Child(Base):\n    def next(self):\n        pass\n";
        let report = check_blocking(aliased);
        assert!(report.passed, "{:?}", report.problems);
        assert_eq!(report.strategy_class.as_deref(), Some("Child"));
    }

    #[test]
    fn the_python_block_is_extracted() {
        let answer = "Here it is:\n```python\nclass A:\n    pass\n```\nEnjoy.";
        assert_eq!(extract_python(answer).as_deref(), Some("class A:\n    pass\n"));
        assert_eq!(extract_python("```\nimport math\n```").as_deref(), Some("import math\n"));
        assert_eq!(
            extract_python("from backtesting import Strategy").as_deref(),
            Some("from backtesting import Strategy\n")
        );
        assert_eq!(extract_python("I cannot help with that."), None);
    }

    #[test]
    fn error_types_follow_the_raised_exception() {
        let traceback =
            "Traceback (most recent call last):\n  File \"s.py\", line 3, in next\n    x = d['k']\nKeyError: 'k'";
        assert_eq!(error_type(traceback), "key_error");
        assert_eq!(error_type("ModuleNotFoundError: No module named 'talib'"), "import_error");
        assert_eq!(error_type("IndentationError: unexpected indent"), "syntax_error");
        assert_eq!(error_type("FileNotFoundError: [Errno 2] No such file"), "file_error");
        assert_eq!(error_type("UnicodeDecodeError: 'utf-8' codec can't decode"), "encoding_error");
        assert_eq!(error_type("ValueError: could not convert"), "value_error");
        assert_eq!(error_type("IndexError: list index out of range"), "index_error");
        assert_eq!(error_type("the backtest timed out after 30 s"), "timeout_error");
        assert_eq!(error_type("RuntimeError: boom"), "runtime_error");
        assert_eq!(error_type("something odd"), "unknown_error");
    }
}
