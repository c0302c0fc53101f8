//! Native parser for the bash assignment subset used by nearly all pi-gen configs.
//!
//! The subset is what bash would run without executing anything: assignment statements
//! (`A=1 B=2`, `A+=x`), `export`/`readonly` with assignments or names, comments, `;`, quoting
//! (`'…'`, `"…"`, `\`), line continuations, `$VAR`, `${VAR}`, `${VAR:-w}`, `${VAR-w}`,
//! `${VAR:+w}`, `${VAR+w}` and `~`/`~/…` in assignment values. The values are exactly what bash
//! would assign (checked against bash by the parity tests). Anything else makes [`parse`] answer
//! [`Parsed::NeedsBash`] with the first such construct, and the file is evaluated by bash.
//!
//! Bash details this module reproduces (each was checked against bash 5.2):
//! - assignment statements are performed left to right (`A=1 B=$A` gives `B=1`), while the
//!   arguments of `export`/`readonly` are all expanded before any of them is assigned;
//! - no word splitting, globbing or brace expansion in assignment values; `export`/`readonly`
//!   arguments are not split or globbed either, but they *are* brace-expanded, so an unquoted
//!   `{` there goes to bash;
//! - tilde expansion at the start of a value, after each unquoted `:` and at the start of the
//!   word of `${X:-word}`, never inside double quotes;
//! - inside `"${X:-word}"`, single quotes are literal, `\}` is an escaped `}` and nested double
//!   quotes quote;
//! - the first unquoted `}` ends a `${…}` (braces are not counted);
//! - backslash-newline disappears before tokenizing (`$HO\⏎ME` is `$HOME`), except inside
//!   single quotes, in comments and after an escaping backslash;
//! - a backslash at the very end of the file is a literal backslash;
//! - assigning to a readonly variable in an assignment statement fails, and bash then skips the
//!   rest of that line; `export`/`readonly` only fail for that one name.
use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::{Assignment, Origin};
use crate::error::ConfigError;

/// A file the static parser understood completely.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaticFile {
    /// In file order; a name may appear more than once (the last one wins).
    pub assignments: Vec<Assignment>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    Static(StaticFile),
    /// The file uses a construct outside the subset (first one found): evaluate it with bash.
    NeedsBash {
        line: usize,
        construct: String,
    },
}

/// Parses `text` (the contents of `path`). `lookup` resolves names the file itself has not
/// assigned yet (earlier files, then the process environment).
pub fn parse(
    text: &str,
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, ConfigError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
        line: 1,
        path,
        lookup,
        vars: HashMap::new(),
        readonly: HashSet::new(),
        discard: None,
        out: StaticFile::default(),
    };
    match parser.run() {
        Ok(()) => Ok(Parsed::Static(parser.out)),
        Err(Stop::Bash { line, construct }) => Ok(Parsed::NeedsBash { line, construct }),
        Err(Stop::Error(e)) => Err(e),
    }
}

/// Variables bash computes itself: their value does not come from the environment (or changes
/// by itself), so reading or assigning one needs bash. The same list `eval` never imports.
fn is_bash_managed(name: &str) -> bool {
    super::eval::is_bash_variable(name)
}

/// Variables bash gives a value of its own when the environment does not have them.
fn is_bash_defaulted(name: &str) -> bool {
    matches!(name, "PATH" | "SHELL" | "TERM" | "HOSTNAME")
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Characters that end an unquoted word.
fn is_meta(c: char) -> bool {
    matches!(
        c,
        ' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')'
    )
}

/// Why parsing stopped early.
enum Stop {
    /// A construct outside the subset: bash must evaluate the file.
    Bash { line: usize, construct: String },
    /// A real syntax error.
    Error(ConfigError),
}

fn bash<T>(line: usize, construct: impl Into<String>) -> Result<T, Stop> {
    Err(Stop::Bash {
        line,
        construct: construct.into(),
    })
}

/// One piece of a word, after quote removal.
#[derive(Clone, Debug)]
enum Piece {
    Lit(String),
    /// `~` in a tilde position: `$HOME`.
    Tilde {
        line: usize,
    },
    /// `$NAME`, `${NAME}` or `${NAME<op>word}`.
    Param {
        name: String,
        line: usize,
        op: Option<(Op, Vec<Piece>)>,
    },
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// `:-` (colon) or `-`: the word when unset (or empty).
    Default { colon: bool },
    /// `:+` (colon) or `+`: the word when set (and non-empty).
    Alternative { colon: bool },
}

#[derive(Default)]
struct Pieces(Vec<Piece>);

impl Pieces {
    fn push_char(&mut self, c: char) {
        match self.0.last_mut() {
            Some(Piece::Lit(s)) => s.push(c),
            _ => self.0.push(Piece::Lit(c.to_string())),
        }
    }

    fn push(&mut self, piece: Piece) {
        self.0.push(piece);
    }
}

/// A word of a simple command.
struct Word {
    line: usize,
    /// `NAME=` or `NAME+=` (the bool) written unquoted at the start: an assignment word.
    assign: Option<(String, bool)>,
    pieces: Vec<Piece>,
    /// No quotes, escapes or expansions were used: the word's literal text.
    plain: bool,
    /// An unquoted `{` outside `${`: brace expansion applies where the word is an argument.
    brace: bool,
}

impl Word {
    fn plain_text(&self) -> Option<String> {
        if !self.plain {
            return None;
        }
        let mut s = String::new();
        for p in &self.pieces {
            match p {
                Piece::Lit(l) => s.push_str(l),
                _ => return None,
            }
        }
        Some(s)
    }
}

/// Per-word lexing state.
#[derive(Default)]
struct WordFlags {
    plain: bool,
    brace: bool,
}

/// After a readonly violation in an assignment statement bash skips the rest of the line.
struct Discard {
    warning: usize,
    line: usize,
    skipped_something: bool,
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    path: &'a Path,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Values assigned by this file so far.
    vars: HashMap<String, String>,
    readonly: HashSet<String>,
    discard: Option<Discard>,
    out: StaticFile,
}

impl Parser<'_> {
    // Bash removes backslash-newline before it looks at anything else (even inside names:
    // `$HO\⏎ME` is `$HOME`), except in single quotes, in comments and right after an escaping
    // backslash. `peek`/`peek_at`/`bump` see the text without them; the `_raw` forms do not.

    fn is_continuation(&self, i: usize) -> bool {
        self.chars.get(i) == Some(&'\\') && self.chars.get(i + 1) == Some(&'\n')
    }

    /// Raw index of the `n`-th character ahead, continuations skipped.
    fn logical(&self, n: usize) -> usize {
        let mut i = self.pos;
        for _ in 0..n {
            while self.is_continuation(i) {
                i += 2;
            }
            i += 1;
        }
        while self.is_continuation(i) {
            i += 2;
        }
        i
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.logical(0)).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.logical(n)).copied()
    }

    /// Steps over continuations at the current position.
    fn settle(&mut self) {
        while self.is_continuation(self.pos) {
            self.pos += 2;
            self.line += 1;
        }
    }

    /// The line of the next character.
    fn here(&mut self) -> usize {
        self.settle();
        self.line
    }

    fn bump(&mut self) -> Option<char> {
        self.settle();
        self.bump_raw()
    }

    fn peek_raw(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump_raw(&mut self) -> Option<char> {
        let c = self.peek_raw()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn error<T>(&self, line: usize, msg: impl std::fmt::Display) -> Result<T, Stop> {
        Err(Stop::Error(ConfigError::new(format!(
            "{}:{}: {}",
            self.path.display(),
            line,
            msg
        ))))
    }

    /// Spaces, tabs and line continuations between words.
    fn skip_blanks(&mut self) {
        while let Some(' ' | '\t') = self.peek() {
            self.bump();
        }
        self.settle();
    }

    /// A comment ends at the newline, even after a backslash.
    fn skip_comment(&mut self) {
        while !matches!(self.peek_raw(), None | Some('\n')) {
            self.bump_raw();
        }
    }

    fn run(&mut self) -> Result<(), Stop> {
        loop {
            self.skip_blanks();
            match self.peek() {
                None => {
                    self.end_line();
                    return Ok(());
                }
                Some('\n') => {
                    self.bump();
                    self.end_line();
                }
                Some('#') => self.skip_comment(),
                Some(';') => return bash(self.line, "`;` without a command before it"),
                Some(c) if is_meta(c) => return self.operator(),
                Some(_) => self.command()?,
            }
        }
    }

    /// The end of a line ends bash's skipping after a readonly violation.
    fn end_line(&mut self) {
        if let Some(d) = self.discard.take() {
            if d.skipped_something {
                let w = &mut self.out.warnings[d.warning];
                w.push_str(&format!(
                    "; as bash does, the rest of line {} was skipped too",
                    d.line
                ));
            }
        }
    }

    /// An operator character where a word or the end of a command was expected.
    fn operator<T>(&self) -> Result<T, Stop> {
        let construct = match (self.peek(), self.peek_at(1)) {
            (Some('&'), Some('&')) => "`&&` list",
            (Some('&'), _) => "background job `&`",
            (Some('|'), Some('|')) => "`||` list",
            (Some('|'), _) => "pipeline `|`",
            (Some('<'), Some('<')) => "here-document or here-string `<<`",
            (Some('<'), _) => "redirection `<`",
            (Some('>'), _) => "redirection `>`",
            (Some('('), _) => "subshell `( … )`",
            (Some(')'), _) => "unexpected `)`",
            (Some(';'), Some(';')) => "`;;` outside `case`",
            _ => "shell operator",
        };
        bash(self.line, construct)
    }

    /// After a word: is the command finished? Consumes a `;`, a comment (not the newline).
    fn at_command_end(&mut self) -> Result<bool, Stop> {
        self.skip_blanks();
        match self.peek() {
            None | Some('\n') => Ok(true),
            Some('#') => {
                self.skip_comment();
                Ok(true)
            }
            Some(';') if self.peek_at(1) != Some(';') => {
                self.bump();
                Ok(true)
            }
            Some(c) if is_meta(c) => self.operator(),
            Some(_) => Ok(false),
        }
    }

    fn command(&mut self) -> Result<(), Stop> {
        let first = self.word()?;
        if first.assign.is_some() {
            self.assign_now(first)?;
            while !self.at_command_end()? {
                let w = self.word()?;
                if w.assign.is_none() {
                    let what = match w.plain_text() {
                        Some(t) => format!("command `{t}` run with an assignment before it"),
                        None => "command run with an assignment before it".to_string(),
                    };
                    return bash(w.line, what);
                }
                self.assign_now(w)?;
            }
            return Ok(());
        }
        match first.plain_text().as_deref() {
            Some(builtin @ ("export" | "readonly")) => {
                self.declaration(builtin == "readonly", first.line)
            }
            _ => {
                self.skip_blanks();
                let next = self.peek();
                bash(first.line, describe_command(&first, next))
            }
        }
    }

    /// `export …` / `readonly …`: all arguments are expanded first, then applied in order.
    fn declaration(&mut self, readonly: bool, line: usize) -> Result<(), Stop> {
        let builtin = if readonly { "readonly" } else { "export" };
        let mut args = Vec::new();
        while !self.at_command_end()? {
            args.push(self.word()?);
        }
        if args.is_empty() {
            return bash(
                line,
                format!("`{builtin}` without arguments (it prints variables)"),
            );
        }
        let mut actions = Vec::new();
        for arg in args {
            if arg.brace {
                return bash(
                    arg.line,
                    format!("brace expansion in a `{builtin}` argument"),
                );
            }
            match arg.assign {
                Some((name, append)) => {
                    if is_bash_managed(&name) {
                        return bash(
                            arg.line,
                            format!("assignment to bash's own variable {name}"),
                        );
                    }
                    let value = self.eval(&arg.pieces)?;
                    actions.push((name, Some((value, append)), arg.line));
                }
                None => match arg.plain_text() {
                    Some(name) if super::is_valid_name(&name) => {
                        actions.push((name, None, arg.line))
                    }
                    Some(t) if t.starts_with('-') => {
                        return bash(arg.line, format!("`{builtin} {t}` (an option)"));
                    }
                    _ => {
                        return bash(
                            arg.line,
                            format!("`{builtin}` argument that is not NAME or NAME=value"),
                        );
                    }
                },
            }
        }
        if let Some(d) = &mut self.discard {
            d.skipped_something = true;
            return Ok(());
        }
        for (name, value, line) in actions {
            let Some((value, append)) = value else {
                if readonly {
                    self.readonly.insert(name);
                }
                continue;
            };
            if self.readonly.contains(&name) {
                self.warn_readonly(&name, line);
                continue;
            }
            self.set(name.clone(), value, append, line);
            if readonly {
                self.readonly.insert(name);
            }
        }
        Ok(())
    }

    /// One word of an assignment statement, performed at once (left to right, as bash does).
    fn assign_now(&mut self, word: Word) -> Result<(), Stop> {
        let (name, append) = word.assign.expect("assignment word");
        if is_bash_managed(&name) {
            return bash(
                word.line,
                format!("assignment to bash's own variable {name}"),
            );
        }
        if let Some(d) = &mut self.discard {
            d.skipped_something = true;
            return Ok(());
        }
        let value = self.eval(&word.pieces)?;
        if self.readonly.contains(&name) {
            let warning = self.warn_readonly(&name, word.line);
            self.discard = Some(Discard {
                warning,
                line: word.line,
                skipped_something: false,
            });
            return Ok(());
        }
        self.set(name, value, append, word.line);
        Ok(())
    }

    fn warn_readonly(&mut self, name: &str, line: usize) -> usize {
        self.out.warnings.push(format!(
            "{}:{}: {} is readonly; assignment ignored",
            self.path.display(),
            line,
            name
        ));
        self.out.warnings.len() - 1
    }

    fn set(&mut self, name: String, value: String, append: bool, line: usize) {
        let value = if append {
            let mut old = self
                .vars
                .get(&name)
                .cloned()
                .or_else(|| (self.lookup)(&name))
                .unwrap_or_default();
            old.push_str(&value);
            old
        } else {
            value
        };
        self.vars.insert(name.clone(), value.clone());
        self.out.assignments.push(Assignment {
            name,
            value,
            origin: Origin::File {
                path: self.path.to_path_buf(),
                line: Some(line),
            },
        });
    }

    /// A variable's current value; `None` when unset.
    fn var(&self, name: &str, line: usize) -> Result<Option<String>, Stop> {
        if is_bash_managed(name) {
            return bash(line, format!("bash's own variable ${name}"));
        }
        if let Some(v) = self.vars.get(name) {
            return Ok(Some(v.clone()));
        }
        if let Some(v) = (self.lookup)(name) {
            return Ok(Some(v));
        }
        if is_bash_defaulted(name) {
            return bash(
                line,
                format!("${name}, which bash sets itself when the environment lacks it"),
            );
        }
        Ok(None)
    }

    fn eval(&self, pieces: &[Piece]) -> Result<String, Stop> {
        let mut s = String::new();
        for piece in pieces {
            match piece {
                Piece::Lit(l) => s.push_str(l),
                Piece::Tilde { line } => match self.var("HOME", *line)? {
                    Some(home) => s.push_str(&home),
                    None => {
                        return bash(*line, "`~` with HOME unset (bash asks the user database)")
                    }
                },
                Piece::Param { name, line, op } => {
                    let value = self.var(name, *line)?;
                    match op {
                        None => s.push_str(value.as_deref().unwrap_or("")),
                        Some((Op::Default { colon }, word)) => match value {
                            Some(v) if !(*colon && v.is_empty()) => s.push_str(&v),
                            _ => s.push_str(&self.eval(word)?),
                        },
                        Some((Op::Alternative { colon }, word)) => match value {
                            Some(v) if !(*colon && v.is_empty()) => s.push_str(&self.eval(word)?),
                            _ => {}
                        },
                    }
                }
            }
        }
        Ok(s)
    }

    /// Lexes one word starting at the current position (not blank, not an operator).
    fn word(&mut self) -> Result<Word, Stop> {
        let line = self.here();
        let assign = self.assignment_prefix()?;
        if let (Some((name, _)), Some('(')) = (&assign, self.peek()) {
            return bash(line, format!("array assignment {name}=(…)"));
        }
        let mut flags = WordFlags {
            plain: true,
            brace: false,
        };
        let mut pieces = Pieces::default();
        self.unquoted(None, assign.is_some(), &mut flags, &mut pieces)?;
        Ok(Word {
            line,
            assign,
            pieces: pieces.0,
            plain: flags.plain,
            brace: flags.brace,
        })
    }

    /// Consumes `NAME=` or `NAME+=` if the word starts with one.
    fn assignment_prefix(&mut self) -> Result<Option<(String, bool)>, Stop> {
        if !self.peek().is_some_and(is_name_start) {
            return Ok(None);
        }
        let mut len = 0;
        let mut name = String::new();
        while let Some(c) = self.peek_at(len).filter(|&c| is_name_char(c)) {
            name.push(c);
            len += 1;
        }
        let (append, skip) = match (self.peek_at(len), self.peek_at(len + 1)) {
            (Some('='), _) => (false, 1),
            (Some('+'), Some('=')) => (true, 2),
            (Some('['), _) => {
                return bash(self.line, format!("array element assignment {name}[…]"))
            }
            _ => return Ok(None),
        };
        for _ in 0..len + skip {
            self.bump();
        }
        Ok(Some((name, append)))
    }

    /// Unquoted text: a whole word (`brace` is None; ends at a metacharacter) or the word of
    /// `${X:-word}` outside double quotes (`brace` is the line of `${`; ends at `}`).
    fn unquoted(
        &mut self,
        brace: Option<usize>,
        assign: bool,
        flags: &mut WordFlags,
        out: &mut Pieces,
    ) -> Result<(), Stop> {
        let mut tilde_ok = assign;
        loop {
            let Some(c) = self.peek() else {
                return match brace {
                    Some(open) => self.unterminated_brace(open),
                    None => Ok(()),
                };
            };
            match brace {
                None if is_meta(c) => return Ok(()),
                Some(_) if c == '}' => {
                    self.bump();
                    return Ok(());
                }
                _ => {}
            }
            if c == '~' && tilde_ok {
                self.tilde(brace.is_some(), out)?;
                tilde_ok = false;
                continue;
            }
            tilde_ok = false;
            match c {
                '\\' => {
                    self.bump();
                    flags.plain = false;
                    match self.bump_raw() {
                        // A backslash at the very end of the file stays.
                        None => out.push_char('\\'),
                        Some(c) => out.push_char(c),
                    }
                }
                '\'' => {
                    flags.plain = false;
                    self.single_quoted(out)?;
                }
                '"' => {
                    flags.plain = false;
                    self.double_quoted(out)?;
                }
                '$' => {
                    flags.plain = false;
                    self.dollar(false, assign, flags, out)?;
                }
                '`' => return bash(self.here(), "command substitution `…`"),
                _ => {
                    self.bump();
                    if c == '{' {
                        flags.brace = true;
                    }
                    if c == ':' {
                        tilde_ok = assign;
                    }
                    out.push_char(c);
                }
            }
        }
    }

    /// `~` in a tilde position (start of an assignment value or `${…}` word, or after `:`).
    fn tilde(&mut self, in_brace: bool, out: &mut Pieces) -> Result<(), Stop> {
        let line = self.here();
        let expands = match self.peek_at(1) {
            None | Some('/' | ':') => true,
            Some('}') if in_brace => true,
            Some(c) if !in_brace && is_meta(c) => true,
            // A quoted or expanded tilde-prefix is no login name: the `~` stays.
            Some('\'' | '"' | '\\' | '$' | '`') => false,
            Some(c) => {
                return bash(
                    line,
                    format!("tilde expansion `~{c}…` (another user's home or the directory stack)"),
                )
            }
        };
        self.bump();
        if expands {
            out.push(Piece::Tilde { line });
        } else {
            out.push_char('~');
        }
        Ok(())
    }

    fn single_quoted(&mut self, out: &mut Pieces) -> Result<(), Stop> {
        let open = self.here();
        self.bump();
        loop {
            match self.bump_raw() {
                None => {
                    return self.error(
                        open,
                        "unterminated single quote (opened here); close it with '",
                    );
                }
                Some('\'') => return Ok(()),
                Some(c) => out.push_char(c),
            }
        }
    }

    fn double_quoted(&mut self, out: &mut Pieces) -> Result<(), Stop> {
        let open = self.here();
        self.bump();
        let mut flags = WordFlags::default();
        loop {
            match self.peek() {
                None => {
                    return self.error(
                        open,
                        "unterminated double quote (opened here); close it with \"",
                    );
                }
                Some('"') => {
                    self.bump();
                    return Ok(());
                }
                Some('\\') => {
                    self.bump();
                    match self.peek_raw() {
                        Some(c @ ('$' | '`' | '"' | '\\')) => {
                            self.bump_raw();
                            out.push_char(c);
                        }
                        _ => out.push_char('\\'),
                    }
                }
                Some('$') => self.dollar(true, false, &mut flags, out)?,
                Some('`') => return bash(self.here(), "command substitution `…`"),
                Some(c) => {
                    self.bump();
                    out.push_char(c);
                }
            }
        }
    }

    /// The word of `"${X:-word}"` (inside double quotes): ends at the first unquoted `}`.
    fn double_quoted_brace_word(&mut self, open: usize, out: &mut Pieces) -> Result<(), Stop> {
        let mut flags = WordFlags::default();
        loop {
            match self.peek() {
                None => return self.unterminated_brace(open),
                Some('}') => {
                    self.bump();
                    return Ok(());
                }
                Some('\\') => {
                    self.bump();
                    match self.peek_raw() {
                        Some(c @ ('$' | '`' | '"' | '\\' | '}')) => {
                            self.bump_raw();
                            out.push_char(c);
                        }
                        _ => out.push_char('\\'),
                    }
                }
                Some('"') => self.double_quoted(out)?,
                Some('$') => self.dollar(true, false, &mut flags, out)?,
                Some('`') => return bash(self.here(), "command substitution `…`"),
                Some(c) => {
                    self.bump();
                    out.push_char(c);
                }
            }
        }
    }

    /// `${` followed by something that is no parameter expansion. Bash looks for the closing
    /// `}` first: without one it is a syntax error, with one an expansion error at run time.
    fn bad_substitution<T>(&self, open: usize) -> Result<T, Stop> {
        if self.chars[self.pos..].contains(&'}') {
            bash(open, "bad substitution ${…}")
        } else {
            self.unterminated_brace(open)
        }
    }

    fn unterminated_brace<T>(&self, open: usize) -> Result<T, Stop> {
        self.error(open, "unterminated ${ (opened here); close it with }")
    }

    /// At a `$`: a parameter expansion, a literal `$`, or a construct for bash.
    fn dollar(
        &mut self,
        dquoted: bool,
        assign: bool,
        flags: &mut WordFlags,
        out: &mut Pieces,
    ) -> Result<(), Stop> {
        let line = self.here();
        self.bump();
        match self.peek() {
            Some('{') => {
                self.bump();
                self.brace_param(line, dquoted, assign, flags, out)
            }
            Some('(') if self.peek_at(1) == Some('(') => bash(line, "arithmetic expansion $((…))"),
            Some('(') => bash(line, "command substitution $(…)"),
            Some('[') => bash(line, "arithmetic expansion $[…]"),
            Some(c) if is_name_start(c) => {
                let name = self.name();
                out.push(Piece::Param {
                    name,
                    line,
                    op: None,
                });
                Ok(())
            }
            Some(c) if c.is_ascii_digit() => bash(line, format!("positional parameter ${c}")),
            Some(c @ ('@' | '*' | '#' | '?' | '-' | '$' | '!')) => {
                bash(line, format!("special parameter ${c}"))
            }
            Some('\'') if !dquoted => bash(line, "ANSI-C quoting $'…'"),
            Some('"') if !dquoted => bash(line, "locale translation $\"…\""),
            _ => {
                out.push_char('$');
                Ok(())
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek().filter(|&c| is_name_char(c)) {
            self.bump();
            name.push(c);
        }
        name
    }

    /// After `${`.
    fn brace_param(
        &mut self,
        open: usize,
        dquoted: bool,
        assign: bool,
        flags: &mut WordFlags,
        out: &mut Pieces,
    ) -> Result<(), Stop> {
        let name = match self.peek() {
            None => return self.unterminated_brace(open),
            Some('#') => return bash(open, "length expansion ${#…}"),
            Some('!') => return bash(open, "indirect expansion ${!…}"),
            Some(c) if c.is_ascii_digit() || "@*?-$".contains(c) => {
                return bash(open, format!("special parameter ${{{c}…}}"));
            }
            Some(c) if is_name_start(c) => self.name(),
            Some(_) => return self.bad_substitution(open),
        };
        let colon = self.peek() == Some(':');
        let op_char = if colon { self.peek_at(1) } else { self.peek() };
        let op = match op_char {
            None => return self.unterminated_brace(open),
            Some('}') if !colon => {
                self.bump();
                out.push(Piece::Param {
                    name,
                    line: open,
                    op: None,
                });
                return Ok(());
            }
            Some('-') => Op::Default { colon },
            Some('+') => Op::Alternative { colon },
            Some(c @ ('?' | '=')) => {
                let c = if colon {
                    format!(":{c}")
                } else {
                    c.to_string()
                };
                let what = if c.ends_with('?') {
                    "fails when unset"
                } else {
                    "assigns a default"
                };
                return bash(open, format!("${{{name}{c}…}} ({what})"));
            }
            Some(_) if colon => return bash(open, format!("substring expansion ${{{name}:…}}")),
            Some('#' | '%') => {
                return bash(
                    open,
                    format!("pattern removal ${{{name}#…}} / ${{{name}%…}}"),
                )
            }
            Some('/') => return bash(open, format!("pattern substitution ${{{name}/…}}")),
            Some('^' | ',') => return bash(open, format!("case modification ${{{name}^…}}")),
            Some('@') => return bash(open, format!("transformation ${{{name}@…}}")),
            Some('[') => return bash(open, format!("array subscript ${{{name}[…]}}")),
            Some(_) => return self.bad_substitution(open),
        };
        self.bump();
        if colon {
            self.bump();
        }
        let mut word = Pieces::default();
        if dquoted {
            self.double_quoted_brace_word(open, &mut word)?;
        } else {
            self.unquoted(Some(open), assign, flags, &mut word)?;
        }
        out.push(Piece::Param {
            name,
            line: open,
            op: Some((op, word.0)),
        });
        Ok(())
    }
}

/// What a command word that is neither an assignment nor `export`/`readonly` is.
fn describe_command(word: &Word, next: Option<char>) -> String {
    let Some(text) = word.plain_text() else {
        return "command (a word that is not NAME=value)".to_string();
    };
    if next == Some('(') {
        return format!("function definition {text}()");
    }
    if !text.is_empty()
        && text.chars().all(|c| c.is_ascii_digit())
        && matches!(next, Some('<' | '>'))
    {
        return format!("redirection {text}{}", next.unwrap());
    }
    match text.as_str() {
        "if" | "then" | "elif" | "else" | "fi" => "`if` statement".into(),
        "case" | "esac" => "`case` statement".into(),
        "for" | "select" => format!("`{text}` loop"),
        "while" | "until" | "do" | "done" => "`while`/`until` loop".into(),
        "function" => "function definition".into(),
        "[[" | "]]" => "`[[ … ]]` test".into(),
        "[" | "test" => "`[ … ]` test".into(),
        "{" | "}" => "command group `{ … }`".into(),
        "!" => "negated command `!`".into(),
        "source" | "." => format!("`{text}` of another file"),
        _ => format!("command `{text}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/u".into()),
            "USER" => Some("u".into()),
            "FROM_ENV" => Some("env value".into()),
            "EMPTY" => Some(String::new()),
            "PATH" => Some("/usr/bin:/bin".into()),
            _ => None,
        }
    }

    fn parsed(text: &str) -> Parsed {
        parse(text, Path::new("my.cfg"), &lookup).expect("no syntax error")
    }

    fn file(text: &str) -> StaticFile {
        match parsed(text) {
            Parsed::Static(f) => f,
            other => panic!("expected a static file for {text:?}, got {other:?}"),
        }
    }

    /// (name, value) of every assignment, in order.
    fn assigned(text: &str) -> Vec<(String, String)> {
        file(text)
            .assignments
            .into_iter()
            .map(|a| (a.name, a.value))
            .collect()
    }

    /// The effective value of one variable.
    fn value(text: &str, name: &str) -> String {
        let f = file(text);
        match f.assignments.iter().rev().find(|a| a.name == name) {
            Some(a) => a.value.clone(),
            None => panic!("{name} not assigned by {text:?}: {f:?}"),
        }
    }

    fn needs_bash(text: &str) -> (usize, String) {
        match parsed(text) {
            Parsed::NeedsBash { line, construct } => (line, construct),
            other => panic!("expected NeedsBash for {text:?}, got {other:?}"),
        }
    }

    fn error(text: &str) -> String {
        match parse(text, Path::new("my.cfg"), &lookup) {
            Err(e) => {
                assert_eq!(e.0.len(), 1, "one line: {e:?}");
                e.0[0].clone()
            }
            Ok(p) => panic!("expected an error for {text:?}, got {p:?}"),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn comments_blank_lines_and_separators() {
        let text = "# a comment\n\n   \nA=1\nB=2 # trailing\nC=3;D=4 ; E=5;\n\t F=6\n#G=7\n";
        assert_eq!(
            assigned(text),
            pairs(&[
                ("A", "1"),
                ("B", "2"),
                ("C", "3"),
                ("D", "4"),
                ("E", "5"),
                ("F", "6")
            ])
        );
        assert_eq!(value("A=a#b #c", "A"), "a#b");
        assert_eq!(value("A=2#", "A"), "2#");
        assert_eq!(value("A=1;#c", "A"), "1");
        assert_eq!(assigned(""), vec![]);
        assert_eq!(assigned("# only\n"), vec![]);
    }

    #[test]
    fn several_assignments_are_done_left_to_right() {
        assert_eq!(assigned("A=1 B=2"), pairs(&[("A", "1"), ("B", "2")]));
        assert_eq!(value("A=1 B=$A", "B"), "1");
        assert_eq!(value("A=1 B=$A; A=$B$B", "A"), "11");
        assert_eq!(
            assigned("A= B=2 C= "),
            pairs(&[("A", ""), ("B", "2"), ("C", "")])
        );
    }

    #[test]
    fn export_forms() {
        assert_eq!(assigned("export A=1"), pairs(&[("A", "1")]));
        assert_eq!(assigned("export A"), vec![]);
        assert_eq!(assigned("export\tA=1\t B\n"), pairs(&[("A", "1")]));
        assert_eq!(assigned("A=1\nexport A"), pairs(&[("A", "1")]));
        // Arguments are all expanded before any is assigned.
        assert_eq!(value("A=1; export A=2 B=$A", "B"), "1");
        assert_eq!(value("export A=x A+=y", "A"), "xy");
        assert_eq!(value("export A=a B=~/b", "B"), "/home/u/b");
    }

    #[test]
    fn append() {
        assert_eq!(value("A+=x", "A"), "x");
        assert_eq!(value("B=1\nB+=2", "B"), "12");
        assert_eq!(value("FROM_ENV+=!", "FROM_ENV"), "env value!");
        assert_eq!(value("export A+=1", "A"), "1");
    }

    #[test]
    fn readonly_keeps_the_old_value_and_warns() {
        let f = file("readonly A=1\nA=2\nB=3\n");
        assert_eq!(
            f.assignments
                .iter()
                .map(|a| (&*a.name, &*a.value))
                .collect::<Vec<_>>(),
            [("A", "1"), ("B", "3")]
        );
        assert_eq!(f.warnings, ["my.cfg:2: A is readonly; assignment ignored"]);

        // As in bash, the rest of the line is skipped, assignments before it stay.
        let f = file("readonly A=1\nB=3 A=2 C=5; D=6\nC=4\n");
        assert_eq!(
            f.assignments
                .iter()
                .map(|a| (&*a.name, &*a.value))
                .collect::<Vec<_>>(),
            [("A", "1"), ("B", "3"), ("C", "4")]
        );
        assert_eq!(
            f.warnings,
            ["my.cfg:2: A is readonly; assignment ignored; as bash does, the rest of line 2 was skipped too"]
        );

        // export/readonly fail for that one name only.
        let f = file("readonly A=1\nexport A=2 B=3\nreadonly C=1 A=3 D=4\nC=5\n");
        assert_eq!(
            f.assignments
                .iter()
                .map(|a| (&*a.name, &*a.value))
                .collect::<Vec<_>>(),
            [("A", "1"), ("B", "3"), ("C", "1"), ("D", "4")]
        );
        assert_eq!(
            f.warnings,
            [
                "my.cfg:2: A is readonly; assignment ignored",
                "my.cfg:3: A is readonly; assignment ignored",
                "my.cfg:4: C is readonly; assignment ignored",
            ]
        );

        // `readonly NAME` without a value marks it too.
        let f = file("readonly FROM_ENV\nFROM_ENV=x\n");
        assert_eq!(f.assignments, vec![]);
        assert_eq!(
            f.warnings,
            ["my.cfg:2: FROM_ENV is readonly; assignment ignored"]
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(value("A='a $B \\ \"x\"'", "A"), "a $B \\ \"x\"");
        assert_eq!(value(r#"A="x\y\$\`\"\\""#, "A"), "x\\y$`\"\\");
        assert_eq!(value("A=\"x\\\ny\"", "A"), "xy");
        assert_eq!(value(r"A=a\ b\$c\\d", "A"), "a b$c\\d");
        assert_eq!(value("A=abc\\\ndef", "A"), "abcdef");
        assert_eq!(value(r#"A="x"'y'z"#, "A"), "xyz");
        assert_eq!(value(r#"A="a"b'c'$HOME"d""#, "A"), "abc/home/ud");
        assert_eq!(value("A=\"x\ty\"", "A"), "x\ty");
        assert_eq!(value("A=\"It's\"", "A"), "It's");
        assert_eq!(value("A=It\\'s", "A"), "It's");
        assert_eq!(value("A=\"English (US)\"", "A"), "English (US)");
        // A backslash at the very end of the file is kept.
        assert_eq!(value("A=x\\", "A"), "x\\");
    }

    #[test]
    fn line_continuation_is_removed_everywhere_but_single_quotes_and_comments() {
        assert_eq!(value("A=$HO\\\nME", "A"), "/home/u");
        assert_eq!(value("A=${HO\\\nME:\\\n-x}", "A"), "/home/u");
        assert_eq!(value("A\\\n=1", "A"), "1");
        assert_eq!(value("B\\\n+=2", "B"), "2");
        assert_eq!(value("AB=1\nA=$A\\\nB", "A"), "1");
        assert_eq!(value("A=~\\\n/x", "A"), "/home/u/x");
        assert_eq!(value("A=\"a\\\nb\"", "A"), "ab");
        assert_eq!(value("A='x\\\ny'", "A"), "x\\\ny");
        assert_eq!(assigned("# c \\\nA=1"), pairs(&[("A", "1")]));
        // An escaped backslash before a newline is no continuation.
        assert_eq!(assigned("A=\\\\\nB=2"), pairs(&[("A", "\\"), ("B", "2")]));
        assert_eq!(value("A=\"\\\\\n\"", "A"), "\\\n");
        assert_eq!(needs_bash("A=$\\\n*").1, "special parameter $*");
    }

    #[test]
    fn line_continuation_between_words() {
        let f = file("A=1 \\\nB=2\nC=3");
        let lines: Vec<_> = f
            .assignments
            .iter()
            .map(|a| (a.name.as_str(), a.origin.clone()))
            .collect();
        let at = |line| Origin::File {
            path: PathBuf::from("my.cfg"),
            line: Some(line),
        };
        assert_eq!(lines, [("A", at(1)), ("B", at(2)), ("C", at(3))]);
    }

    #[test]
    fn multi_line_quoted_values() {
        let text = "PUBKEY_SSH_FIRST_USER=\"ssh-ed25519 AAAA key1\nssh-rsa BBBB key2\"\nNEXT='a\nb\n'\nLAST=1\n";
        let f = file(text);
        let got: Vec<_> = f
            .assignments
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str(), a.origin.to_string()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "PUBKEY_SSH_FIRST_USER",
                    "ssh-ed25519 AAAA key1\nssh-rsa BBBB key2",
                    "my.cfg:1".to_string()
                ),
                ("NEXT", "a\nb\n", "my.cfg:3".to_string()),
                ("LAST", "1", "my.cfg:6".to_string()),
            ]
        );
    }

    #[test]
    fn expansions() {
        assert_eq!(value("A=$HOME$UNSET${HOME}x", "A"), "/home/u/home/ux");
        assert_eq!(value("A=$HOME_X", "A"), "");
        assert_eq!(value("A=$HOME-x", "A"), "/home/u-x");
        assert_eq!(value("A=\"$HOME\"x", "A"), "/home/ux");
        assert_eq!(value("A=${A}", "A"), "");
        assert_eq!(value("A=$FROM_ENV", "A"), "env value");
        assert_eq!(value("FROM_ENV=file\nA=$FROM_ENV", "A"), "file");
        // A `$` that starts nothing is literal.
        assert_eq!(value("A=$", "A"), "$");
        assert_eq!(value("A=\"a$\"", "A"), "a$");
        assert_eq!(value("A=$/x", "A"), "$/x");
        assert_eq!(value("A=\"$'x'\"", "A"), "$'x'");
    }

    #[test]
    fn default_and_alternative_values() {
        assert_eq!(value("A=${UNSET:-def}", "A"), "def");
        assert_eq!(value("A=${EMPTY:-def}", "A"), "def");
        assert_eq!(value("A=${EMPTY-def}", "A"), "");
        assert_eq!(value("A=${UNSET-def}", "A"), "def");
        assert_eq!(value("A=${HOME:-def}", "A"), "/home/u");
        assert_eq!(value("A=${HOME:+set}", "A"), "set");
        assert_eq!(value("A=${EMPTY:+set}", "A"), "");
        assert_eq!(value("A=${EMPTY+set}", "A"), "set");
        assert_eq!(value("A=${UNSET+set}", "A"), "");
        assert_eq!(value("A=${U-}", "A"), "");
        assert_eq!(value("A=${HOME:+a}b${U:+c}", "A"), "ab");
        // The word: spaces kept, quotes, nested expansions, escapes.
        assert_eq!(value("A=${U:-a b  c}", "A"), "a b  c");
        assert_eq!(value("A=${U:-\"a b\"  c}", "A"), "a b  c");
        assert_eq!(value("A=${U:-$HOME\"q\"}", "A"), "/home/uq");
        assert_eq!(value("A=${HOME+\"$HOME q\"}", "A"), "/home/u q");
        assert_eq!(value("A=${U:-${V:-${HOME}}}/x", "A"), "/home/u/x");
        assert_eq!(value("A=${U:-'a'}", "A"), "a");
        assert_eq!(value("A=${U:-\\x}", "A"), "x");
        assert_eq!(value("A=${U:-'}'}", "A"), "}");
        assert_eq!(value("A=${U:-\"a b}\"}", "A"), "a b}");
        assert_eq!(
            value("A=${U:-a;b|c&d<e>f(g)h #i}", "A"),
            "a;b|c&d<e>f(g)h #i"
        );
        assert_eq!(value("A=${U:-a\nb}", "A"), "a\nb");
        // Braces are not counted: the first `}` ends it.
        assert_eq!(value("A=${U:-{x}y}", "A"), "{xy}");
        // Inside double quotes.
        assert_eq!(value("A=\"${U:-a\"b\"c}\"", "A"), "abc");
        assert_eq!(value("A=\"${U:-'a'}\"", "A"), "'a'");
        assert_eq!(value("A=\"${HOME:+'a'}\"", "A"), "'a'");
        assert_eq!(value("A=\"${U:-\\\"}\"", "A"), "\"");
        assert_eq!(value("A=\"${U:-\\}}\"", "A"), "}");
        assert_eq!(value("A=\"${U:-\\x}\"", "A"), "\\x");
        assert_eq!(value("A=\"${U:-\"}\"}\"", "A"), "}");
        assert_eq!(value("A=\"${U-x y}\"", "A"), "x y");
        assert_eq!(value("A=\"${U:-\"$HOME\"}\"", "A"), "/home/u");
        assert_eq!(value("A=\"${HOME}\"\"${HOME:-x}\"", "A"), "/home/u/home/u");
    }

    #[test]
    fn tilde() {
        assert_eq!(value("A=~", "A"), "/home/u");
        assert_eq!(value("A=~/x", "A"), "/home/u/x");
        assert_eq!(value("A=a:~/b:~", "A"), "a:/home/u/b:/home/u");
        assert_eq!(value("A=:~", "A"), ":/home/u");
        assert_eq!(value("A=~:~", "A"), "/home/u:/home/u");
        assert_eq!(value("export A=~/z:~/y", "A"), "/home/u/z:/home/u/y");
        assert_eq!(value("A=x; A+=~/y", "A"), "x/home/u/y");
        assert_eq!(value("A=${U:-~/x}", "A"), "/home/u/x");
        assert_eq!(value("A=a${U:-~/x}", "A"), "a/home/u/x");
        assert_eq!(value("A=${U:-~}", "A"), "/home/u");
        assert_eq!(value("A=${U:-x:~/y}", "A"), "x:/home/u/y");
        assert_eq!(value("A=${U:-x}:~/p", "A"), "x:/home/u/p");
        assert_eq!(value("HOME=/h2; A=~", "A"), "/h2");
        // Not a tilde position, quoted, or a quoted tilde-prefix: literal.
        assert_eq!(value("A=a~", "A"), "a~");
        assert_eq!(value("A=x=~/b", "A"), "x=~/b");
        assert_eq!(value("A=\"~\"", "A"), "~");
        assert_eq!(value("A=\"${U:-~/x}\"", "A"), "~/x");
        assert_eq!(value("A=~\"x\"", "A"), "~x");
        assert_eq!(value("A=~/\"x\"", "A"), "/home/u/x");
        assert_eq!(value("A=~\\/x", "A"), "~/x");
        assert_eq!(value("A=~$HOME", "A"), "~/home/u");
    }

    #[test]
    fn no_splitting_globbing_or_brace_expansion_in_assignments() {
        assert_eq!(value("A=*.img", "A"), "*.img");
        assert_eq!(value("A={a,b}", "A"), "{a,b}");
        assert_eq!(value("A=$FROM_ENV", "A"), "env value");
        assert_eq!(value("export A=*.img B=x*", "B"), "x*");
        assert_eq!(value("readonly A=*.img", "A"), "*.img");
    }

    #[test]
    fn bash_set_variables() {
        // In the environment: used as is.
        assert_eq!(value("A=$PATH:/opt", "A"), "/usr/bin:/bin:/opt");
        assert_eq!(value("PATH=$PATH:/opt", "PATH"), "/usr/bin:/bin:/opt");
        // Not in the environment: bash has its own value.
        assert_eq!(needs_bash("A=1\nB=$SHELL").0, 2);
        assert_eq!(needs_bash("A=$PWD/work").1, "bash's own variable $PWD");
        assert_eq!(needs_bash("A=${RANDOM}").1, "bash's own variable $RANDOM");
        assert_eq!(needs_bash("A=$BASH_VERSION").0, 1);
        assert_eq!(
            needs_bash("SHLVL=3").1,
            "assignment to bash's own variable SHLVL"
        );
        assert_eq!(needs_bash("A=$_").0, 1);
        // HOME unset: bash asks the user database for `~`.
        let no_home = |_: &str| None;
        assert!(matches!(
            parse("A=~/x", Path::new("c"), &no_home).unwrap(),
            Parsed::NeedsBash { line: 1, .. }
        ));
        assert_eq!(
            parse("A=$HOME/x", Path::new("c"), &no_home).unwrap(),
            Parsed::Static(StaticFile {
                assignments: vec![Assignment {
                    name: "A".into(),
                    value: "/x".into(),
                    origin: Origin::File {
                        path: "c".into(),
                        line: Some(1)
                    }
                }],
                warnings: vec![]
            })
        );
    }

    #[test]
    fn constructs_that_need_bash() {
        let cases: &[(&str, usize, &str)] = &[
            ("A=1\nB=$(date +%F)\n", 2, "command substitution $(…)"),
            ("A=\"x $(date)\"", 1, "command substitution $(…)"),
            ("A=`date`", 1, "command substitution `…`"),
            ("A=\"`date`\"", 1, "command substitution `…`"),
            ("A=${U:-$(date)}", 1, "command substitution $(…)"),
            ("A=$((1+2))", 1, "arithmetic expansion $((…))"),
            ("A=$[1+2]", 1, "arithmetic expansion $[…]"),
            (
                "\n\nif [ -n \"$X\" ]; then\n A=1\nfi\n",
                3,
                "`if` statement",
            ),
            ("case $X in\n a) ;;\nesac", 1, "`case` statement"),
            ("for x in a b; do A=$x; done", 1, "`for` loop"),
            ("while true; do :; done", 1, "`while`/`until` loop"),
            ("until true; do :; done", 1, "`while`/`until` loop"),
            ("function f { :; }", 1, "function definition"),
            ("f() { :; }", 1, "function definition f()"),
            ("[[ -n $X ]] && A=1", 1, "`[[ … ]]` test"),
            ("[ -n \"$X\" ] && A=1", 1, "`[ … ]` test"),
            ("A=1\nsource other.cfg", 2, "`source` of another file"),
            (". ./other.cfg", 1, "`.` of another file"),
            ("echo hi", 1, "command `echo`"),
            (
                "A=1 make",
                1,
                "command `make` run with an assignment before it",
            ),
            ("A=1 B", 1, "command `B` run with an assignment before it"),
            ("A=${X:?must be set}", 1, "${X:?…} (fails when unset)"),
            ("A=${X?}", 1, "${X?…} (fails when unset)"),
            ("A=${X:=d}", 1, "${X:=…} (assigns a default)"),
            ("A=${X=d}", 1, "${X=…} (assigns a default)"),
            ("A=${#X}", 1, "length expansion ${#…}"),
            ("A=${!X}", 1, "indirect expansion ${!…}"),
            ("A=${X/a/b}", 1, "pattern substitution ${X/…}"),
            ("A=${X#a}", 1, "pattern removal ${X#…} / ${X%…}"),
            ("A=${X%a}", 1, "pattern removal ${X#…} / ${X%…}"),
            ("A=${X:1:2}", 1, "substring expansion ${X:…}"),
            ("A=${X^^}", 1, "case modification ${X^…}"),
            ("A=${X@Q}", 1, "transformation ${X@…}"),
            ("A=${X[1]}", 1, "array subscript ${X[…]}"),
            ("A=${X Y}", 1, "bad substitution ${…}"),
            ("A=$1", 1, "positional parameter $1"),
            ("A=${1}", 1, "special parameter ${1…}"),
            ("A=$@", 1, "special parameter $@"),
            ("A=$?", 1, "special parameter $?"),
            ("A=$$", 1, "special parameter $$"),
            ("A=$!", 1, "special parameter $!"),
            ("A=\"$#\"", 1, "special parameter $#"),
            (
                "A=~root/x",
                1,
                "tilde expansion `~r…` (another user's home or the directory stack)",
            ),
            (
                "A=~+",
                1,
                "tilde expansion `~+…` (another user's home or the directory stack)",
            ),
            ("A=(a b)", 1, "array assignment A=(…)"),
            ("A[1]=x", 1, "array element assignment A[…]"),
            ("A=$'a\\tb'", 1, "ANSI-C quoting $'…'"),
            ("A=$\"hello\"", 1, "locale translation $\"…\""),
            ("A=1 && B=2", 1, "`&&` list"),
            ("A=1 || B=2", 1, "`||` list"),
            ("A=1 | cat", 1, "pipeline `|`"),
            ("A=1 &", 1, "background job `&`"),
            ("A=1 >/dev/null", 1, "redirection `>`"),
            (
                "A=1 2>/dev/null",
                1,
                "command `2` run with an assignment before it",
            ),
            ("cat <<EOF\nx\nEOF", 1, "command `cat`"),
            ("<<EOF\nx\nEOF", 1, "here-document or here-string `<<`"),
            ("2>x", 1, "redirection 2>"),
            ("( A=1 )", 1, "subshell `( … )`"),
            ("{ A=1; }", 1, "command group `{ … }`"),
            (
                "export",
                1,
                "`export` without arguments (it prints variables)",
            ),
            ("export -n A", 1, "`export -n` (an option)"),
            (
                "export \"A=1\"",
                1,
                "`export` argument that is not NAME or NAME=value",
            ),
            (
                "export A={a,b}",
                1,
                "brace expansion in a `export` argument",
            ),
            ("declare -x A=1", 1, "command `declare`"),
            ("set -a", 1, "command `set`"),
            ("A=1;;", 1, "`;;` outside `case`"),
            (";A=1", 1, "`;` without a command before it"),
            ("A=1 ; ;", 1, "`;` without a command before it"),
        ];
        for (text, line, construct) in cases {
            assert_eq!(
                needs_bash(text),
                (*line, construct.to_string()),
                "for {text:?}"
            );
        }
    }

    #[test]
    fn first_construct_wins_and_lines_count_quoted_newlines() {
        let text = "A='x\ny'\nB=\"1\n2\"\nC=$(date)\nif true; then :; fi\n";
        assert_eq!(
            needs_bash(text),
            (5, "command substitution $(…)".to_string())
        );
    }

    #[test]
    fn unterminated_quotes_are_errors() {
        assert_eq!(
            error("A=1\nB=\"abc\nC=2\n"),
            "my.cfg:2: unterminated double quote (opened here); close it with \""
        );
        assert_eq!(
            error("A=1\n\nB='abc\n"),
            "my.cfg:3: unterminated single quote (opened here); close it with '"
        );
        assert_eq!(
            error("A=${HOME\n"),
            "my.cfg:1: unterminated ${ (opened here); close it with }"
        );
        assert_eq!(
            error("A=1\nB=${U:-abc\n"),
            "my.cfg:2: unterminated ${ (opened here); close it with }"
        );
        // The `"` inside `"${…` opens a nested quote, as in bash.
        assert_eq!(
            error("B=\"${U:-abc\"\n"),
            "my.cfg:1: unterminated double quote (opened here); close it with \""
        );
        assert_eq!(
            error("B=\"${U:-abc\n"),
            "my.cfg:1: unterminated ${ (opened here); close it with }"
        );
        assert_eq!(
            error("A=${"),
            "my.cfg:1: unterminated ${ (opened here); close it with }"
        );
        assert_eq!(
            error("export A=\"x"),
            "my.cfg:1: unterminated double quote (opened here); close it with \""
        );
        assert_eq!(
            error("A=${U:-\"x}"),
            "my.cfg:1: unterminated double quote (opened here); close it with \""
        );
    }

    #[test]
    fn origins_point_at_the_assignment() {
        let f = file("# c\nexport A=1 \\\n  B=2\nC=3;D=4\n");
        let got: Vec<_> = f
            .assignments
            .iter()
            .map(|a| format!("{}@{}", a.name, a.origin))
            .collect();
        assert_eq!(
            got,
            ["A@my.cfg:2", "B@my.cfg:3", "C@my.cfg:4", "D@my.cfg:4"]
        );
    }
}
