//! Hostile values through the argument checks and the template filler
//! (`switchy_protocol::esl::args`): whatever `fill` accepts for a context
//! holds no syntax of that context beyond the template's own text, and
//! `check` never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use switchy_protocol::esl::args::{self, Class, Context};

const CONTEXTS: [Context; 5] = [
    Context::Dial,
    Context::DialVar,
    Context::VarName,
    Context::AppArg,
    Context::VarList,
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\u{0}');
    let cap = parts.next().unwrap_or("").to_owned();
    let var = parts.next().unwrap_or("").to_owned();
    let template = "x$1y${v}z";
    for c in CONTEXTS {
        let _ = args::check(c, &cap);
        let caps = vec![None, Some(cap.clone())];
        let classes: BTreeMap<usize, Class> = [(1, Class::Any)].into();
        let lookup = |n: &str| (n == "v").then(|| var.clone());
        if let Ok(out) = args::fill(template, &caps, &classes, c, &lookup) {
            assert_eq!(out, format!("x{cap}y{var}z"));
            assert!(args::check(c, &cap).is_ok() && args::check(c, &var).is_ok());
            assert!(!cap.contains("${") && !var.contains("${"));
            if c == Context::Dial {
                assert!(!out.chars().any(|ch| args::DIAL_META.contains(&ch) || ch.is_whitespace()));
            }
        }
    }
});
