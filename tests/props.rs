//! Property tests (issue 17 item 8): request parsing and the model's constructors take any
//! input — bodies, content types, field values — without a panic, and refuse what they refuse
//! with a 4xx, never a 5xx: the functions the create handler calls, then the whole daemon over
//! HTTP on a fake host (`common::in_process`, answers checked against docs/openapi.json). No
//! root.

mod common;

use creepy_meow::api::request::{parse_create, BodyFormat};
use creepy_meow::model::{parse_vlan_list, ContainerId, HostId, Ipv4Cidr, VlanId};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The longest interface name the kernel takes (IFNAMSIZ 16, with the NUL).
const IFNAMSIZ_MAX: usize = 15;

/// A field name: one a create knows, or anything.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["id", "vlan", "ip", "gateway", "template"])
            .prop_map(String::from),
        ".{0,12}",
    ]
}

/// A field value: plausible (numbers, addresses, prefixes at and past their edges) or anything.
fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        (any::<[u8; 4]>(), 0u32..40)
            .prop_map(|(a, p)| format!("{}.{}.{}.{}/{p}", a[0], a[1], a[2], a[3])),
        any::<[u8; 4]>().prop_map(|a| format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])),
        ".{0,40}",
    ]
}

/// Any JSON value a field could carry, nested a little.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        field_value().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Parses `body` as `format`: a refusal must be a client error.
fn assert_parses_or_4xx(format: BodyFormat, body: &[u8]) -> Result<(), TestCaseError> {
    if let Err(e) = parse_create(format, body) {
        prop_assert!(
            e.status.is_client_error(),
            "{} for {:?}: {}",
            e.status,
            String::from_utf8_lossy(body),
            e.message
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_content_type_is_accepted_or_refused_with_415(ct in proptest::option::of(".{0,60}")) {
        if let Err(e) = BodyFormat::from_content_type(ct.as_deref()) {
            prop_assert_eq!(e.status.as_u16(), 415);
        }
    }

    #[test]
    fn any_bytes_in_either_format_parse_or_get_a_4xx(body in prop::collection::vec(any::<u8>(), 0..200)) {
        assert_parses_or_4xx(BodyFormat::Form, &body)?;
        assert_parses_or_4xx(BodyFormat::Json, &body)?;
    }

    #[test]
    fn any_form_fields_parse_or_get_a_4xx(
        pairs in prop::collection::vec((field_name(), field_value()), 0..7)
    ) {
        let body = serde_urlencoded::to_string(&pairs).unwrap();
        assert_parses_or_4xx(BodyFormat::Form, body.as_bytes())?;
    }

    #[test]
    fn any_json_object_parses_or_gets_a_4xx(
        fields in prop::collection::btree_map(field_name(), json_value(), 0..7)
    ) {
        let body = serde_json::Value::Object(fields.into_iter().collect()).to_string();
        assert_parses_or_4xx(BodyFormat::Json, body.as_bytes())?;
    }

    #[test]
    fn a_parsed_create_names_interfaces_the_kernel_takes(
        id in any::<u64>(), vlan in any::<u64>(), ip in field_value()
    ) {
        let body = format!("id={id}&vlan={vlan}&ip={}", urlencode(&ip));
        if let Ok(spec) = parse_create(BodyFormat::Form, body.as_bytes()) {
            prop_assert!(spec.id.host_veth().len() <= IFNAMSIZ_MAX);
            prop_assert!(spec.vlan.bridge_name().len() <= IFNAMSIZ_MAX);
            prop_assert!(spec.vlan.vxlan_name().len() <= IFNAMSIZ_MAX);
        }
    }

    #[test]
    fn the_ids_take_any_number_and_any_text(n in any::<u64>(), text in ".{0,24}") {
        for id in [ContainerId::new(n).ok(), text.parse::<ContainerId>().ok()].into_iter().flatten() {
            prop_assert!(id.host_veth().len() <= IFNAMSIZ_MAX);
            let _ = id.container_name();
        }
        let vlans = [VlanId::new(n).ok(), text.parse::<VlanId>().ok()];
        let hosts = [HostId::new(n).ok(), text.parse::<HostId>().ok()];
        for vlan in vlans.into_iter().flatten() {
            prop_assert!(vlan.bridge_name().len() <= IFNAMSIZ_MAX);
            prop_assert!(vlan.vxlan_name().len() <= IFNAMSIZ_MAX);
            for host in hosts.into_iter().flatten() {
                prop_assert!(vlan.subnet().contains(vlan.host_address(host).addr));
            }
        }
    }

    #[test]
    fn prefixes_and_vlan_lists_take_any_text(text in ".{0,40}", cidr in field_value()) {
        for s in [&text, &cidr] {
            if let Ok(c) = s.parse::<Ipv4Cidr>() {
                prop_assert!(c.prefix <= 32);
                prop_assert!(c.contains(c.addr), "{} outside its own prefix", s);
                let _ = c.check_host();
            }
            let _ = parse_vlan_list(s);
        }
    }
}

/// `text` percent-encoded for a form body.
fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("v", text)]).unwrap()[2..].to_string()
}

/// A create's body as it may come: raw bytes, form fields or a JSON object.
fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec((field_name(), field_value()), 0..7)
            .prop_map(|pairs| serde_urlencoded::to_string(pairs).unwrap().into_bytes()),
        prop::collection::btree_map(field_name(), json_value(), 0..7).prop_map(|fields| {
            serde_json::Value::Object(fields.into_iter().collect())
                .to_string()
                .into_bytes()
        }),
    ]
}

/// A Content-Type header: one of the two read, with parameters or odd case, or any printable
/// text (a header value cannot hold control characters).
fn any_content_type() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        Just("application/x-www-form-urlencoded".to_string()),
        Just("application/json".to_string()),
        Just("Application/JSON; charset=utf-8".to_string()),
        "[ -~]{0,40}",
    ])
}

#[test]
fn any_create_over_http_is_accepted_or_refused_with_a_4xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = rt.block_on(common::in_process::start(common::in_process::DEFAULT));
    let mut runner = TestRunner::new(Config::with_cases(128));
    let result = runner.run(&(any_content_type(), any_body()), |(ct, body)| {
        let mut req = d
            .http
            .post(d.url("/api/container/create"))
            .body(body.clone());
        if let Some(ct) = &ct {
            req = req.header("content-type", ct.as_str());
        }
        let (status, answer) = rt.block_on(d.send(req));
        prop_assert!(
            status.is_success() || status.is_client_error(),
            "{status} for {ct:?} {:?}: {answer}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    });
    rt.block_on(d.stop());
    result.unwrap();
}
