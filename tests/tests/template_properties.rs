//! Hostile strings through the route templates, checked against a parser
//! of what FreeSWITCH would read (mock-relay's dial-string parser): a value
//! either is refused, or lands as exactly the data it was, in exactly the
//! place the template put it: one leg, one endpoint, the same variables.

use proptest::prelude::*;
use std::collections::BTreeMap;
use switchy_controller::route_template::expand_checked;
use switchy_controller::router::{BridgeSpec, dial_string};
use switchy_protocol::esl::args::{self, Class, Context};

/// Strings rich in what dial strings, variable blocks and expansion treat
/// as syntax.
fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[0-9]{1,6}",
        "[a-z]{1,4}",
        Just(",".to_owned()),
        Just("|".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("<".to_owned()),
        Just(">".to_owned()),
        Just(";".to_owned()),
        Just(":_:".to_owned()),
        Just("${".to_owned()),
        Just("$${".to_owned()),
        Just("'".to_owned()),
        Just(" ".to_owned()),
        Just("\r\n".to_owned()),
        Just("@".to_owned()),
        Just("/".to_owned()),
        Just("=".to_owned()),
        Just("sofia/gateway/premium/1900".to_owned()),
        Just("execute_on_answer=hangup".to_owned()),
    ];
    proptest::collection::vec(piece, 1..8).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn a_template_value_is_refused_or_stays_data(v in hostile(), h in hostile()) {
        let caps = vec![None, Some(v.clone())];
        let classes: BTreeMap<usize, Class> = [(1, Class::Any)].into();
        let lookup = |n: &str| (n == "sip_h_X-Trace").then(|| h.clone());
        let x = |t: &str, c: Context| expand_checked(t, &caps, &classes, c, &lookup);
        let spec = BridgeSpec {
            dest: Some("$1@pbx.example.net".into()),
            profile: Some("external".into()),
            vars: [("trace".to_owned(), "${sip_h_X-Trace}".to_owned())].into(),
            ..Default::default()
        };
        if let Ok(dial) = dial_string(&spec, &x) {
            let d = mock_relay::dial::parse_dial_string(&dial);
            prop_assert_eq!(d.groups.len(), 1, "one failover group: {}", dial);
            prop_assert_eq!(d.groups[0].len(), 1, "one leg: {}", dial);
            let leg = &d.groups[0][0];
            prop_assert_eq!(&leg.endpoint, &format!("sofia/external/{v}@pbx.example.net"));
            prop_assert!(leg.vars.is_empty());
            prop_assert_eq!(d.globals, vec![("trace".to_owned(), h.clone())]);
            let clean = !dial.contains("${") && !dial.contains('\n');
            prop_assert!(clean, "expansion or line break in {}", dial);
        }
        // An application argument never carries an expansion or a line break.
        if let Ok(arg) = x("cid=${sip_h_X-Trace}", Context::AppArg) {
            let clean = !arg.contains("${") && !arg.contains('\r') && !arg.contains('\n');
            prop_assert!(clean, "expansion or line break in {}", arg);
        }
        // What the checks admit for a context has none of its syntax.
        if args::check(Context::Dial, &v).is_ok() {
            let clean = !v.chars().any(|c| args::DIAL_META.contains(&c) || c.is_whitespace());
            prop_assert!(clean, "dial syntax admitted in {}", v);
        }
    }
}
