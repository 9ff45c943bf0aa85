//! OTTL conditions as text: the tokens, the syntax tree, the parser (precedence `or` < `and` <
//! `not` < comparison < `+ -` < `* /`) and the printer that writes a tree back as text that
//! parses to the same tree.

use std::fmt;

/// A byte offset into the condition's text. Two positions always compare equal, so trees
/// parsed from differently spaced texts are equal when their shapes are.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pos(pub u32);

impl PartialEq for Pos {
    fn eq(&self, _: &Pos) -> bool {
        true
    }
}

/// A name with where it was written: a path segment, a converter or an enum symbol.
#[derive(Debug, Clone, PartialEq)]
pub struct Name {
    /// The name as written.
    pub text: String,
    /// Where it starts.
    pub at: Pos,
}

/// An index after a path or a converter call: `["key"]` or `[0]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    /// A map key.
    Str(String),
    /// A list index.
    Int(i64),
}

/// A converter argument, positional or named (`name = value`).
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// The parameter's name when given by name.
    pub name: Option<String>,
    /// The argument.
    pub value: Expr,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    fn text(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MathOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
}

impl MathOp {
    fn text(self) -> char {
        match self {
            MathOp::Add => '+',
            MathOp::Sub => '-',
            MathOp::Mul => '*',
            MathOp::Div => '/',
        }
    }
}

/// A condition or a value, as written.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `nil`
    Nil,
    /// `true` / `false`
    Bool(bool),
    /// An integer literal.
    Int(i64),
    /// A floating-point literal.
    Float(f64),
    /// A string literal (escapes resolved).
    Str(String),
    /// A bytes literal (`0x…`).
    Bytes(Vec<u8>),
    /// An enum symbol (`SPAN_KIND_SERVER`).
    Enum(Name),
    /// A path (`attributes["k"][0]`, `resource.attributes["service.name"]`).
    Path {
        /// The dotted segments.
        parts: Vec<Name>,
        /// Indexes after the last segment.
        keys: Vec<Key>,
    },
    /// A converter call, possibly indexed (`Split(name, ",")[0]`).
    Call {
        /// The converter.
        name: Name,
        /// Its arguments.
        args: Vec<Arg>,
        /// Indexes into its result.
        keys: Vec<Key>,
    },
    /// A list literal.
    List(Vec<Expr>),
    /// A map literal.
    Map(Vec<(String, Expr)>),
    /// Arithmetic.
    Math(MathOp, Box<Expr>, Box<Expr>, Pos),
    /// A comparison.
    Cmp(CmpOp, Box<Expr>, Box<Expr>, Pos),
    /// `not`
    Not(Box<Expr>),
    /// `and`
    And(Box<Expr>, Box<Expr>),
    /// `or`
    Or(Box<Expr>, Box<Expr>),
}

impl Expr {
    /// True for the forms that are conditions (or may be: a converter, a boolean literal).
    pub fn is_condition(&self) -> bool {
        matches!(
            self,
            Expr::Cmp(..)
                | Expr::And(..)
                | Expr::Or(..)
                | Expr::Not(_)
                | Expr::Bool(_)
                | Expr::Call { .. }
        )
    }

    /// True for the forms that are values.
    pub fn is_value(&self) -> bool {
        !matches!(
            self,
            Expr::Cmp(..) | Expr::And(..) | Expr::Or(..) | Expr::Not(_)
        )
    }
}

/// A syntax error: where (a byte offset into the text) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Byte offset.
    pub at: usize,
    /// What is wrong.
    pub msg: String,
}

impl SyntaxError {
    fn new(at: usize, msg: impl Into<String>) -> SyntaxError {
        SyntaxError {
            at,
            msg: msg.into(),
        }
    }
}

/// The 1-based column of byte offset `at` in `text` (in characters).
pub fn column(text: &str, at: usize) -> usize {
    text.get(..at.min(text.len()))
        .map_or(at, |s| s.chars().count())
        + 1
}

// ---------------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    /// A number as written (digits, optional `.` fraction and exponent); no sign.
    Num(String),
    Bytes(Vec<u8>),
    Cmp(CmpOp),
    Math(MathOp),
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Dot,
    Colon,
    Assign,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Str(s) => format!("the string {s:?}"),
            Tok::Num(n) => format!("the number {n}"),
            Tok::Bytes(_) => "a bytes literal".into(),
            Tok::Cmp(op) => format!("`{}`", op.text()),
            Tok::Math(op) => format!("`{}`", op.text()),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::LBracket => "`[`".into(),
            Tok::RBracket => "`]`".into(),
            Tok::LBrace => "`{`".into(),
            Tok::RBrace => "`}`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Dot => "`.`".into(),
            Tok::Colon => "`:`".into(),
            Tok::Assign => "`=`".into(),
            Tok::End => "the end of the condition".into(),
        }
    }
}

/// Longest condition text accepted (a guard for the parser's recursion and for fuzzing).
pub const MAX_LEN: usize = 64 << 10;
/// Deepest nesting of parentheses, lists and calls accepted.
pub const MAX_DEPTH: u32 = 64;

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, SyntaxError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => Tok::LParen,
            b')' => Tok::RParen,
            b'[' => Tok::LBracket,
            b']' => Tok::RBracket,
            b'{' => Tok::LBrace,
            b'}' => Tok::RBrace,
            b',' => Tok::Comma,
            b'.' if !b.get(i + 1).is_some_and(u8::is_ascii_digit) => Tok::Dot,
            b':' => Tok::Colon,
            b'+' => Tok::Math(MathOp::Add),
            b'-' => Tok::Math(MathOp::Sub),
            b'*' => Tok::Math(MathOp::Mul),
            b'/' => Tok::Math(MathOp::Div),
            b'=' | b'!' | b'<' | b'>' => {
                let two = b.get(i + 1) == Some(&b'=');
                let (tok, n) = match (c, two) {
                    (b'=', true) => (Tok::Cmp(CmpOp::Eq), 2),
                    (b'=', false) => (Tok::Assign, 1),
                    (b'!', true) => (Tok::Cmp(CmpOp::Ne), 2),
                    (b'<', true) => (Tok::Cmp(CmpOp::Le), 2),
                    (b'<', false) => (Tok::Cmp(CmpOp::Lt), 1),
                    (b'>', true) => (Tok::Cmp(CmpOp::Ge), 2),
                    (b'>', false) => (Tok::Cmp(CmpOp::Gt), 1),
                    _ => return Err(SyntaxError::new(i, "`!` must be followed by `=`")),
                };
                out.push((tok, start));
                i += n;
                continue;
            }
            b'"' => {
                let (s, end) = string(text, i)?;
                out.push((Tok::Str(s), start));
                i = end;
                continue;
            }
            b'0' if matches!(b.get(i + 1), Some(b'x' | b'X')) => {
                let mut j = i + 2;
                while j < b.len() && b[j].is_ascii_hexdigit() {
                    j += 1;
                }
                let digits = &text[i + 2..j];
                if digits.is_empty() || !digits.len().is_multiple_of(2) {
                    return Err(SyntaxError::new(
                        i,
                        "a bytes literal is 0x followed by an even number of hex digits",
                    ));
                }
                let bytes = hex::decode(digits).map_err(|_| {
                    SyntaxError::new(i, "a bytes literal is 0x followed by hex digits")
                })?;
                out.push((Tok::Bytes(bytes), start));
                i = j;
                continue;
            }
            b'0'..=b'9' | b'.' => {
                let mut j = i;
                while j < b.len() && b[j].is_ascii_digit() {
                    j += 1;
                }
                let mut fraction = false;
                if b.get(j) == Some(&b'.')
                    && !b
                        .get(j + 1)
                        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
                {
                    j += 1;
                    fraction = true;
                    while j < b.len() && b[j].is_ascii_digit() {
                        j += 1;
                    }
                }
                if fraction && matches!(b.get(j), Some(b'e' | b'E')) {
                    let mut k = j + 1;
                    if matches!(b.get(k), Some(b'+' | b'-')) {
                        k += 1;
                    }
                    let digits = k;
                    while k < b.len() && b[k].is_ascii_digit() {
                        k += 1;
                    }
                    if k > digits {
                        j = k;
                    }
                }
                if b.get(j)
                    .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
                {
                    return Err(SyntaxError::new(
                        i,
                        "a number runs into a name; put a space or an operator between them",
                    ));
                }
                out.push((Tok::Num(text[i..j].to_string()), start));
                i = j;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                out.push((Tok::Ident(text[i..j].to_string()), start));
                i = j;
                continue;
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(SyntaxError::new(i, format!("unexpected character {ch:?}")));
            }
        };
        out.push((tok, start));
        i += 1;
    }
    out.push((Tok::End, text.len()));
    Ok(out)
}

/// A string literal starting at `text[at] == '"'`: its value and the offset after it.
fn string(text: &str, at: usize) -> Result<(String, usize), SyntaxError> {
    let mut out = String::new();
    let mut chars = text[at + 1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, at + 1 + i + 1)),
            '\\' => {
                let Some((j, e)) = chars.next() else { break };
                let esc_at = at + 1 + j - 1;
                let bad = |msg: String| SyntaxError::new(esc_at, msg);
                let mut hex_digits = |n: usize| -> Result<u32, SyntaxError> {
                    let mut v = 0u32;
                    for _ in 0..n {
                        let d = chars
                            .next()
                            .and_then(|(_, c)| c.to_digit(16))
                            .ok_or_else(|| bad(format!("`\\{e}` needs {n} hex digits")))?;
                        v = v * 16 + d;
                    }
                    Ok(v)
                };
                let ch = match e {
                    '"' => '"',
                    '\\' => '\\',
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    'a' => '\u{7}',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'v' => '\u{b}',
                    'x' | 'u' | 'U' => {
                        let v = hex_digits(match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        })?;
                        if e == 'x' && v > 0x7f {
                            return Err(bad(format!(
                                "`\\x{v:02x}` is a byte that is not a character here; write the character or `\\u{v:04x}`"
                            )));
                        }
                        char::from_u32(v).ok_or_else(|| bad(format!("{v:#x} is not a character")))?
                    }
                    '0'..='7' => {
                        let mut v = e.to_digit(8).unwrap_or(0);
                        for _ in 0..2 {
                            let d = chars
                                .next()
                                .and_then(|(_, c)| c.to_digit(8))
                                .ok_or_else(|| bad("an octal escape has three digits".into()))?;
                            v = v * 8 + d;
                        }
                        if v > 0x7f {
                            return Err(bad(format!(
                                "the octal escape `\\{v:03o}` is a byte that is not a character here"
                            )));
                        }
                        char::from_u32(v).unwrap_or('?')
                    }
                    _ => {
                        return Err(bad(format!(
                            "unknown escape `\\{e}` in a string; write \\\\ for a backslash (a regex's \\d is written \\\\d)"
                        )))
                    }
                };
                out.push(ch);
            }
            c => out.push(c),
        }
    }
    Err(SyntaxError::new(at, "a string is not closed with `\"`"))
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
    depth: u32,
    /// Operators so far (`and`, `or`, comparisons, arithmetic): each adds a level to the
    /// tree, which the compiler and the evaluator walk recursively.
    operators: u32,
}

/// Most operators one condition may hold.
pub const MAX_OPERATORS: u32 = 128;

/// Parses one condition (a boolean expression as the Collector's `ottl_condition` lists take).
pub fn parse_condition(text: &str) -> Result<Expr, SyntaxError> {
    if text.len() > MAX_LEN {
        return Err(SyntaxError::new(
            0,
            format!("a condition is at most {MAX_LEN} bytes"),
        ));
    }
    let mut p = Parser {
        toks: lex(text)?,
        i: 0,
        depth: 0,
        operators: 0,
    };
    if p.peek() == &Tok::End {
        return Err(SyntaxError::new(0, "the condition is empty"));
    }
    let e = p.or()?;
    if p.peek() == &Tok::End && !e.is_condition() {
        return Err(SyntaxError::new(
            0,
            "this is a value, not a condition; compare it, e.g. `name == \"checkout\"`",
        ));
    }
    if p.peek() != &Tok::End {
        let what = match p.peek() {
            Tok::Ident(w) if w == "where" => {
                "a condition has no `where`: write the condition alone".to_string()
            }
            t => format!(
                "expected `and`, `or`, an operator or the end, found {}",
                t.describe()
            ),
        };
        return Err(SyntaxError::new(p.at(), what));
    }
    Ok(e)
}

/// Parses a value expression (no `and` / `or` / `not` at its top); for tests and tools.
pub fn parse_value(text: &str) -> Result<Expr, SyntaxError> {
    let mut p = Parser {
        toks: lex(text)?,
        i: 0,
        depth: 0,
        operators: 0,
    };
    let e = p.add()?;
    if p.peek() != &Tok::End {
        return Err(SyntaxError::new(
            p.at(),
            format!("expected the end, found {}", p.peek().describe()),
        ));
    }
    Ok(e)
}

/// What arithmetic takes: numbers, paths, converter calls and arithmetic (strings, booleans,
/// nil, bytes, lists, maps, enums and conditions are refused, as OTTL's grammar does).
fn arithmetic_operand(e: &Expr, at: usize) -> Result<(), SyntaxError> {
    match e {
        Expr::Int(_) | Expr::Float(_) | Expr::Path { .. } | Expr::Call { .. } | Expr::Math(..) => {
            Ok(())
        }
        Expr::Cmp(..) | Expr::And(..) | Expr::Or(..) | Expr::Not(_) => Err(SyntaxError::new(
            at,
            "arithmetic works on values, not conditions",
        )),
        _ => Err(SyntaxError::new(
            at,
            "arithmetic works on numbers, paths and converter results (use Concat to join strings)",
        )),
    }
}

fn is_keyword(s: &str) -> bool {
    matches!(s, "and" | "or" | "not" | "true" | "false" | "nil")
}

fn is_enum_symbol(s: &str) -> bool {
    s.bytes().next().is_some_and(|c| c.is_ascii_uppercase())
        && s.bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)].0
    }
    fn peek2(&self) -> &Tok {
        &self.toks[(self.i + 1).min(self.toks.len() - 1)].0
    }
    fn at(&self) -> usize {
        self.toks[self.i.min(self.toks.len() - 1)].1
    }
    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }
    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == k)
    }
    fn eat(&mut self, t: Tok, what: &str) -> Result<(), SyntaxError> {
        if *self.peek() == t {
            self.bump();
            Ok(())
        } else {
            Err(SyntaxError::new(
                self.at(),
                format!("expected {what}, found {}", self.peek().describe()),
            ))
        }
    }
    fn operator(&mut self) -> Result<(), SyntaxError> {
        self.operators += 1;
        if self.operators > MAX_OPERATORS {
            return Err(SyntaxError::new(
                self.at(),
                format!(
                    "more than {MAX_OPERATORS} operators in one condition; split it into several"
                ),
            ));
        }
        Ok(())
    }

    fn enter(&mut self) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(SyntaxError::new(
                self.at(),
                format!("nested more than {MAX_DEPTH} deep"),
            ));
        }
        Ok(())
    }

    fn condition_operand(&mut self, after: &str) -> Result<Expr, SyntaxError> {
        let at = self.at();
        let e = self.not()?;
        if !e.is_condition() {
            return Err(SyntaxError::new(
                at,
                format!(
                    "`{after}` needs a condition here, not a value; compare it, e.g. `== true`"
                ),
            ));
        }
        Ok(e)
    }

    fn or(&mut self) -> Result<Expr, SyntaxError> {
        let at = self.at();
        let mut l = self.and()?;
        while self.keyword("or") {
            if !l.is_condition() {
                return Err(SyntaxError::new(
                    at,
                    "`or` needs a condition on its left, not a value",
                ));
            }
            self.bump();
            self.operator()?;
            let at = self.at();
            let r = self.and()?;
            if !r.is_condition() {
                return Err(SyntaxError::new(
                    at,
                    "`or` needs a condition on its right, not a value",
                ));
            }
            l = Expr::Or(Box::new(l), Box::new(r));
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<Expr, SyntaxError> {
        let at = self.at();
        let mut l = self.not()?;
        while self.keyword("and") {
            if !l.is_condition() {
                return Err(SyntaxError::new(
                    at,
                    "`and` needs a condition on its left, not a value",
                ));
            }
            self.bump();
            self.operator()?;
            let r = self.condition_operand("and")?;
            l = Expr::And(Box::new(l), Box::new(r));
        }
        Ok(l)
    }

    fn not(&mut self) -> Result<Expr, SyntaxError> {
        if self.keyword("not") {
            self.bump();
            if self.keyword("not") {
                return Err(SyntaxError::new(
                    self.at(),
                    "one `not` per condition; write `not (not …)`",
                ));
            }
            self.enter()?;
            let e = self.condition_operand("not")?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr, SyntaxError> {
        let at = self.at();
        let l = self.add()?;
        let Tok::Cmp(op) = *self.peek() else {
            return Ok(l);
        };
        let op_at = self.at();
        if !l.is_value() {
            return Err(SyntaxError::new(
                at,
                "a comparison compares values, not conditions",
            ));
        }
        self.bump();
        self.operator()?;
        let rat = self.at();
        let r = self.add()?;
        if !r.is_value() {
            return Err(SyntaxError::new(
                rat,
                "a comparison compares values, not conditions",
            ));
        }
        if let Tok::Cmp(_) = self.peek() {
            return Err(SyntaxError::new(
                self.at(),
                "comparisons do not chain; join them with `and`",
            ));
        }
        Ok(Expr::Cmp(op, Box::new(l), Box::new(r), Pos(op_at as u32)))
    }

    fn add(&mut self) -> Result<Expr, SyntaxError> {
        let mut l = self.mul()?;
        while let Tok::Math(op @ (MathOp::Add | MathOp::Sub)) = *self.peek() {
            let op_at = self.at();
            self.bump();
            self.operator()?;
            let r = self.mul()?;
            arithmetic_operand(&r, op_at)?;
            l = Expr::Math(op, Box::new(l), Box::new(r), Pos(op_at as u32));
        }
        Ok(l)
    }

    fn mul(&mut self) -> Result<Expr, SyntaxError> {
        let mut l = self.operand()?;
        while let Tok::Math(op @ (MathOp::Mul | MathOp::Div)) = *self.peek() {
            let op_at = self.at();
            self.bump();
            self.operator()?;
            let r = self.operand()?;
            arithmetic_operand(&r, op_at)?;
            l = Expr::Math(op, Box::new(l), Box::new(r), Pos(op_at as u32));
        }
        Ok(l)
    }

    /// An operand of arithmetic (when an operator follows, it must be one).
    fn operand(&mut self) -> Result<Expr, SyntaxError> {
        let at = self.at();
        let e = self.primary()?;
        if matches!(self.peek(), Tok::Math(_)) {
            arithmetic_operand(&e, at)?;
        }
        Ok(e)
    }

    fn number(&mut self, text: &str, neg: bool, at: usize) -> Result<Expr, SyntaxError> {
        let signed = if neg {
            format!("-{text}")
        } else {
            text.to_string()
        };
        if text.contains('.') {
            signed
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Expr::Float)
                .ok_or_else(|| SyntaxError::new(at, format!("{signed} is not a number")))
        } else {
            signed.parse::<i64>().map(Expr::Int).map_err(|_| {
                SyntaxError::new(at, format!("{signed} does not fit a 64-bit integer"))
            })
        }
    }

    fn primary(&mut self) -> Result<Expr, SyntaxError> {
        let at = self.at();
        match self.bump() {
            Tok::LParen => {
                self.enter()?;
                let e = self.or()?;
                self.eat(Tok::RParen, "`)`")?;
                self.depth -= 1;
                Ok(e)
            }
            Tok::Num(n) => self.number(&n, false, at),
            Tok::Math(MathOp::Sub) => match self.bump() {
                Tok::Num(n) => self.number(&n, true, at),
                t => Err(SyntaxError::new(
                    at,
                    format!(
                        "`-` before {} : only a number can be negative",
                        t.describe()
                    ),
                )),
            },
            Tok::Math(MathOp::Add) => match self.bump() {
                Tok::Num(n) => self.number(&n, false, at),
                t => Err(SyntaxError::new(
                    at,
                    format!(
                        "`+` before {}: only a number can carry a sign",
                        t.describe()
                    ),
                )),
            },
            Tok::Str(s) => Ok(Expr::Str(s)),
            Tok::Bytes(b) => Ok(Expr::Bytes(b)),
            Tok::LBracket => {
                self.enter()?;
                let mut items = Vec::new();
                if *self.peek() != Tok::RBracket {
                    loop {
                        let iat = self.at();
                        let e = self.add()?;
                        if !e.is_value() {
                            return Err(SyntaxError::new(iat, "a list holds values"));
                        }
                        items.push(e);
                        if *self.peek() == Tok::Comma {
                            self.bump();
                            continue;
                        }
                        break;
                    }
                }
                self.eat(Tok::RBracket, "`,` or `]`")?;
                self.depth -= 1;
                Ok(Expr::List(items))
            }
            Tok::LBrace => {
                self.enter()?;
                let mut items = Vec::new();
                if *self.peek() != Tok::RBrace {
                    loop {
                        let Tok::Str(k) = self.bump() else {
                            return Err(SyntaxError::new(
                                self.toks[self.i - 1].1,
                                "a map key is a string literal",
                            ));
                        };
                        self.eat(Tok::Colon, "`:`")?;
                        let vat = self.at();
                        let v = self.add()?;
                        if !v.is_value() {
                            return Err(SyntaxError::new(vat, "a map holds values"));
                        }
                        items.push((k, v));
                        if *self.peek() == Tok::Comma {
                            self.bump();
                            continue;
                        }
                        break;
                    }
                }
                self.eat(Tok::RBrace, "`,` or `}`")?;
                self.depth -= 1;
                Ok(Expr::Map(items))
            }
            Tok::Ident(s) => self.named(s, at),
            t => Err(SyntaxError::new(
                at,
                format!(
                    "expected a value (a path, a literal, a converter call, a list), found {}",
                    t.describe()
                ),
            )),
        }
    }

    fn keys(&mut self) -> Result<Vec<Key>, SyntaxError> {
        let mut keys = Vec::new();
        while *self.peek() == Tok::LBracket {
            self.bump();
            let at = self.at();
            let neg = if *self.peek() == Tok::Math(MathOp::Sub) {
                self.bump();
                true
            } else {
                false
            };
            match self.bump() {
                Tok::Str(s) if !neg => keys.push(Key::Str(s)),
                Tok::Num(n) if !n.contains('.') => match self.number(&n, neg, at)? {
                    Expr::Int(i) => keys.push(Key::Int(i)),
                    _ => return Err(SyntaxError::new(at, "an index is an integer")),
                },
                t => {
                    return Err(SyntaxError::new(
                        at,
                        format!(
                            "an index is a string key or an integer, found {}",
                            t.describe()
                        ),
                    ))
                }
            }
            self.eat(Tok::RBracket, "`]`")?;
        }
        Ok(keys)
    }

    fn named(&mut self, s: String, at: usize) -> Result<Expr, SyntaxError> {
        match s.as_str() {
            "nil" => return Ok(Expr::Nil),
            "true" => return Ok(Expr::Bool(true)),
            "false" => return Ok(Expr::Bool(false)),
            "and" | "or" | "not" => {
                return Err(SyntaxError::new(
                    at,
                    format!("expected a value, found the keyword `{s}`"),
                ))
            }
            _ => {}
        }
        let name = Name {
            text: s,
            at: Pos(at as u32),
        };
        if *self.peek() == Tok::LParen {
            if !name
                .text
                .bytes()
                .next()
                .is_some_and(|c| c.is_ascii_uppercase())
            {
                return Err(SyntaxError::new(
                    at,
                    format!(
                        "`{}` is an editor (lower-case); a condition may call only converters \
                         (upper-case, like IsMatch)",
                        name.text
                    ),
                ));
            }
            self.bump();
            self.enter()?;
            let mut args = Vec::new();
            if *self.peek() != Tok::RParen {
                loop {
                    let arg_name = match (self.peek().clone(), self.peek2()) {
                        (Tok::Ident(n), Tok::Assign) if !is_keyword(&n) => {
                            self.bump();
                            self.bump();
                            Some(n)
                        }
                        _ => None,
                    };
                    let vat = self.at();
                    let value = self.add()?;
                    if !value.is_value() {
                        return Err(SyntaxError::new(vat, "an argument is a value"));
                    }
                    args.push(Arg {
                        name: arg_name,
                        value,
                    });
                    if *self.peek() == Tok::Comma {
                        self.bump();
                        continue;
                    }
                    break;
                }
            }
            self.eat(Tok::RParen, "`,` or `)`")?;
            self.depth -= 1;
            let keys = self.keys()?;
            return Ok(Expr::Call { name, args, keys });
        }
        if is_enum_symbol(&name.text) && *self.peek() != Tok::Dot && *self.peek() != Tok::LBracket {
            return Ok(Expr::Enum(name));
        }
        let mut parts = vec![name];
        while *self.peek() == Tok::Dot {
            self.bump();
            let pat = self.at();
            match self.bump() {
                Tok::Ident(seg) => parts.push(Name {
                    text: seg,
                    at: Pos(pat as u32),
                }),
                t => {
                    return Err(SyntaxError::new(
                        pat,
                        format!("expected a name after `.`, found {}", t.describe()),
                    ))
                }
            }
        }
        let keys = self.keys()?;
        Ok(Expr::Path { parts, keys })
    }
}

// ---------------------------------------------------------------------------------------------
// Printer
// ---------------------------------------------------------------------------------------------

/// Binding strength, loosest first.
fn level(e: &Expr) -> u8 {
    match e {
        Expr::Or(..) => 1,
        Expr::And(..) => 2,
        Expr::Not(_) => 3,
        Expr::Cmp(..) => 4,
        Expr::Math(MathOp::Add | MathOp::Sub, ..) => 5,
        Expr::Math(..) => 6,
        _ => 7,
    }
}

fn child(f: &mut fmt::Formatter<'_>, e: &Expr, min: u8) -> fmt::Result {
    if level(e) < min {
        write!(f, "({e})")
    } else {
        write!(f, "{e}")
    }
}

fn write_str(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

fn write_keys(f: &mut fmt::Formatter<'_>, keys: &[Key]) -> fmt::Result {
    for k in keys {
        match k {
            Key::Str(s) => {
                f.write_str("[")?;
                write_str(f, s)?;
                f.write_str("]")?;
            }
            Key::Int(i) => write!(f, "[{i}]")?,
        }
    }
    Ok(())
}

/// Prints a float so that it reads back as the same float (always with a `.`).
fn write_float(f: &mut fmt::Formatter<'_>, x: f64) -> fmt::Result {
    let s = format!("{x:?}");
    if s.contains(['.', 'e', 'E']) {
        // `{:?}` writes exponents as `1e-7`, which the lexer reads; make sure of a `.`.
        if s.contains('.') {
            f.write_str(&s)
        } else {
            let (m, e) = s.split_once(['e', 'E']).unwrap_or((&s, "0"));
            write!(f, "{m}.0e{e}")
        }
    } else {
        write!(f, "{s}.0")
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Nil => f.write_str("nil"),
            Expr::Bool(b) => write!(f, "{b}"),
            Expr::Int(i) => write!(f, "{i}"),
            Expr::Float(x) => write_float(f, *x),
            Expr::Str(s) => write_str(f, s),
            Expr::Bytes(b) => write!(f, "0x{}", hex::encode(b)),
            Expr::Enum(n) => f.write_str(&n.text),
            Expr::Path { parts, keys } => {
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(&p.text)?;
                }
                write_keys(f, keys)
            }
            Expr::Call { name, args, keys } => {
                write!(f, "{}(", name.text)?;
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    if let Some(n) = &a.name {
                        write!(f, "{n} = ")?;
                    }
                    write!(f, "{}", a.value)?;
                }
                f.write_str(")")?;
                write_keys(f, keys)
            }
            Expr::List(items) => {
                f.write_str("[")?;
                for (i, e) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str("]")
            }
            Expr::Map(items) => {
                f.write_str("{")?;
                for (i, (k, v)) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write_str(f, k)?;
                    write!(f, ": {v}")?;
                }
                f.write_str("}")
            }
            Expr::Math(op, l, r, _) => {
                let lv = level(self);
                child(f, l, lv)?;
                write!(f, " {} ", op.text())?;
                // A right operand at the same level needs parentheses (a - (b - c)); so does
                // a negative literal after `-`/`+`, to read clearly.
                child(f, r, lv + 1)
            }
            Expr::Cmp(op, l, r, _) => {
                child(f, l, 5)?;
                write!(f, " {} ", op.text())?;
                child(f, r, 5)
            }
            Expr::Not(e) => {
                f.write_str("not ")?;
                // `not not x` does not parse: the inner `not` is bracketed.
                child(f, e, 4)
            }
            Expr::And(l, r) => {
                child(f, l, 2)?;
                f.write_str(" and ")?;
                child(f, r, 3)
            }
            Expr::Or(l, r) => {
                child(f, l, 1)?;
                f.write_str(" or ")?;
                child(f, r, 2)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Expr {
        parse_condition(s).unwrap_or_else(|e| panic!("{s}: {e:?}"))
    }

    fn err(s: &str) -> (usize, String) {
        let e = parse_condition(s).expect_err(s);
        (column(s, e.at), e.msg)
    }

    #[test]
    fn precedence_and_printing() {
        assert_eq!(
            p("a == 1 or b == 2 and c == 3").to_string(),
            "a == 1 or b == 2 and c == 3"
        );
        assert_eq!(
            p("(a == 1 or b == 2) and c == 3").to_string(),
            "(a == 1 or b == 2) and c == 3"
        );
        assert_eq!(
            p("not a == 1 and b == 2").to_string(),
            "not a == 1 and b == 2"
        );
        assert!(matches!(p("not a == 1 and b == 2"), Expr::And(..)));
        assert_eq!(p("1 + 2 * 3 > x").to_string(), "1 + 2 * 3 > x");
        assert_eq!(p("(1 + 2) * 3 > x").to_string(), "(1 + 2) * 3 > x");
        assert_eq!(p("a - (b - c) == 0").to_string(), "a - (b - c) == 0");
        assert_eq!(p("a - b - c == 0").to_string(), "a - b - c == 0");
        assert_eq!(
            p(r#"Split(attributes["x"], ",")[0] == "a""#).to_string(),
            r#"Split(attributes["x"], ",")[0] == "a""#
        );
        assert_eq!(p("x == -1").to_string(), "x == -1");
        assert_eq!(p("x == 1.5e3").to_string(), "x == 1500.0");
        assert_eq!(p("x == 3.").to_string(), "x == 3.0");
        assert!(
            parse_condition("x == 1e3").is_err(),
            "an exponent needs a fraction, as in OTTL"
        );
        assert!(parse_condition("not not true").is_err());
        assert!(parse_condition("not (not true)").is_ok());
        assert_eq!(p("x == 0xAbCd").to_string(), "x == 0xabcd");
        assert_eq!(p(r#"x == "a\"b\\c""#).to_string(), r#"x == "a\"b\\c""#);
        assert_eq!(
            p("IsMatch(name, \"^a\")").to_string(),
            "IsMatch(name, \"^a\")"
        );
        assert_eq!(
            p("ConvertCase(target = name, toCase = \"lower\") == \"x\"").to_string(),
            "ConvertCase(target = name, toCase = \"lower\") == \"x\""
        );
        assert_eq!(
            p("kind == SPAN_KIND_SERVER").to_string(),
            "kind == SPAN_KIND_SERVER"
        );
        assert_eq!(
            p("x == [1, \"a\", nil]").to_string(),
            "x == [1, \"a\", nil]"
        );
        assert_eq!(p("x == {\"a\": 1}").to_string(), "x == {\"a\": 1}");
        assert!(matches!(p("true"), Expr::Bool(true)));
    }

    #[test]
    fn errors_say_where_and_what() {
        assert_eq!(err("name == ").0, 9);
        assert!(
            err("name == ").1.contains("expected a value"),
            "{:?}",
            err("name == ")
        );
        assert!(err("name").1.contains("is a value, not a condition"));
        assert_eq!(err("a == 1 == 2").0, 8);
        assert!(err("a == 1 == 2").1.contains("do not chain"));
        assert!(err("set(name, 1)").1.contains("editor"));
        assert!(err("name == \"x\" where a == 1").1.contains("no `where`"));
        assert_eq!(err("name == \"x").0, 9);
        assert!(err("x == 0xabc").1.contains("even number"));
        assert!(err("not 1").1.contains("needs a condition"));
        assert!(err("1 and a == 1").1.contains("condition on its left"));
        assert!(err("(a == 1) + 1 == 2")
            .1
            .contains("arithmetic works on values"));
        assert!(err("x == 99999999999999999999").1.contains("64-bit"));
        let deep = format!("{}a == 1{}", "(".repeat(100), ")".repeat(100));
        assert!(err(&deep).1.contains("nested"));
    }
}
