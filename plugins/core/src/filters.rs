//! containerd's filter syntax, used by every List call: `type==io.berth.grpc.v1`,
//! `labels."a.b"!=x,name~=^busy`. Selectors joined by `,` must all match; several filter
//! strings match when any one does. An empty filter list matches everything.
//!
//! ```text
//! filter    := selector ("," selector)*
//! selector  := fieldpath [ operator value ]
//! fieldpath := field ("." field)*
//! field     := quoted | [A-Za-z_][A-Za-z0-9_]*
//! operator  := "==" | "!=" | "~="
//! value     := quoted | [^\s,"]+
//! quoted    := '"' (char | '\' escape)* '"'
//! ```

use regex::Regex;

use crate::Error;

/// Exposes an object's fields to filters. `path` is the dotted field path, unquoted.
pub trait Adaptor {
    /// The values of the field at `path`; empty when the field is absent. Fields with several
    /// values (platforms, capabilities) match when any value matches.
    fn field(&self, path: &[String]) -> Vec<String>;
}

#[derive(Debug, Clone)]
enum Operator {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Operator,
}

impl Selector {
    fn matches(&self, obj: &dyn Adaptor) -> bool {
        let values = obj.field(&self.path);
        if values.is_empty() {
            return false;
        }
        match &self.op {
            Operator::Present => true,
            Operator::Equal(v) => values.iter().any(|x| x == v),
            Operator::NotEqual(v) => values.iter().all(|x| x != v),
            Operator::Matches(re) => values.iter().any(|x| re.is_match(x)),
        }
    }
}

/// A parsed set of filters (an OR of ANDs).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    any_of: Vec<Vec<Selector>>,
}

impl Filter {
    /// Parses filter strings; empty strings are ignored.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Self, Error> {
        let mut any_of = Vec::new();
        for f in filters {
            let f = f.as_ref();
            if f.trim().is_empty() {
                continue;
            }
            any_of.push(
                Parser::new(f)
                    .filter()
                    .map_err(|e| Error::invalid_argument(format!("parse error in filter {f:?}: {e}")))?,
            );
        }
        Ok(Filter { any_of })
    }

    /// Whether `obj` passes the filter.
    pub fn matches(&self, obj: &dyn Adaptor) -> bool {
        self.any_of.is_empty() || self.any_of.iter().any(|all| all.iter().all(|s| s.matches(obj)))
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser { src, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.src[self.pos..]
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.src.len() - trimmed.len();
    }

    fn eat(&mut self, s: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(s) {
            self.pos += s.len();
            true
        } else {
            false
        }
    }

    fn filter(&mut self) -> Result<Vec<Selector>, String> {
        let mut sels = vec![self.selector()?];
        loop {
            self.skip_ws();
            if self.rest().is_empty() {
                return Ok(sels);
            }
            if !self.eat(",") {
                return Err(format!("expected ',' at offset {}", self.pos));
            }
            sels.push(self.selector()?);
        }
    }

    fn selector(&mut self) -> Result<Selector, String> {
        let mut path = vec![self.field()?];
        while self.eat(".") {
            path.push(self.field()?);
        }
        let op = if self.eat("==") {
            Operator::Equal(self.value()?)
        } else if self.eat("!=") {
            Operator::NotEqual(self.value()?)
        } else if self.eat("~=") {
            let v = self.value()?;
            Operator::Matches(Regex::new(&v).map_err(|e| format!("bad regular expression {v:?}: {e}"))?)
        } else {
            Operator::Present
        };
        Ok(Selector { path, op })
    }

    fn field(&mut self) -> Result<String, String> {
        self.skip_ws();
        if self.rest().starts_with('"') {
            return self.quoted();
        }
        let len = self
            .rest()
            .char_indices()
            .find(|&(i, c)| !(c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit())))
            .map_or(self.rest().len(), |(i, _)| i);
        if len == 0 {
            return Err(format!("expected field name at offset {}", self.pos));
        }
        let f = self.rest()[..len].to_string();
        self.pos += len;
        Ok(f)
    }

    fn value(&mut self) -> Result<String, String> {
        self.skip_ws();
        if self.rest().starts_with('"') {
            return self.quoted();
        }
        let len = self
            .rest()
            .char_indices()
            .find(|&(_, c)| c.is_whitespace() || c == ',' || c == '"')
            .map_or(self.rest().len(), |(i, _)| i);
        if len == 0 {
            return Err(format!("expected value at offset {}", self.pos));
        }
        let v = self.rest()[..len].to_string();
        self.pos += len;
        Ok(v)
    }

    fn quoted(&mut self) -> Result<String, String> {
        let start = self.pos;
        self.pos += 1; // opening quote
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, e @ ('"' | '\\' | '/'))) => out.push(e),
                    Some((_, e)) => return Err(format!("unknown escape \\{e}")),
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(format!("unterminated quoted string at offset {start}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Obj {
        name: String,
        labels: BTreeMap<String, String>,
        platforms: Vec<String>,
    }

    impl Adaptor for Obj {
        fn field(&self, path: &[String]) -> Vec<String> {
            match path {
                [f] if f == "name" => vec![self.name.clone()],
                [f] if f == "platforms" => self.platforms.clone(),
                [f, k] if f == "labels" => self.labels.get(k).cloned().into_iter().collect(),
                _ => vec![],
            }
        }
    }

    fn obj() -> Obj {
        Obj {
            name: "docker.io/library/busybox:latest".into(),
            labels: [("a.b".to_string(), "x y".to_string()), ("c".to_string(), "1".to_string())].into(),
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
        }
    }

    fn m(filters: &[&str]) -> bool {
        Filter::parse_all(filters).unwrap().matches(&obj())
    }

    #[test]
    fn operators() {
        assert!(m(&[]));
        assert!(m(&["name==docker.io/library/busybox:latest"]));
        assert!(!m(&["name!=docker.io/library/busybox:latest"]));
        assert!(m(&["name~=busy"]));
        assert!(!m(&["name~=^busy"]));
        assert!(m(&["labels.c"]));
        assert!(!m(&["labels.d"]));
        assert!(!m(&["labels.d!=1"]), "absent fields never match");
        assert!(m(&[r#"labels."a.b"=="x y""#]));
        assert!(m(&["platforms==linux/arm64"]));
    }

    #[test]
    fn and_within_or_across() {
        assert!(!m(&["labels.c==1,name==other"]));
        assert!(m(&["labels.c==1, name~=busybox"]));
        assert!(m(&["name==other", "labels.c==1"]));
    }

    #[test]
    fn parse_errors() {
        for bad in ["==x", "name==", "name==a b", r#"labels."open"#, "name~=(", "name==a,", "name=x"] {
            assert!(Filter::parse_all(&[bad]).is_err(), "{bad:?} parsed");
        }
    }
}
