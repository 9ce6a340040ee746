//! What a value may contain where it lands in a FreeSWITCH command.
//!
//! FreeSWITCH parses the text switchy sends in several nested languages:
//! dial strings (`{k=v}` / `[k=v]` / `<k=v>` variable blocks, `,` for
//! simultaneous and `|` for sequential legs, `:_:` for enterprise
//! originate, `;`-parameters of a sofia URI), application arguments (where
//! `${…}` and `$${…}` expand when the application runs, so `${system(…)}`
//! runs a shell command), and variable lists. A value that came from a
//! caller (a destination number, a caller-id name, a SIP header), from a
//! route capture or from a REST client is *data*: it must never become
//! syntax there. [`check`] tells whether a value is safe in a [`Context`];
//! the controller checks every value it puts into a command with it, and
//! refuses (never silently rewrites) what is not.

use std::fmt;

/// Where a value goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Context {
    /// A piece of a dial string: an endpoint, a destination, a gateway, a
    /// profile, a proxy (`bridge`, `originate`).
    Dial,
    /// A value inside a dial string's variable block (`{name=VALUE}`).
    DialVar,
    /// A channel variable's name (`name` of `{name=v}`, `set name=v`,
    /// `uuid_setvar <uuid> name v`).
    VarName,
    /// An application argument (`execute` through sendmsg, `&app(ARG)`,
    /// `uuid_broadcast`, a `set` value): variables expand there.
    AppArg,
    /// A value of a `uuid_setvar_multi` list (`a=1;b=2`).
    VarList,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Context::Dial => "a dial string",
            Context::DialVar => "a dial-string variable value",
            Context::VarName => "a channel variable name",
            Context::AppArg => "an application argument",
            Context::VarList => "a variable list value",
        })
    }
}

/// A value refused for a context.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{shown:?} refused in {context}: {reason}")]
pub struct Refused {
    /// Where it was to go.
    pub context: Context,
    /// Why.
    pub reason: &'static str,
    /// The value (at most 64 characters of it, for logs).
    pub shown: String,
}

/// Characters that are syntax somewhere in a dial string.
pub const DIAL_META: &[char] = &[
    ',', '|', '{', '}', '[', ']', '<', '>', ';', '\'', '"', '^', '\\', '`',
];

/// Characters that end or quote a value in a variable block.
pub const DIALVAR_META: &[char] = &[',', '{', '}', '[', ']', '<', '>', '\'', '"', '^', '\\'];

/// Checks `v` for `context`.
pub fn check(context: Context, v: &str) -> Result<(), Refused> {
    let refuse = |reason: &'static str| {
        Err(Refused {
            context,
            reason,
            shown: v.chars().take(64).collect(),
        })
    };
    if v.chars().any(|c| c.is_control()) {
        return refuse("control characters (CR, LF, NUL …) are not allowed");
    }
    if v.contains("${") || v.contains("$${") {
        return refuse("`${` would expand a FreeSWITCH variable or API call");
    }
    match context {
        Context::Dial => {
            if v.chars()
                .any(|c| DIAL_META.contains(&c) || c.is_whitespace())
            {
                return refuse(
                    "dial-string syntax (, | { } [ ] < > ; quotes ^ \\ or whitespace) is not allowed",
                );
            }
            if v.contains(":_:") {
                return refuse("`:_:` separates enterprise originate legs");
            }
        }
        Context::DialVar => {
            if v.chars().any(|c| DIALVAR_META.contains(&c)) {
                return refuse("`, { } [ ] < >`, quotes, `^` or `\\` would end the variable block");
            }
        }
        Context::VarName => {
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return refuse("a variable name is letters, digits, `_`, `-` and `.`");
            }
        }
        Context::AppArg => {}
        Context::VarList => {
            if v.contains(';') {
                return refuse("`;` separates the variables of the list");
            }
        }
    }
    Ok(())
}

/// What a route capture may contain (declared per capture in a routes
/// file; see the controller's router).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// `0-9`, at least one.
    Digits,
    /// Digits and `+ * #`.
    Dialable,
    /// A SIP user part without syntax: letters, digits, `. _ + * # -`.
    User,
    /// A `user@host[:port]` without syntax: [`Class::User`] plus `@ : .`.
    Uri,
    /// Anything the context allows (checked by [`check`] wherever it goes).
    Any,
}

impl Class {
    /// True when `v` is of this class.
    pub fn admits(self, v: &str) -> bool {
        let all = |f: fn(char) -> bool| !v.is_empty() && v.chars().all(f);
        match self {
            Class::Digits => all(|c| c.is_ascii_digit()),
            Class::Dialable => all(|c| c.is_ascii_digit() || matches!(c, '+' | '*' | '#')),
            Class::User => {
                all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '*' | '#' | '-'))
            }
            Class::Uri => all(|c| {
                c.is_ascii_alphanumeric()
                    || matches!(c, '.' | '_' | '+' | '*' | '#' | '-' | '@' | ':')
            }),
            Class::Any => true,
        }
    }
}

/// In a dial string, a value placed before the template's own `@host`
/// must not bring an `@` (or a `/`) of its own: `$1@pbx` with
/// `1900@premium-gw` would name another host.
fn host_kept(context: Context, v: &str, template_after: &str) -> Result<(), Refused> {
    if context == Context::Dial && template_after.contains('@') && v.contains(['@', '/']) {
        return Err(Refused {
            context,
            reason: "an `@` or `/` in a value before the template's `@host` would name another host",
            shown: v.chars().take(64).collect(),
        });
    }
    Ok(())
}

/// Fills a template for `context`: `$N` with capture N (which must be of
/// its declared class), `${name}` with `lookup(name)`, `$$` with `$`; every
/// value filled in must be safe in `context` ([`check`]). The template's own
/// text is the operator's and stays syntax.
pub fn fill(
    t: &str,
    captures: &[Option<String>],
    classes: &std::collections::BTreeMap<usize, Class>,
    context: Context,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Refused> {
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(d) = after.chars().next().filter(char::is_ascii_digit) {
            let n = d as usize - '0' as usize;
            if let Some(Some(c)) = captures.get(n) {
                if let Some(class) = classes.get(&n)
                    && !class.admits(c)
                {
                    return Err(Refused {
                        context,
                        reason: "the capture is not of the class the route declares for it",
                        shown: c.chars().take(64).collect(),
                    });
                }
                check(context, c)?;
                host_kept(context, c, &after[1..])?;
                out.push_str(c);
            }
            rest = &after[1..];
        } else if let Some(inner) = after.strip_prefix('{')
            && let Some(end) = inner.find('}')
        {
            if let Some(v) = lookup(&inner[..end]) {
                check(context, &v)?;
                host_kept(context, &v, &inner[end + 1..])?;
                out.push_str(&v);
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_context_refuses_its_syntax() {
        // The toll-fraud destination forks a bridge.
        assert!(check(Context::Dial, "5551234@h,sofia/gateway/premium/19005550100").is_err());
        assert!(check(Context::Dial, "1234|sofia/gateway/x/1").is_err());
        assert!(check(Context::Dial, "{x=1}1234").is_err());
        assert!(check(Context::Dial, "1234;fs_path=sip:evil").is_err());
        assert!(check(Context::Dial, "12:_:34").is_err());
        assert!(check(Context::Dial, "12 34").is_err());
        assert!(check(Context::Dial, "2001@10.0.0.5:5060").is_ok());
        assert!(check(Context::DialVar, "x,execute_on_answer=hangup").is_err());
        assert!(check(Context::DialVar, "a}sofia/x").is_err());
        assert!(check(Context::DialVar, "Alice Smith").is_ok());
        assert!(check(Context::AppArg, "Eve ${system(touch pwn)}").is_err());
        assert!(check(Context::AppArg, "Eve $${x}").is_err());
        assert!(check(Context::AppArg, "a\r\nb").is_err());
        assert!(check(Context::AppArg, "Eve (sales)").is_ok());
        assert!(check(Context::VarName, "sip_h_X-switchy-orig-uuid").is_ok());
        assert!(check(Context::VarName, "a=1;b").is_err());
        assert!(check(Context::VarName, "").is_err());
        assert!(check(Context::VarList, "1;hangup_after_bridge=true").is_err());
        let e = check(Context::Dial, "a,b").unwrap_err();
        assert!(e.to_string().contains("refused in a dial string"), "{e}");
    }

    #[test]
    fn a_value_cannot_move_the_templates_host() {
        let caps = vec![None, Some("1900@premium-gw".to_owned())];
        let any: std::collections::BTreeMap<usize, Class> = [(1, Class::Any)].into();
        let none = |_: &str| None;
        assert!(fill("$1@pbx", &caps, &any, Context::Dial, &none).is_err());
        assert!(fill("sofia/external/$1", &caps, &any, Context::Dial, &none).is_ok());
        let ok = vec![None, Some("1900".to_owned())];
        assert_eq!(
            fill("$1@pbx", &ok, &any, Context::Dial, &none).unwrap(),
            "1900@pbx"
        );
    }

    #[test]
    fn classes() {
        assert!(Class::Digits.admits("0123"));
        assert!(!Class::Digits.admits("12a") && !Class::Digits.admits(""));
        assert!(Class::Dialable.admits("+44*12#"));
        assert!(Class::User.admits("alice.b-1"));
        assert!(!Class::User.admits("a@b"));
        assert!(Class::Uri.admits("alice@10.0.0.1:5060"));
        assert!(!Class::Uri.admits("a,b"));
        assert!(Class::Any.admits("a,b"));
    }
}
