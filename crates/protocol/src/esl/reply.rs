//! Replies to commands: `command/reply` (`Reply-Text: +OK …` / `-ERR …`) and
//! `api/response` (the command output as body), turned into `Result`s.

use super::headers::Headers;
use std::borrow::Cow;

/// A command FreeSWITCH refused: the reply text as it was sent
/// (`-ERR invalid`, `-ERR No such channel!`, `-USAGE: …`, `-ERROR` …).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("FreeSWITCH refused the command: {text}")]
pub struct ReplyError {
    /// The full reply text, trailing newline removed.
    pub text: String,
}

impl ReplyError {
    /// The text after the leading `-ERR ` (or `-`), e.g. a hangup cause
    /// `USER_BUSY` for a failed originate.
    pub fn reason(&self) -> &str {
        let t = self.text.as_str();
        t.strip_prefix("-ERR ")
            .or_else(|| t.strip_prefix("-ERR"))
            .or_else(|| t.strip_prefix('-'))
            .unwrap_or(t)
            .trim()
    }
}

/// A `command/reply` frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandReply {
    /// The frame's headers (`Reply-Text`, `Job-UUID`, …).
    pub headers: Headers,
}

impl CommandReply {
    /// `Reply-Text`.
    pub fn reply_text(&self) -> Option<&str> {
        self.headers.get("Reply-Text")
    }

    /// `Ok(text after "+OK")` or `Err` with the `-ERR …` text. A missing
    /// `Reply-Text` is an error too.
    pub fn result(&self) -> Result<&str, ReplyError> {
        let text = self.reply_text().unwrap_or("");
        match text.strip_prefix("+OK") {
            Some(rest) => Ok(rest.trim_start()),
            None => Err(ReplyError {
                text: text.to_owned(),
            }),
        }
    }

    /// The `Job-UUID` of a `bgapi` reply (header, else parsed from
    /// `+OK Job-UUID: …`).
    pub fn job_uuid(&self) -> Option<&str> {
        self.headers.get("Job-UUID").or_else(|| {
            self.reply_text()?
                .strip_prefix("+OK Job-UUID: ")
                .map(str::trim)
        })
    }
}

/// An `api/response` frame: the command output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiResponse {
    /// The output bytes as sent (often, not always, ending in LF).
    pub body: Vec<u8>,
}

impl ApiResponse {
    /// The output as text (lossy for invalid UTF-8).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// `Err` when the output starts with `-` (`-ERR …`, `-USAGE: …`,
    /// `-ERROR`), else `Ok` with the output, trailing newline removed and a
    /// leading `+OK ` stripped.
    pub fn result(&self) -> Result<Cow<'_, str>, ReplyError> {
        api_result(&self.body)
    }
}

/// The `Result` of an api output, as for [`ApiResponse::result`]; also used
/// for the body of a BACKGROUND_JOB.
pub fn api_result(body: &[u8]) -> Result<Cow<'_, str>, ReplyError> {
    let text = String::from_utf8_lossy(body);
    let trimmed_len = text.trim_end_matches(['\n', '\r']).len();
    if text.starts_with('-') {
        return Err(ReplyError {
            text: text[..trimmed_len].to_owned(),
        });
    }
    let start = if text.starts_with("+OK ") {
        4
    } else if text.starts_with("+OK") {
        3
    } else {
        0
    };
    Ok(match text {
        Cow::Borrowed(s) => Cow::Borrowed(&s[start..trimmed_len.max(start)]),
        Cow::Owned(s) => Cow::Owned(s[start..trimmed_len.max(start)].to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: &str) -> CommandReply {
        CommandReply {
            headers: [("Content-Type", "command/reply"), ("Reply-Text", text)]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn command_reply_results() {
        assert_eq!(reply("+OK accepted").result(), Ok("accepted"));
        let err = reply("-ERR invalid").result().unwrap_err();
        assert_eq!(err.reason(), "invalid");
        assert_eq!(reply("+OK Job-UUID: abc-1").job_uuid(), Some("abc-1"));
    }

    #[test]
    fn api_results() {
        assert_eq!(api_result(b"+OK 7d5a\n").unwrap(), "7d5a");
        assert_eq!(api_result(b"true").unwrap(), "true");
        assert_eq!(api_result(b"+OK\n").unwrap(), "");
        assert_eq!(
            api_result(b"-ERR USER_BUSY\n").unwrap_err().reason(),
            "USER_BUSY"
        );
        assert_eq!(api_result(b"-ERROR\n").unwrap_err().text, "-ERROR");
        assert!(api_result(b"-USAGE: <uuid>\n").is_err());
    }
}
