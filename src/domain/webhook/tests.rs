use super::*;
use proptest::prelude::*;

const SECRET: &[u8] = b"shpss_0123456789abcdef";
const WALLET: &str = "0x00000000000000000000000000000000000000aa";

fn order_event(platform: Platform, topic: Option<&str>, body: Value) -> WebhookEvent {
    parse_event(platform, topic, body.to_string().as_bytes()).unwrap()
}

fn order(event: WebhookEvent) -> Order {
    match event {
        WebhookEvent::Order(order) => order,
        other => panic!("not an order: {other:?}"),
    }
}

#[test]
fn each_platform_signs_in_its_own_header_and_encoding() {
    let body = br#"{"id":1}"#;
    for platform in Platform::ALL {
        let header = sign(platform, SECRET, body);
        assert_eq!(
            verify(platform, Some(header.as_bytes()), body, &[SECRET]),
            Ok(())
        );
        assert_eq!(
            verify(platform, Some(header.as_bytes()), b"{\"id\":2}", &[SECRET]),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                platform,
                Some(header.as_bytes()),
                body,
                &[b"another secret"]
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(platform, None, body, &[SECRET]),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(platform, Some(b"not a signature"), body, &[SECRET]),
            Err(SignatureError::Malformed)
        );
    }
    let custom = sign(Platform::Custom, SECRET, body);
    assert!(
        custom.starts_with("sha256=") && custom.len() == 7 + 64,
        "{custom}"
    );
    // The hex of the custom header may be upper case.
    let upper = format!("sha256={}", custom[7..].to_ascii_uppercase());
    assert_eq!(
        verify(Platform::Custom, Some(upper.as_bytes()), body, &[SECRET]),
        Ok(())
    );
    // A base64 signature in the custom header, or hex in Shopify's, is malformed.
    let shopify = sign(Platform::Shopify, SECRET, body);
    assert_eq!(
        verify(Platform::Custom, Some(shopify.as_bytes()), body, &[SECRET]),
        Err(SignatureError::Malformed)
    );
    assert_eq!(
        verify(
            Platform::Shopify,
            Some(&custom.as_bytes()[7..]),
            body,
            &[SECRET]
        ),
        Err(SignatureError::Malformed)
    );
}

#[test]
fn rotation_keeps_the_previous_secret_for_the_grace_period() {
    let now = Utc::now();
    let first = WebhookConfig::rotate(
        None,
        Platform::Custom,
        Secret::new("a".repeat(16)),
        now,
        3600,
    );
    assert_eq!(first.previous_secret, None);
    assert_eq!(first.secrets_at(now).len(), 1);

    let second = WebhookConfig::rotate(
        Some(&first),
        Platform::Custom,
        Secret::new("b".repeat(16)),
        now,
        3600,
    );
    assert_eq!(
        second.secrets_at(now),
        vec![&b"bbbbbbbbbbbbbbbb"[..], &b"aaaaaaaaaaaaaaaa"[..]]
    );
    let later = now + chrono::Duration::seconds(3600);
    assert_eq!(second.secrets_at(later), vec![&b"bbbbbbbbbbbbbbbb"[..]]);
    // The same secret set again a minute later, with another platform: the
    // previous one keeps its grace, which does not start over.
    let minute = now + chrono::Duration::seconds(60);
    let again = WebhookConfig::rotate(
        Some(&second),
        Platform::Shopify,
        Secret::new("b".repeat(16)),
        minute,
        3600,
    );
    assert_eq!(again.platform, Platform::Shopify);
    assert_eq!(again.secrets_at(minute), second.secrets_at(minute));
    assert_eq!(again.previous_valid_until, second.previous_valid_until);

    // No grace: the old secret stops at once.
    let third = WebhookConfig::rotate(
        Some(&second),
        Platform::Custom,
        Secret::new("c".repeat(16)),
        now,
        0,
    );
    assert_eq!(third.secrets_at(now).len(), 1);

    // The stored form keeps the secrets; Debug does not show them.
    let restored = WebhookConfig::from_stored(&second.to_stored()).unwrap();
    assert_eq!(restored, second);
    assert!(!format!("{second:?}").contains("bbbb"));
    assert_eq!(
        WebhookConfig::from_stored(&json!({"platform": "ftp"})),
        None
    );
}

#[test]
fn secrets_are_long_printable_and_generated_at_random() {
    assert!(validate_secret("short").is_err());
    assert!(validate_secret(&"x".repeat(16)).is_ok());
    assert!(validate_secret(&format!("{} y", "x".repeat(16))).is_err());
    assert_ne!(generate_secret(), generate_secret());
    assert!(validate_secret(generate_secret().expose()).is_ok());
}

#[test]
fn shopify_orders_map_by_financial_status_and_topic() {
    let base = json!({"id": 820982911946154508u64, "financial_status": "paid", "total_price": "12.90",
        "currency": "EUR", "cancelled_at": null,
        "note_attributes": [{"name": "gift", "value": "no"}, {"name": "Wallet", "value": WALLET}]});
    let paid = order(order_event(
        Platform::Shopify,
        Some("orders/paid"),
        base.clone(),
    ));
    assert_eq!(paid.id, "820982911946154508");
    assert_eq!(paid.outcome, OrderOutcome::Paid);
    assert_eq!(paid.wallet, Some(parse_account(WALLET).unwrap()));
    assert_eq!(paid.amount.as_deref(), Some("12.90"));

    let mut refunded = base.clone();
    refunded["financial_status"] = json!("refunded");
    let event = order(order_event(
        Platform::Shopify,
        Some("orders/updated"),
        refunded,
    ));
    assert_eq!(event.outcome, OrderOutcome::Refunded);

    let cancelled = order(order_event(
        Platform::Shopify,
        Some("orders/cancelled"),
        base.clone(),
    ));
    assert_eq!(cancelled.outcome, OrderOutcome::Refunded);

    let mut pending = base.clone();
    pending["financial_status"] = json!("pending");
    assert!(matches!(
        order_event(Platform::Shopify, Some("orders/create"), pending),
        WebhookEvent::Ignored(_)
    ));
    assert!(matches!(
        order_event(Platform::Shopify, Some("products/update"), json!({"id": 1})),
        WebhookEvent::Ignored(_)
    ));

    for bad in [
        "not-an-address",
        "0x0000000000000000000000000000000000000000",
    ] {
        let mut no_wallet = base.clone();
        no_wallet["note_attributes"] = json!([{"name": "wallet", "value": bad}]);
        let event = order(order_event(Platform::Shopify, None, no_wallet));
        assert_eq!(event.wallet, None);
        assert_eq!(event.invalid_wallet.as_deref(), Some(bad));
    }
}

#[test]
fn woocommerce_orders_map_by_status() {
    let base = json!({"id": 727, "status": "processing", "total": "29.35", "currency": "USD",
        "meta_data": [{"id": 1, "key": "wallet", "value": WALLET}]});
    let paid = order(order_event(
        Platform::Woocommerce,
        Some("order.updated"),
        base.clone(),
    ));
    assert_eq!(
        (paid.id.as_str(), paid.outcome),
        ("727", OrderOutcome::Paid)
    );
    assert!(paid.wallet.is_some());
    for (status, outcome) in [
        ("completed", Some(OrderOutcome::Paid)),
        ("refunded", Some(OrderOutcome::Refunded)),
        ("cancelled", Some(OrderOutcome::Refunded)),
        ("on-hold", None),
        ("failed", None),
    ] {
        let mut body = base.clone();
        body["status"] = json!(status);
        match (order_event(Platform::Woocommerce, None, body), outcome) {
            (WebhookEvent::Order(o), Some(expected)) => assert_eq!(o.outcome, expected),
            (WebhookEvent::Ignored(_), None) => {}
            (other, _) => panic!("{status}: {other:?}"),
        }
    }
    assert!(matches!(
        order_event(Platform::Woocommerce, Some("order.deleted"), base),
        WebhookEvent::Ignored(_)
    ));
}

#[test]
fn custom_orders_are_strict() {
    let ok = json!({"id": "A-1", "status": "paid", "wallet": WALLET, "amount": "12.90", "currency": "EUR",
        "items": [{"sku": "x", "qty": 1}]});
    let paid = order(order_event(Platform::Custom, None, ok.clone()));
    let interaction = paid.interaction(B256::repeat_byte(1)).unwrap();
    assert_eq!(interaction.kind, InteractionType::PurchaseCompleted);
    assert_eq!(interaction.data["order_id"], "A-1");
    assert_eq!(interaction.data["items"][0]["sku"], "x");
    assert_eq!(
        interaction.natural_key(None).as_deref(),
        Some("purchase.completed:A-1")
    );

    for (field, change) in [
        ("id", json!({"id": 5})),
        ("status", json!({"status": "shipped"})),
        ("amount", json!({"amount": "12,90"})),
        ("amount", json!({"amount": 12.9})),
        ("currency", json!({"currency": ""})),
        ("items", json!({"items": "x"})),
        ("wallet", json!({"wallet": 7})),
        ("body", json!({"colour": "red"})),
    ] {
        let mut body = ok.clone();
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        let errors = parse_event(Platform::Custom, None, body.to_string().as_bytes()).unwrap_err();
        assert_eq!(errors[0].field, field, "{body}");
    }
    let refund = order(order_event(
        Platform::Custom,
        None,
        json!({"id": "A-1", "status": "cancelled", "amount": "1", "currency": "EUR"}),
    ));
    assert_eq!(refund.outcome, OrderOutcome::Refunded);
    assert_eq!(refund.wallet, None);
    assert_eq!(
        refund.interaction(B256::ZERO).unwrap().kind,
        InteractionType::PurchaseRefunded
    );
    for body in [&b"[]"[..], b"nope", b"", b"{\"id\":"] {
        assert_eq!(
            parse_event(Platform::Custom, None, body).unwrap_err()[0].field,
            "body"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Any bytes, any platform, any topic: an event or named field errors, no panic.
    #[test]
    fn any_body_parses_or_names_a_field(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        platform in 0usize..3,
        topic in proptest::option::of("[a-z./]{0,20}"),
    ) {
        let platform = Platform::ALL[platform];
        match parse_event(platform, topic.as_deref(), &body) {
            Ok(WebhookEvent::Order(order)) => {
                let _ = order.interaction(B256::ZERO);
            }
            Ok(WebhookEvent::Ignored(reason)) => prop_assert!(!reason.is_empty()),
            Err(errors) => prop_assert!(!errors.is_empty()),
        }
    }

    /// Structured orders with random field values never panic either.
    #[test]
    fn random_orders_never_panic(
        id in prop_oneof![any::<u64>().prop_map(|n| json!(n)), ".{0,300}".prop_map(|s| json!(s)), Just(json!(null))],
        status in prop_oneof![Just("paid"), Just("refunded"), Just("completed"), Just("processing"), Just("x")],
        wallet in ".{0,50}",
        amount in ".{0,20}",
    ) {
        let bodies = [
            json!({"id": id, "financial_status": status, "note_attributes": [{"name": "wallet", "value": wallet}], "total_price": amount}),
            json!({"id": id, "status": status, "meta_data": [{"key": "wallet", "value": wallet}], "total": amount}),
            json!({"id": id, "status": status, "wallet": wallet, "amount": amount, "currency": "EUR"}),
        ];
        for (platform, body) in Platform::ALL.into_iter().zip(bodies) {
            let _ = parse_event(platform, None, body.to_string().as_bytes());
        }
    }

    /// One flipped bit anywhere in the body or the signature is refused.
    #[test]
    fn a_flipped_bit_is_refused(
        body in proptest::collection::vec(any::<u8>(), 1..256),
        platform in 0usize..3,
        bit in any::<usize>(),
        in_signature in any::<bool>(),
    ) {
        let platform = Platform::ALL[platform];
        let header = sign(platform, SECRET, &body);
        let mut body2 = body.clone();
        let mut digest = match platform {
            Platform::Custom => hex::decode(&header[7..]).unwrap(),
            _ => base64::engine::general_purpose::STANDARD.decode(&header).unwrap(),
        };
        if in_signature {
            let i = bit % (digest.len() * 8);
            digest[i / 8] ^= 1 << (i % 8);
        } else {
            let i = bit % (body2.len() * 8);
            body2[i / 8] ^= 1 << (i % 8);
        }
        let header2 = match platform {
            Platform::Custom => format!("sha256={}", hex::encode(&digest)),
            _ => base64::engine::general_purpose::STANDARD.encode(&digest),
        };
        prop_assert_eq!(
            verify(platform, Some(header2.as_bytes()), &body2, &[SECRET]),
            Err(SignatureError::Mismatch)
        );
    }
}
