//! The expression language of attribute mappings, attribute conditions and IAM conditions: a
//! small, documented subset of CEL.
//!
//! Grammar (lowest precedence first):
//!
//! ```text
//! expr    := or
//! or      := and ("||" and)*
//! and     := unary ("&&" unary)*
//! unary   := "!" unary | compare
//! compare := sum (("==" | "!=") sum | "in" sum)?
//! sum     := postfix ("+" postfix)*
//! postfix := primary ("." IDENT | "." IDENT "(" args ")" | "[" expr "]")*
//! primary := IDENT | STRING | INT | "true" | "false" | "null" | "(" expr ")" | "[" args "]"
//! ```
//!
//! Strings take single or double quotes with `\\`, `\'`, `\"`, `\n` and `\t` escapes. Methods:
//! `startsWith(s)`, `endsWith(s)`, `contains(s)` (substring, or element of a list),
//! `lowerAscii()`, `upperAscii()`, `size()`. Reading a missing field is an error, as in CEL; a
//! condition that errs is false (fail closed) and a mapping that errs leaves its attribute unset.
//! Variables are whatever the caller binds: `assertion`, `google`, `attribute`.
//!
//! Parsing is bounded: at most [`MAX_LEN`] bytes and [`MAX_DEPTH`] levels of nesting, so no input
//! can exhaust the stack.

use std::collections::BTreeMap;

use serde_json::Value;

/// The longest expression accepted (Google's bound for conditions).
pub const MAX_LEN: usize = 4096;
/// The deepest nesting accepted.
pub const MAX_DEPTH: usize = 32;
/// The most operands and selections accepted; bounds left-leaning chains such as `a+a+…` or
/// `a.b.c…`, whose evaluation recurses once per link.
pub const MAX_NODES: usize = 512;

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Literal(Value),
    Var(String),
    Field(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Method {
        target: Box<Expr>,
        name: String,
        args: Vec<Expr>,
    },
    List(Vec<Expr>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Eq(Box<Expr>, Box<Expr>),
    Ne(Box<Expr>, Box<Expr>),
    In(Box<Expr>, Box<Expr>),
    Add(Box<Expr>, Box<Expr>),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExprError(pub String);

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Int(i64),
    Dot,
    Comma,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Plus,
    EqEq,
    NotEq,
    AndAnd,
    OrOr,
    Bang,
}

fn lex(src: &str) -> Result<Vec<Token>, ExprError> {
    let mut tokens = Vec::new();
    let mut chars = src.char_indices().peekable();
    while let Some((pos, c)) = chars.next() {
        let two = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>, want: char| {
            if chars.peek().map(|&(_, n)| n) == Some(want) {
                chars.next();
                true
            } else {
                false
            }
        };
        let token = match c {
            c if c.is_whitespace() => continue,
            '.' => Token::Dot,
            ',' => Token::Comma,
            '(' => Token::LParen,
            ')' => Token::RParen,
            '[' => Token::LBracket,
            ']' => Token::RBracket,
            '+' => Token::Plus,
            '=' if two(&mut chars, '=') => Token::EqEq,
            '!' if two(&mut chars, '=') => Token::NotEq,
            '!' => Token::Bang,
            '&' if two(&mut chars, '&') => Token::AndAnd,
            '|' if two(&mut chars, '|') => Token::OrOr,
            '\'' | '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => {
                            return Err(ExprError(format!(
                                "unterminated string starting at offset {pos}"
                            )));
                        }
                        Some((_, q)) if q == c => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => s.push('\n'),
                            Some((_, 't')) => s.push('\t'),
                            Some((_, e @ ('\\' | '\'' | '"'))) => s.push(e),
                            _ => {
                                return Err(ExprError(format!(
                                    "bad escape in string at offset {pos}"
                                )));
                            }
                        },
                        Some((_, ch)) => s.push(ch),
                    }
                }
                Token::Str(s)
            }
            c if c.is_ascii_digit() => {
                let mut n = String::from(c);
                while let Some(&(_, d)) = chars.peek() {
                    if !d.is_ascii_digit() {
                        break;
                    }
                    n.push(d);
                    chars.next();
                }
                Token::Int(
                    n.parse()
                        .map_err(|_| ExprError(format!("number too large at offset {pos}")))?,
                )
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let mut id = String::from(c);
                while let Some(&(_, d)) = chars.peek() {
                    if !(d.is_ascii_alphanumeric() || d == '_') {
                        break;
                    }
                    id.push(d);
                    chars.next();
                }
                Token::Ident(id)
            }
            other => {
                return Err(ExprError(format!(
                    "unexpected character '{other}' at offset {pos}"
                )));
            }
        };
        tokens.push(token);
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    nodes: usize,
}

impl Parser {
    fn count_node(&mut self) -> Result<(), ExprError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(ExprError(format!(
                "expression has more than {MAX_NODES} terms"
            )));
        }
        Ok(())
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn eat(&mut self, want: &Token) -> bool {
        if self.peek() == Some(want) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, want: &Token, what: &str) -> Result<(), ExprError> {
        if self.eat(want) {
            Ok(())
        } else {
            Err(ExprError(format!("expected {what}")))
        }
    }

    fn nested<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ExprError>,
    ) -> Result<T, ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExprError(format!(
                "expression nested deeper than {MAX_DEPTH} levels"
            )));
        }
        let out = f(self);
        self.depth -= 1;
        out
    }

    fn expr(&mut self) -> Result<Expr, ExprError> {
        self.nested(|p| {
            let mut left = p.and()?;
            while p.eat(&Token::OrOr) {
                left = Expr::Or(Box::new(left), Box::new(p.and()?));
            }
            Ok(left)
        })
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.unary()?;
        while self.eat(&Token::AndAnd) {
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.eat(&Token::Bang) {
            return self.nested(|p| Ok(Expr::Not(Box::new(p.unary()?))));
        }
        self.compare()
    }

    fn compare(&mut self) -> Result<Expr, ExprError> {
        let left = self.sum()?;
        if self.eat(&Token::EqEq) {
            return Ok(Expr::Eq(Box::new(left), Box::new(self.sum()?)));
        }
        if self.eat(&Token::NotEq) {
            return Ok(Expr::Ne(Box::new(left), Box::new(self.sum()?)));
        }
        if self.peek() == Some(&Token::Ident("in".into())) {
            self.pos += 1;
            return Ok(Expr::In(Box::new(left), Box::new(self.sum()?)));
        }
        Ok(left)
    }

    fn sum(&mut self) -> Result<Expr, ExprError> {
        let mut left = self.postfix()?;
        while self.eat(&Token::Plus) {
            left = Expr::Add(Box::new(left), Box::new(self.postfix()?));
        }
        Ok(left)
    }

    fn args(&mut self, close: &Token) -> Result<Vec<Expr>, ExprError> {
        let mut args = Vec::new();
        if self.eat(close) {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat(close) {
                return Ok(args);
            }
            self.expect(&Token::Comma, "',' or a closing bracket")?;
        }
    }

    fn postfix(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.primary()?;
        loop {
            self.count_node()?;
            if self.eat(&Token::Dot) {
                let Some(Token::Ident(name)) = self.peek().cloned() else {
                    return Err(ExprError(
                        "expected a field or method name after '.'".into(),
                    ));
                };
                self.pos += 1;
                if self.eat(&Token::LParen) {
                    let args = self.nested(|p| p.args(&Token::RParen))?;
                    e = Expr::Method {
                        target: Box::new(e),
                        name,
                        args,
                    };
                } else {
                    e = Expr::Field(Box::new(e), name);
                }
            } else if self.eat(&Token::LBracket) {
                let index = self.expr()?;
                self.expect(&Token::RBracket, "']'")?;
                e = Expr::Index(Box::new(e), Box::new(index));
            } else {
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        self.count_node()?;
        let token = self
            .peek()
            .cloned()
            .ok_or_else(|| ExprError("unexpected end of expression".into()))?;
        self.pos += 1;
        match token {
            Token::Str(s) => Ok(Expr::Literal(Value::String(s))),
            Token::Int(n) => Ok(Expr::Literal(Value::from(n))),
            Token::Ident(id) => Ok(match id.as_str() {
                "true" => Expr::Literal(Value::Bool(true)),
                "false" => Expr::Literal(Value::Bool(false)),
                "null" => Expr::Literal(Value::Null),
                _ => Expr::Var(id),
            }),
            Token::LParen => {
                let e = self.expr()?;
                self.expect(&Token::RParen, "')'")?;
                Ok(e)
            }
            Token::LBracket => Ok(Expr::List(self.nested(|p| p.args(&Token::RBracket))?)),
            other => Err(ExprError(format!("unexpected {other:?}"))),
        }
    }
}

/// Parses an expression of the subset.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    if src.len() > MAX_LEN {
        return Err(ExprError(format!("expression longer than {MAX_LEN} bytes")));
    }
    if src.trim().is_empty() {
        return Err(ExprError("empty expression".into()));
    }
    let mut parser = Parser {
        tokens: lex(src)?,
        pos: 0,
        depth: 0,
        nodes: 0,
    };
    let e = parser.expr()?;
    if parser.pos != parser.tokens.len() {
        return Err(ExprError(format!(
            "unexpected {:?} after the expression",
            parser.tokens[parser.pos]
        )));
    }
    Ok(e)
}

/// Evaluates `e` with the variables in `vars`.
pub fn eval(e: &Expr, vars: &BTreeMap<&str, &Value>) -> Result<Value, ExprError> {
    let str_of = |v: Value, what: &str| match v {
        Value::String(s) => Ok(s),
        other => Err(ExprError(format!("{what} must be a string, not {other}"))),
    };
    let bool_of = |v: Value| match v {
        Value::Bool(b) => Ok(b),
        other => Err(ExprError(format!("expected a boolean, not {other}"))),
    };
    Ok(match e {
        Expr::Literal(v) => v.clone(),
        Expr::Var(name) => (*vars
            .get(name.as_str())
            .ok_or_else(|| ExprError(format!("undeclared reference to '{name}'")))?)
        .clone(),
        Expr::Field(target, name) => field(eval(target, vars)?, name)?,
        Expr::Index(target, index) => match (eval(target, vars)?, eval(index, vars)?) {
            (v @ Value::Object(_), Value::String(key)) => field(v, &key)?,
            (Value::Array(items), Value::Number(n)) => n
                .as_u64()
                .and_then(|i| items.get(usize::try_from(i).ok()?).cloned())
                .ok_or_else(|| ExprError(format!("index {n} out of range")))?,
            _ => return Err(ExprError("bad index".into())),
        },
        Expr::Method { target, name, args } => {
            let target = eval(target, vars)?;
            let args = args
                .iter()
                .map(|a| eval(a, vars))
                .collect::<Result<Vec<_>, _>>()?;
            method(target, name, args)?
        }
        Expr::List(items) => Value::Array(
            items
                .iter()
                .map(|i| eval(i, vars))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Not(inner) => Value::Bool(!bool_of(eval(inner, vars)?)?),
        // CEL's commutative error semantics: a definite answer on either side wins over an error.
        Expr::And(a, b) => match (
            eval(a, vars).and_then(bool_of),
            eval(b, vars).and_then(bool_of),
        ) {
            (Ok(false), _) | (_, Ok(false)) => Value::Bool(false),
            (Ok(true), Ok(true)) => Value::Bool(true),
            (Err(e), _) | (_, Err(e)) => return Err(e),
        },
        Expr::Or(a, b) => match (
            eval(a, vars).and_then(bool_of),
            eval(b, vars).and_then(bool_of),
        ) {
            (Ok(true), _) | (_, Ok(true)) => Value::Bool(true),
            (Ok(false), Ok(false)) => Value::Bool(false),
            (Err(e), _) | (_, Err(e)) => return Err(e),
        },
        Expr::Eq(a, b) => Value::Bool(eval(a, vars)? == eval(b, vars)?),
        Expr::Ne(a, b) => Value::Bool(eval(a, vars)? != eval(b, vars)?),
        Expr::In(a, b) => {
            let needle = eval(a, vars)?;
            match eval(b, vars)? {
                Value::Array(items) => Value::Bool(items.contains(&needle)),
                Value::Object(map) => Value::Bool(map.contains_key(&str_of(needle, "a map key")?)),
                other => return Err(ExprError(format!("'in' needs a list or map, not {other}"))),
            }
        }
        Expr::Add(a, b) => match (eval(a, vars)?, eval(b, vars)?) {
            (Value::String(x), Value::String(y)) => Value::String(x + &y),
            (Value::Array(mut x), Value::Array(y)) => {
                x.extend(y);
                Value::Array(x)
            }
            (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
                (Some(x), Some(y)) => Value::from(
                    x.checked_add(y)
                        .ok_or_else(|| ExprError("integer overflow".into()))?,
                ),
                _ => return Err(ExprError("'+' on non-integer numbers".into())),
            },
            (x, y) => return Err(ExprError(format!("no '+' between {x} and {y}"))),
        },
    })
}

fn field(v: Value, name: &str) -> Result<Value, ExprError> {
    match v {
        Value::Object(mut map) => map
            .remove(name)
            .ok_or_else(|| ExprError(format!("no such key: '{name}'"))),
        other => Err(ExprError(format!("cannot select '{name}' from {other}"))),
    }
}

fn method(target: Value, name: &str, args: Vec<Value>) -> Result<Value, ExprError> {
    let one_str = |args: &[Value]| match args {
        [Value::String(s)] => Ok(s.clone()),
        _ => Err(ExprError(format!("{name}() takes one string argument"))),
    };
    Ok(match (name, &target) {
        ("startsWith", Value::String(s)) => Value::Bool(s.starts_with(&one_str(&args)?)),
        ("endsWith", Value::String(s)) => Value::Bool(s.ends_with(&one_str(&args)?)),
        ("contains", Value::String(s)) => Value::Bool(s.contains(&one_str(&args)?)),
        ("contains", Value::Array(items)) => match args.as_slice() {
            [needle] => Value::Bool(items.contains(needle)),
            _ => return Err(ExprError("contains() takes one argument".into())),
        },
        ("lowerAscii", Value::String(s)) if args.is_empty() => {
            Value::String(s.to_ascii_lowercase())
        }
        ("upperAscii", Value::String(s)) if args.is_empty() => {
            Value::String(s.to_ascii_uppercase())
        }
        ("size", Value::String(s)) if args.is_empty() => Value::from(s.chars().count()),
        ("size", Value::Array(items)) if args.is_empty() => Value::from(items.len()),
        ("size", Value::Object(map)) if args.is_empty() => Value::from(map.len()),
        _ => return Err(ExprError(format!("no method {name}() on {target}"))),
    })
}

/// Evaluates a condition: true only when it evaluates to `true`; any error is false.
pub fn holds(e: &Expr, vars: &BTreeMap<&str, &Value>) -> bool {
    matches!(eval(e, vars), Ok(Value::Bool(true)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(src: &str, assertion: &Value) -> Result<Value, ExprError> {
        let vars = BTreeMap::from([("assertion", assertion)]);
        eval(&parse(src)?, &vars)
    }

    #[test]
    fn kubernetes_claims() {
        let a =
            json!({"sub": "system:serviceaccount:ns1:ksa1", "kubernetes.io": {"namespace": "ns1"}});
        assert_eq!(
            run("assertion.sub", &a),
            Ok(json!("system:serviceaccount:ns1:ksa1"))
        );
        assert_eq!(
            run("assertion['kubernetes.io'].namespace", &a),
            Ok(json!("ns1"))
        );
        assert_eq!(
            run("'ns::' + assertion['kubernetes.io']['namespace']", &a),
            Ok(json!("ns::ns1"))
        );
        assert_eq!(
            run(
                "assertion.sub.startsWith(\"system:serviceaccount:ns1:\")",
                &a
            ),
            Ok(json!(true))
        );
        assert_eq!(
            run("assertion['kubernetes.io'].namespace in ['a', 'ns1']", &a),
            Ok(json!(true))
        );
        assert_eq!(
            run("!(assertion.sub == 'x') && true || false", &a),
            Ok(json!(true))
        );
    }

    #[test]
    fn missing_fields_are_errors_and_conditions_fail_closed() {
        let a = json!({"sub": "x"});
        assert!(run("assertion.nope", &a).is_err());
        let vars = BTreeMap::from([("assertion", &a)]);
        assert!(!holds(
            &parse("assertion.nope == 'x'").expect("parses"),
            &vars
        ));
        assert!(holds(
            &parse("assertion.nope == 'x' || true").expect("parses"),
            &vars
        ));
        assert!(!holds(&parse("assertion.sub").expect("parses"), &vars));
    }

    #[test]
    fn bad_syntax_is_refused() {
        for bad in [
            "",
            "a.",
            "a ==",
            "(a",
            "a b",
            "'x",
            "a.f(",
            "a & b",
            "1 ? 2 : 3",
            "[1,",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let deep = format!("{}a{}", "(".repeat(200), ")".repeat(200));
        assert!(parse(&deep).is_err());
        let deep_not = format!("{}a", "!".repeat(200));
        assert!(parse(&deep_not).is_err());
        assert!(parse(&"a+".repeat(3000)).is_err());
        assert!(parse(&format!("{}a", "a+".repeat(600))).is_err());
        assert!(parse(&format!("a{}", ".b".repeat(600))).is_err());
    }
}
