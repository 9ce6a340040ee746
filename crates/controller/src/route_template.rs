//! Route templates as data, never syntax: `$N` (a capture) and `${name}`
//! (a channel variable or header: caller-controlled) are filled in, and
//! each value filled in is checked for where it lands
//! (`switchy_protocol::esl::args`). A capture may declare what it holds
//! (`captures = { 1 = "digits" }`); a capture that goes into a dial string
//! and whose pattern could hold dial-string syntax must declare it, or the
//! routes file is refused at load time.

use regex::Regex;
use regex_syntax::ast::{self, Ast};
#[cfg(test)]
use switchy_protocol::esl::args::Class;
use switchy_protocol::esl::args::{self, Context};

/// Capture numbers a template refers to (`$N`; `$$` is a literal `$`).
pub fn capture_refs(t: &str) -> Vec<usize> {
    let b = t.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'$' {
            if b[i + 1].is_ascii_digit() {
                out.push((b[i + 1] - b'0') as usize);
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    out
}

/// The text of capture group `n` of `pattern` (0: the whole pattern).
pub fn group_pattern(pattern: &str, n: usize) -> Option<String> {
    if n == 0 {
        return Some(pattern.to_owned());
    }
    let ast = ast::parse::Parser::new().parse(pattern).ok()?;
    struct Find {
        n: u32,
        span: Option<ast::Span>,
    }
    impl ast::Visitor for Find {
        type Output = Option<ast::Span>;
        type Err = ();
        fn finish(self) -> Result<Self::Output, ()> {
            Ok(self.span)
        }
        fn visit_pre(&mut self, a: &Ast) -> Result<(), ()> {
            if let Ast::Group(g) = a {
                let index = match &g.kind {
                    ast::GroupKind::CaptureIndex(i) => Some(*i),
                    ast::GroupKind::CaptureName { name, .. } => Some(name.index),
                    ast::GroupKind::NonCapturing(_) => None,
                };
                if index == Some(self.n) && self.span.is_none() {
                    self.span = Some(g.span);
                }
            }
            Ok(())
        }
    }
    let span = ast::visit(
        &ast,
        Find {
            n: n as u32,
            span: None,
        },
    )
    .ok()??;
    pattern
        .get(span.start.offset..span.end.offset)
        .map(str::to_owned)
}

/// True when the sub-pattern `sub` can match a value that is syntax in
/// `context` (probed with each metacharacter alone and between letters
/// and digits, whitespace, `:_:` and `${x}`).
pub fn can_hold_syntax(sub: &str, context: Context) -> bool {
    let Ok(re) = Regex::new(&format!("^(?:{sub})$")) else {
        return true;
    };
    let meta: &[char] = match context {
        Context::DialVar => args::DIALVAR_META,
        _ => args::DIAL_META,
    };
    let mut probes: Vec<String> = meta.iter().map(|c| c.to_string()).collect();
    probes.extend([" ".into(), "\t".into(), ":_:".into(), "${x}".into()]);
    probes.iter().any(|m| {
        [
            m.clone(),
            format!("1{m}1"),
            format!("a{m}a"),
            format!("1{m}"),
            format!("{m}1"),
            format!("1@h{m}s/g/1"),
        ]
        .iter()
        .any(|p| re.is_match(p))
    })
}

pub use switchy_protocol::esl::args::fill as expand_checked;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn groups_are_found_by_number_and_probed() {
        assert_eq!(group_pattern(r"^9(\d+)$", 1).as_deref(), Some(r"(\d+)"));
        assert_eq!(
            group_pattern(r"^(?:00)?(?P<cc>\d{1,3})(.+)$", 2).as_deref(),
            Some("(.+)")
        );
        assert_eq!(group_pattern(r"^(\d+)$", 2), None);
        assert!(can_hold_syntax("(.+)", Context::Dial));
        assert!(can_hold_syntax("([^@]+)", Context::Dial));
        assert!(can_hold_syntax(r"([0-9,]+)", Context::Dial));
        assert!(!can_hold_syntax(r"(\d+)", Context::Dial));
        assert!(!can_hold_syntax(r"([0-9*#+]{3,15})", Context::Dial));
        assert!(!can_hold_syntax(r"([a-z0-9.]+@[a-z0-9.]+)", Context::Dial));
    }

    #[test]
    fn values_are_data() {
        let caps = vec![
            Some("5551234@h,sofia/gateway/premium/19005550100".to_owned()),
            Some("5551234@h,sofia/gateway/premium/19005550100".to_owned()),
        ];
        let none = |_: &str| None;
        let classes = BTreeMap::new();
        let e = expand_checked("$1@pbx", &caps, &classes, Context::Dial, &none).unwrap_err();
        assert_eq!(e.context, Context::Dial);
        let digits: BTreeMap<usize, Class> = [(1, Class::Digits)].into();
        let ok = vec![None, Some("5551234".to_owned())];
        assert_eq!(
            expand_checked("$1@pbx", &ok, &digits, Context::Dial, &none).unwrap(),
            "5551234@pbx"
        );
        let bad = vec![None, Some("555a".to_owned())];
        assert!(expand_checked("$1@pbx", &bad, &digits, Context::Dial, &none).is_err());
        // Channel variables (caller-controlled) are checked too.
        let hdr = |n: &str| (n == "sip_h_X-Trace").then(|| "x,execute_on_answer=hangup".to_owned());
        assert!(expand_checked("${sip_h_X-Trace}", &[], &classes, Context::DialVar, &hdr).is_err());
        let name = |_: &str| Some("Eve ${system(touch pwn)}".to_owned());
        assert!(expand_checked("cid=${x}", &[], &classes, Context::AppArg, &name).is_err());
        // `$$` stays a literal, template text stays syntax.
        assert_eq!(
            expand_checked("{a=1}sofia/x/$$1", &[], &classes, Context::Dial, &none).unwrap(),
            "{a=1}sofia/x/$1"
        );
    }
}
