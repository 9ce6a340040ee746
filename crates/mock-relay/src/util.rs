//! Small helpers: wall-clock formatting as FreeSWITCH writes it, hangup
//! causes, a tiny deterministic RNG.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// (year, month, day, hour, min, sec, weekday 0=Sunday) in UTC.
fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32, usize) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    );
    let wd = ((days + 4).rem_euclid(7)) as usize;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if mo <= 2 { y + 1 } else { y }, mo, d, h, m, s, wd)
}

/// `YYYY-MM-DD HH:MM:SS` (the mock's local time is UTC).
pub fn date_local(us: u64) -> String {
    let (y, mo, d, h, m, s, _) = civil(us / 1_000_000);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02}")
}

/// RFC 822 date, e.g. `Mon, 23 Nov 2026 08:33:23 GMT`.
pub fn date_gmt(us: u64) -> String {
    const WD: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, m, s, wd) = civil(us / 1_000_000);
    format!(
        "{}, {d:02} {} {y:04} {h:02}:{m:02}:{s:02} GMT",
        WD[wd],
        MO[(mo as usize).saturating_sub(1).min(11)]
    )
}

/// Hangup cause names and Q.850 numbers (section 11).
pub const CAUSES: &[(&str, u32)] = &[
    ("NONE", 0),
    ("UNALLOCATED_NUMBER", 1),
    ("NO_ROUTE_TRANSIT_NET", 2),
    ("NO_ROUTE_DESTINATION", 3),
    ("CHANNEL_UNACCEPTABLE", 6),
    ("CALL_AWARDED_DELIVERED", 7),
    ("NORMAL_CLEARING", 16),
    ("USER_BUSY", 17),
    ("NO_USER_RESPONSE", 18),
    ("NO_ANSWER", 19),
    ("SUBSCRIBER_ABSENT", 20),
    ("CALL_REJECTED", 21),
    ("NUMBER_CHANGED", 22),
    ("REDIRECTION_TO_NEW_DESTINATION", 23),
    ("EXCHANGE_ROUTING_ERROR", 25),
    ("DESTINATION_OUT_OF_ORDER", 27),
    ("INVALID_NUMBER_FORMAT", 28),
    ("FACILITY_REJECTED", 29),
    ("RESPONSE_TO_STATUS_ENQUIRY", 30),
    ("NORMAL_UNSPECIFIED", 31),
    ("NORMAL_CIRCUIT_CONGESTION", 34),
    ("NETWORK_OUT_OF_ORDER", 38),
    ("NORMAL_TEMPORARY_FAILURE", 41),
    ("SWITCH_CONGESTION", 42),
    ("ACCESS_INFO_DISCARDED", 43),
    ("REQUESTED_CHAN_UNAVAIL", 44),
    ("PRE_EMPTED", 45),
    ("FACILITY_NOT_SUBSCRIBED", 50),
    ("OUTGOING_CALL_BARRED", 52),
    ("INCOMING_CALL_BARRED", 54),
    ("BEARERCAPABILITY_NOTAUTH", 57),
    ("BEARERCAPABILITY_NOTAVAIL", 58),
    ("SERVICE_UNAVAILABLE", 63),
    ("BEARERCAPABILITY_NOTIMPL", 65),
    ("CHAN_NOT_IMPLEMENTED", 66),
    ("FACILITY_NOT_IMPLEMENTED", 69),
    ("SERVICE_NOT_IMPLEMENTED", 79),
    ("INVALID_CALL_REFERENCE", 81),
    ("INCOMPATIBLE_DESTINATION", 88),
    ("INVALID_MSG_UNSPECIFIED", 95),
    ("MANDATORY_IE_MISSING", 96),
    ("MESSAGE_TYPE_NONEXIST", 97),
    ("WRONG_MESSAGE", 98),
    ("IE_NONEXIST", 99),
    ("INVALID_IE_CONTENTS", 100),
    ("WRONG_CALL_STATE", 101),
    ("RECOVERY_ON_TIMER_EXPIRE", 102),
    ("MANDATORY_IE_LENGTH_ERROR", 103),
    ("PROTOCOL_ERROR", 111),
    ("INTERWORKING", 127),
    ("SUCCESS", 142),
    ("ORIGINATOR_CANCEL", 487),
    ("CRASH", 700),
    ("SYSTEM_SHUTDOWN", 701),
    ("LOSE_RACE", 702),
    ("MANAGER_REQUEST", 703),
    ("BLIND_TRANSFER", 800),
    ("ATTENDED_TRANSFER", 801),
    ("ALLOTTED_TIMEOUT", 802),
    ("USER_CHALLENGE", 803),
    ("MEDIA_TIMEOUT", 804),
    ("PICKED_OFF", 805),
    ("USER_NOT_REGISTERED", 806),
    ("PROGRESS_TIMEOUT", 807),
    ("INVALID_GATEWAY", 808),
    ("GATEWAY_DOWN", 809),
    ("INVALID_URL", 810),
    ("INVALID_PROFILE", 811),
    ("NO_PICKUP", 812),
];

/// A cause given by name (any case) or number; unknown → NORMAL_CLEARING,
/// as FreeSWITCH does.
pub fn cause(s: &str) -> &'static str {
    if let Ok(n) = s.parse::<u32>() {
        return CAUSES
            .iter()
            .find(|(_, c)| *c == n)
            .map_or("NORMAL_CLEARING", |(name, _)| name);
    }
    CAUSES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(s))
        .map_or("NORMAL_CLEARING", |(name, _)| name)
}

/// True when `s` names a known cause.
pub fn is_cause(s: &str) -> bool {
    CAUSES.iter().any(|(n, _)| n.eq_ignore_ascii_case(s))
}

/// The Q.850 number of a cause name: causes above 127 are FreeSWITCH's own
/// and report 16 (NORMAL_CLEARING), as a real CHANNEL_HANGUP_COMPLETE for
/// MANAGER_REQUEST shows.
pub fn cause_q850(name: &str) -> u32 {
    CAUSES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(16, |(_, c)| if *c <= 127 { *c } else { 16 })
}

/// xorshift64*: deterministic per seed, good enough for failure ratios.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_freeswitch_format() {
        // 1795422803217570 µs is in the capture: Mon, 23 Nov 2026 08:33:23 GMT.
        assert_eq!(
            date_gmt(1_795_422_803_217_570),
            "Mon, 23 Nov 2026 08:33:23 GMT"
        );
        assert_eq!(date_local(1_795_422_803_217_570), "2026-11-23 08:33:23");
    }

    #[test]
    fn causes_by_name_or_number() {
        assert_eq!(cause("user_busy"), "USER_BUSY");
        assert_eq!(cause("17"), "USER_BUSY");
        assert_eq!(cause("bogus"), "NORMAL_CLEARING");
        assert_eq!(cause_q850("ORIGINATOR_CANCEL"), 16);
        assert_eq!(cause_q850("USER_BUSY"), 17);
    }
}
